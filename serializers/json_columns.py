"""The `json` format's messages built column by column: each row change's value (exactly the bytes
`orjson.dumps(record)` gives for its `TableRows.records` dict, the documented JSON form), its message key
(`{"<key column>": value, ...}`) and its position header, for a whole run at once.

Every leaf column is turned into its JSON texts in one pass (numbers, booleans and nulls: one `orjson.dumps`
of the column's list, split at its commas; any other type: `orjson.dumps` of each value, with the same
`default` as the per-row path), and the texts are joined into messages by Arrow
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

from dbus_ray.model import TableRows, json_default

_NULL = pa.scalar(b"null", pa.binary())
_EMPTY = pa.scalar(b"", pa.binary())


class Messages(NamedTuple):
    values: list[bytes]
    keys: list[bytes | None]
    positions: list[bytes]  # each row's `pos` object, the text of its `position` header


def _split(values: list[Any]) -> list[bytes]:
    """The JSON text of each value of a list of numbers, booleans and None: one encode, split at the commas
    (none of those texts holds one)."""
    return orjson.dumps(values)[1:-1].split(b",") if values else []


def _is_plain(kind: pa.DataType) -> bool:
    return pa.types.is_boolean(kind) or pa.types.is_float64(kind) or pa.types.is_null(kind)


def _needs_escape(column: pa.Array) -> bool:
    """A value of the string column holds a byte JSON escapes (a control character, `"`, `\\`)."""
    validity, offsets, data = column.buffers()
    if data is None or not len(column):
        return False
    at = np.frombuffer(offsets, np.int32, len(column) + 1, column.offset * 4)
    text = np.frombuffer(data, np.uint8, int(at[-1] - at[0]), int(at[0]))
    return bool((text < 0x20).any() or (text == 0x22).any() or (text == 0x5C).any())


def _or_null(texts: pa.Array) -> pa.Array:
    return texts if texts.null_count == 0 else pc.fill_null(texts, _NULL)


def texts(column: pa.Array) -> pa.Array:
    """The JSON text of each value of `column` (a binary array, never null: a null is `null`), the same
    text the value has in its row's `orjson.dumps` (FLOAT as its shortest float32 decimal, as
    `TableRows.records` gives it)."""
    kind = column.type
    if pa.types.is_integer(kind):  # Arrow's decimal text of an integer is JSON's
        return _or_null(column.cast(pa.string()).cast(pa.binary()))
    if pa.types.is_string(kind):
        if len(column) > 64:  # few distinct values (op, file, GTID): each encoded once
            coded = pc.dictionary_encode(column, null_encoding="encode")
            if len(coded.dictionary) * 4 < len(column):
                return texts(coded.dictionary).take(coded.indices)
        if not _needs_escape(column):  # the UTF-8 text between quotes, as orjson writes it
            return _or_null(_join(b'"', column.cast(pa.binary()), b'"'))
    values = column.to_pylist()
    if pa.types.is_float32(kind):
        values = [None if v is None else float(str(np.float32(v))) for v in values]
        out = _split(values)
    elif _is_plain(kind):
        out = _split(values)
    else:
        out = [orjson.dumps(v, default=json_default) for v in values]
    return pa.array(out, pa.binary())


def _join(*parts: Any) -> pa.Array:
    """Parts (arrays of texts and constant bytes) joined row by row."""
    return pc.binary_join_element_wise(*[p if isinstance(p, pa.Array) else pa.scalar(p, pa.binary())
                                         for p in parts], _EMPTY)


def _object(names: list[str], columns: list[pa.Array], n: int) -> pa.Array:
    """`{"name":text,...}` per row from the columns' texts."""
    if not columns:
        return pa.array([b"{}"] * n, pa.binary())
    parts: list[Any] = []
    for i, (name, column) in enumerate(zip(names, columns)):
        parts += [("{" if i == 0 else ",").encode() + orjson.dumps(name) + b":", column]
    parts.append(b"}")
    return _join(*parts)


def _field_texts(image: pa.Array, n: int) -> dict[str, pa.Array] | None:
    """The texts of each column of an image column, by name (None: no row has the image)."""
    if not isinstance(image, pa.StructArray) or image.null_count == n:
        return None
    return {f.name: texts(image.field(i)) for i, f in enumerate(image.type)}


def _image(image: pa.Array, fields: dict[str, pa.Array] | None, n: int) -> pa.Array:
    """Each row's image as its JSON object from its columns' texts, `null` where the row has no image (an
    insert's before)."""
    if fields is None:
        return pa.array([b"null"] * n, pa.binary())
    objects = _object(list(fields), list(fields.values()), n)
    return objects if image.null_count == 0 else pc.if_else(image.is_valid(), objects, _NULL)


def _key(rows: TableRows, before: pa.Array, after: pa.Array, texts_before: dict[str, pa.Array] | None,
         texts_after: dict[str, pa.Array] | None, n: int) -> pa.Array:
    """`{"k":value,...}` of each row: the key columns of its after image, or of its before image when it has
    none (a delete), as `TableRows.records` takes them (`null` for a column that image lacks)."""
    nulls = pa.array([b"null"] * n, pa.binary())
    columns = []
    for name in rows.key:
        of_before = pc.if_else(before.is_valid(), (texts_before or {}).get(name, nulls), _NULL)
        columns.append(pc.if_else(after.is_valid(), (texts_after or {}).get(name, nulls), of_before))
    return _object(list(rows.key), columns, n)


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
    position = _join(b'{"file":', texts(col("file")), b',"offset":', texts(col("offset")), b',"gtid":',
                     texts(col("gtid")), b',"index":', texts(col("index")), b"}")
    head = (b'{"pipeline":' + orjson.dumps(pipeline) + b',"db":' + orjson.dumps(rows.db) + b',"table":'
            + orjson.dumps(rows.table) + b',"op":')
    texts_before, texts_after = _field_texts(before, n), _field_texts(after, n)  # each column's texts once
    key = _key(rows, before, after, texts_before, texts_after, n)
    value = _join(head, texts(col("op")), b',"key":', key, b',"before":', _image(before, texts_before, n),
                  b',"after":', _image(after, texts_after, n), b',"pos":', position, b',"txid":',
                  texts(col("txid")), b',"ts":', texts(col("ts")), b',"read_ts":', texts(col("read_ts")), b"}")
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
