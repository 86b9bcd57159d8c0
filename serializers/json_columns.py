"""The `json` format's messages built column by column: each row change's value (exactly the bytes
`orjson.dumps(record)` gives for its `TableRows.records` dict, the documented JSON form), its message key
(`{"<key column>": value, ...}`) and its position header, for a whole run at once.

Every leaf column is turned into its JSON texts in one pass (numbers, booleans and nulls: one `orjson.dumps`
of the column's list, split at its commas; strings: their UTF-8 between quotes, each byte JSON escapes
replaced column-wise; any other type: `orjson.dumps` of each value, with the same `default` as the per-row
path), and the texts are joined into messages by Arrow
(`binary_join_element_wise`). No dict is built per row: the Kafka writer's per-row work is the producer call.

`messages(rows, pipeline)` returns None for a run this does not build (a run with an `absent` column, as
binlog_row_metadata MINIMAL gives, and a run of fewer than `MIN_ROWS` rows): the caller takes the per-row
path.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from dbus_ray.model import TableRows, json_default, shortest_float32

_NULL = pa.scalar(b"null", pa.binary())
_EMPTY = pa.scalar(b"", pa.binary())


class Messages(NamedTuple):
    values: list[bytes]
    keys: list[bytes | None]
    positions: list[bytes]  # each row's `pos` object, the text of its `position` header


def split_texts(values: list[Any]) -> list[bytes]:
    """The JSON text of each value of a list of numbers, booleans and None: one encode, split at the commas
    (none of those texts holds one)."""
    return orjson.dumps(values)[1:-1].split(b",") if values else []


def _is_plain(kind: pa.DataType) -> bool:
    return pa.types.is_boolean(kind) or pa.types.is_float64(kind) or pa.types.is_null(kind)


#: each byte a JSON string escapes and its escape, as orjson writes it (`\\` first: the others' escapes hold one)
_ESCAPES = [(b"\\", b"\\\\"), (b'"', b'\\"')] + [(bytes([c]), orjson.dumps(chr(c))[1:-1]) for c in range(0x20)]


def _escaped(column: pa.Array) -> pa.Array:
    """The string column's values as the UTF-8 text orjson writes between a string's quotes: each byte that
    JSON escapes (a control character, `"`, `\\`) replaced by its escape, one pass per byte that occurs."""
    out = column.cast(pa.binary())
    _validity, offsets, data = column.buffers()
    if data is None or not len(column):
        return out
    at = np.frombuffer(offsets, np.int32, len(column) + 1, column.offset * 4)
    text = np.frombuffer(data, np.uint8, int(at[-1] - at[0]), int(at[0]))
    special = text[(text < 0x20) | (text == 0x22) | (text == 0x5C)]
    if not len(special):
        return out
    counts = np.bincount(special, minlength=256)
    for byte, escape in _ESCAPES:
        if counts[byte[0]]:
            out = pc.replace_substring(out, byte, escape)
    return out


def _or_null(texts: pa.Array) -> pa.Array:
    return texts if texts.null_count == 0 else pc.fill_null(texts, _NULL)


def texts(column: pa.Array, repeats: bool = False) -> pa.Array:
    """The JSON text of each value of `column` (a binary array, never null: a null is `null`), the same
    text the value has in its row's `orjson.dumps` (FLOAT as its shortest float32 decimal, as
    `TableRows.records` gives it). `repeats`: a string column of few distinct values (op, file, GTID), each
    value's text made once."""
    kind = column.type
    if pa.types.is_integer(kind):  # Arrow's decimal text of an integer is JSON's
        return _or_null(column.cast(pa.string()).cast(pa.binary()))
    if pa.types.is_string(kind):
        if repeats and len(column) > 64:
            coded = pc.dictionary_encode(column, null_encoding="encode")
            if len(coded.dictionary) * 4 < len(column):
                return texts(coded.dictionary).take(coded.indices)
        return _or_null(join(b'"', _escaped(column), b'"'))
    values = column.to_pylist()
    if pa.types.is_float32(kind):
        values = [None if v is None else shortest_float32(v) for v in values]
        out = split_texts(values)
    elif _is_plain(kind):
        out = split_texts(values)
    else:
        out = [orjson.dumps(v, default=json_default) for v in values]
    return pa.array(out, pa.binary())


def join(*parts: Any) -> pa.Array:
    """Parts (arrays of texts and constant bytes) joined row by row; adjacent constants go as one."""
    args: list[Any] = []
    for part in parts:
        if isinstance(part, bytes) and args and isinstance(args[-1], bytes):
            args[-1] += part
        else:
            args.append(part)
    return pc.binary_join_element_wise(*[p if isinstance(p, pa.Array) else pa.scalar(p, pa.binary())
                                         for p in args], _EMPTY)


def members(names: list[str], columns: list[Any]) -> list[Any]:
    """The parts of `{"name":text,...}` (to join) from the columns' texts (arrays, or constant bytes)."""
    if not columns:
        return [b"{}"]
    parts: list[Any] = []
    for i, (name, column) in enumerate(zip(names, columns)):
        parts += [("{" if i == 0 else ",").encode() + orjson.dumps(name) + b":", column]
    parts.append(b"}")
    return parts


def _field_texts(image: pa.Array, n: int) -> dict[str, pa.Array] | None:
    """The texts of each column of an image column, by name (None: no row has the image)."""
    if not isinstance(image, pa.StructArray) or image.null_count == n:
        return None
    return {f.name: texts(image.field(i)) for i, f in enumerate(image.type)}


def image_parts(image: pa.Array, fields: dict[str, pa.Array] | None) -> list[Any]:
    """The parts of each row's image as its JSON object from its columns' texts, `null` where the row has no
    image (an insert's before)."""
    if fields is None:
        return [b"null"]
    parts = members(list(fields), list(fields.values()))
    return parts if image.null_count == 0 else [pc.if_else(image.is_valid(), join(*parts), _NULL)]


def _key(rows: TableRows, before: pa.Array, after: pa.Array, texts_before: dict[str, pa.Array] | None,
         texts_after: dict[str, pa.Array] | None, n: int) -> pa.Array:
    """`{"k":value,...}` of each row: the key columns of its after image, or of its before image when it has
    none (a delete), as `TableRows.records` takes them (`null` for a column that image lacks)."""
    def of(fields: dict[str, pa.Array] | None, name: str) -> Any:
        column = (fields or {}).get(name)
        return b"null" if column is None else column

    if after.null_count == 0:  # inserts, updates
        columns = [of(texts_after, name) for name in rows.key]
    elif after.null_count == n and before.null_count == 0:  # deletes
        columns = [of(texts_before, name) for name in rows.key]
    else:
        def array(text: Any) -> Any:
            return text if isinstance(text, pa.Array) else _NULL

        columns = [pc.if_else(after.is_valid(), array(of(texts_after, name)),
                              pc.if_else(before.is_valid(), array(of(texts_before, name)), _NULL))
                   for name in rows.key]
    parts = members(list(rows.key), columns)
    if not any(isinstance(p, pa.Array) for p in parts):  # no key, or no key column in the images: one text
        return pa.array([b"".join(parts)] * n, pa.binary())
    return join(*parts)


#: Rows the Kafka sink turns into messages at a time on this path (no dict per row: more than its per-row
#: path's `SLICE_ROWS`, as Arrow's cost per call is spread over more rows)
SLICE_ROWS = 8192

#: A run of fewer rows takes the per-row path: Arrow's cost per call would be more than the rows' (small
#: batches: one-row transactions delivered as they commit)
MIN_ROWS = 64


def messages(rows: TableRows, pipeline: str) -> Messages | None:
    data = rows.data
    if data.schema.get_field_index("absent") >= 0 or data.num_rows < MIN_ROWS:
        return None
    n = data.num_rows
    if n == 0:
        return Messages([], [], [])
    col = data.column
    before, after = col("before"), col("after")
    position = join(b'{"file":', texts(col("file"), True), b',"offset":', texts(col("offset")), b',"gtid":',
                     texts(col("gtid"), True), b',"index":', texts(col("index")), b"}")
    head = (b'{"pipeline":' + orjson.dumps(pipeline) + b',"db":' + orjson.dumps(rows.db) + b',"table":'
            + orjson.dumps(rows.table) + b',"op":')
    texts_before, texts_after = _field_texts(before, n), _field_texts(after, n)  # each column's texts once
    key = _key(rows, before, after, texts_before, texts_after, n)
    value = join(head, texts(col("op"), True), b',"key":', key, b',"before":', *image_parts(before, texts_before),
                  b',"after":', *image_parts(after, texts_after), b',"pos":', position, b',"txid":',
                  texts(col("txid"), True), b',"ts":', texts(col("ts")), b',"read_ts":', texts(col("read_ts")), b"}")
    keys = key.to_pylist() if rows.key else [None] * n  # a table without a key: a null message key
    return Messages(value.to_pylist(), keys, position.to_pylist())


def produce_json(sink: Any, topic: str, part: TableRows) -> int | None:
    """Produce a run's messages (`format: json`, the default message key, no tombstones) with `sink`'s
    producer, as its per-row path would; None, producing nothing, for a run `messages` does not build.
    A message the producer refuses (full queue, oversize) goes `sink._produce`'s way."""
    built = messages(part, sink.pipeline)
    if built is None:
        return None
    from confluent_kafka import KafkaException

    produce, name = sink.producer.produce, part.name
    db, table = ("db", part.db.encode()), ("table", part.table.encode())
    ops = {op: ("op", op.encode()) for op in part.data.column("op").unique().to_pylist()}
    produced = 0
    for op, value, key, position in zip(part.data.column("op").to_pylist(), *built):
        headers = [ops[op], db, table, ("position", position)]
        try:
            produce(topic, value, key, headers=headers)
            produced += 1
        except (BufferError, KafkaException):  # a full queue or a refused row: retried or handled there
            sink._produce(topic, value, key, headers, position.decode(), name)
    sink.produced += produced
    return len(built.values)
