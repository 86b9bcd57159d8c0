"""The `debezium` format's messages of a streamed run built column by column (`DebeziumSerializer.messages`
takes this way first): the same bytes as the per-row path writes for each message, without a dict per row.

Every image column is turned into its JSON texts once: a column Debezium maps unchanged by Arrow, as the
`json` format does (`serializers/json_columns.py`); a DECIMAL of up to 18 digits (`precise`) from Arrow's
unscaled integers by numpy, a DATETIME by Arrow's ISO 8601 parser (a column with a zero date or year 0: value
by value); any other column Debezium converts (TIMESTAMP, DATE, BIT, ...) by its converter per value. The
source block's fields come from the run's position columns, Arrow joins the texts into each message's key
and payload (`binary_join_element_wise`), and the table's schemas, written once per table, are put around
them.

A snapshot's run (`read` rows only) is built the same way, `snapshot` "true" (its table's first row
"first" or "first_in_data_collection"), `row` 0. `messages` returns None, building nothing, for a run this
does not build; the per-row path takes it: a run of fewer than `json_columns.MIN_ROWS` rows, a run that ends
a table's snapshot (`last_read`: its last row's mark), markers (`ddl`), `read` rows among others, a run with
an `absent` column (`DebeziumSerializer.messages` refuses one whose images do leave columns out before this),
an update that changes the key (a delete, its tombstone and a create), and any run with
`provide_transaction_metadata` (its BEGIN/END messages)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dbus_ray import __version__
from dbus_ray.model import TableRows, dumpb, shortest_float32
from dbus_ray.serializers.debezium_values import server_id
from dbus_ray.serializers.json_columns import MIN_ROWS, image_parts, join, members, split_texts, texts

if TYPE_CHECKING:
    from dbus_ray.serializers.debezium import DebeziumSerializer, _Table
    from dbus_ray.serializers.debezium_values import Column

#: the ops of a streamed run, as Debezium's `op` texts
_OPS = {"insert": (b'"c"', "c"), "update": (b'"u"', "u"), "delete": (b'"d"', "d"), "read": (b'"r"', "r")}


def messages(ser: DebeziumSerializer, rows: TableRows) -> list[tuple[bytes | None, bytes | None, None, str]] | None:
    """`(key, value, None, op)` of every message of the run, with a tombstone after each delete unless
    `tombstones_on_delete` is off; None for a run this does not build (the module's docstring says which)."""
    data, n = rows.data, rows.num_rows
    o = ser.o
    if n < MIN_ROWS or o.provide_transaction_metadata or data.schema.get_field_index("absent") >= 0 \
            or not pa.types.is_struct(data.schema.field("after").type) or data.column("ts").null_count:
        return None
    col = data.column
    ops = col("op").to_pylist()
    kinds = set(ops)
    snapshot = "read" in kinds
    if not kinds <= _OPS.keys() or snapshot and len(kinds) > 1 or _key_change_halves(ops, data):
        return None
    t = ser.table(rows)
    before, after = col("before"), col("after")
    texts_before, texts_after = _image_texts(t, before, n, snapshot), _image_texts(t, after, n, snapshot)
    keys = _keys(t, after, texts_before, texts_after, ops, n, o.schemas_enable)
    if keys is False:
        return None
    files, offsets = col("file").to_pylist(), col("offset").to_pylist()
    marks = _snapshot_marks(ser, rows.name, n) if snapshot else b'"false"'
    ts_us = (np.asarray(col("ts")) * 1_000_000).astype(np.int64)  # int(ts * 1e6) of each row, as `_source`
    now = time.time_ns()
    payload = [
        b'{"before":', *image_parts(before, texts_before), b',"after":', *image_parts(after, texts_after),
        b',"source":{"version":' + dumpb(f"dbus-ray-{__version__}") + b',"connector":' + dumpb(o.connector)
        + b',"name":' + dumpb(ser._prefix) + b',"ts_ms":', texts(pa.array(ts_us // 1000)),
        b',"snapshot":', marks, b',"db":' + dumpb(rows.db) + b',"sequence":null,"ts_us":', texts(pa.array(ts_us)),
        b',"ts_ns":', texts(pa.array(ts_us * 1000)), b',"table":' + dumpb(rows.table) + b',"server_id":',
        pa.array(split_texts([server_id(g) for g in col("gtid").to_pylist()]), pa.binary()),
        b',"gtid":', texts(col("gtid"), True), b',"file":', texts(col("file"), True), b',"pos":',
        texts(col("offset")), b',"row":',
        pa.array(split_texts([ser.row_of(at, snapshot) for at in zip(files, offsets)]), pa.binary()),
        b',"thread":null,"query":null},"transaction":null,"op":', pa.array([_OPS[op][0] for op in ops], pa.binary()),
        b',"ts_ms":' + str(now // 1_000_000).encode() + b',"ts_us":' + str(now // 1000).encode()
        + b',"ts_ns":' + str(now).encode() + b"}",
    ]
    values = join(*payload).to_pylist()
    if o.schemas_enable:  # the schema's bytes added here: less than Arrow writing them into each row's text
        head = b'{"schema":' + t.value_schema_json + b',"payload":'
        values = [head + v + b"}" for v in values]
    out: list[tuple[bytes | None, bytes | None, None, str]] = []
    tombstones = o.tombstones_on_delete
    for op, key, value in zip(ops, keys, values):
        letter = _OPS[op][1]
        out.append((key, value, None, letter))
        if letter == "d" and tombstones:
            out.append((key, None, None, "tombstone"))
    return out


def _image_texts(t: _Table, image: pa.Array, n: int, snapshot: bool) -> dict[str, pa.Array] | None:
    """Each column's JSON texts of an image column as Debezium writes its values, by name (None: no row has
    the image)."""
    if image.null_count == n:
        return None
    return {c.name: _column_texts(c, image.field(i), snapshot) for i, c in enumerate(t.columns)}


def _column_texts(c: Column, column: pa.Array, snapshot: bool) -> pa.Array:
    if c.convert is None:  # as the row's JSON form has it
        return texts(column)
    kind = column.type
    if c.schema.get("name") == _DECIMAL and pa.types.is_decimal128(kind) and kind.precision <= 18 \
            and int(c.schema["parameters"]["scale"]) == kind.scale:
        return _unscaled_texts(column)
    unit = _EPOCH_UNITS.get(c.schema.get("name"))
    if unit is not None and pa.types.is_string(kind):
        epoch = _epoch_texts(column, unit)
        if epoch is not None:
            return epoch
    values = column.to_pylist()
    if pa.types.is_float32(kind):  # as `TableRows.records` gives the converter a FLOAT
        values = [None if v is None else shortest_float32(v) for v in values]
    payload = c.payload
    out = [payload(v, snapshot) for v in values]
    if all(v is None or type(v) is int for v in out):
        return pa.array(split_texts(out), pa.binary())
    return pa.array([dumpb(v) for v in out], pa.binary())


_DECIMAL = "org.apache.kafka.connect.data.Decimal"
_B64 = np.frombuffer(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", np.uint8)
_QUOTE, _PAD, _NULL = ord('"'), ord("="), np.frombuffer(b"null", np.uint8)


def _unscaled_texts(column: pa.Array) -> pa.Array:
    """The JSON texts of a DECIMAL column of at most 18 digits as Kafka Connect's Decimal (`_unscaled`, then
    base64): each value's unscaled integer, which is Arrow's storage (its low 64 bits: the high ones only
    repeat the sign at 18 digits), big-endian two's complement in the fewest bytes, base64 between quotes;
    `null` for a null. Rows of one byte length at a time."""
    n = len(column)
    words = np.frombuffer(column.buffers()[1], np.int64, 2 * (column.offset + n))[2 * column.offset::2]
    magnitude = np.where(words < 0, ~words, words)  # a size of k bytes holds -2^(8k-1) .. 2^(8k-1) - 1
    size = 1 + sum((magnitude >= 1 << (8 * k - 1)).astype(np.int64) for k in range(1, 8))
    big = words.astype(">i8").view(np.uint8).reshape(n, 8)
    valid = np.ones(n, bool) if column.null_count == 0 else column.is_valid().to_numpy(zero_copy_only=False)
    width = np.where(valid, 2 + 4 * ((size + 2) // 3), 4)
    offsets = np.zeros(n + 1, np.int32)
    np.cumsum(width, out=offsets[1:])
    out = np.empty(int(offsets[-1]), np.uint8)
    for length in np.unique(size[valid]).tolist():
        rows = np.flatnonzero(valid & (size == length))
        pad = -length % 3
        chunk = np.zeros((len(rows), length + pad), np.uint32)
        chunk[:, :length] = big[rows, 8 - length:]
        triples = chunk.reshape(len(rows), -1, 3)
        bits = triples[..., 0] << 16 | triples[..., 1] << 8 | triples[..., 2]
        sextets = np.stack([bits >> 18, bits >> 12 & 63, bits >> 6 & 63, bits & 63], axis=-1).reshape(len(rows), -1)
        text = np.empty((len(rows), sextets.shape[1] + 2), np.uint8)
        text[:, 0] = text[:, -1] = _QUOTE
        text[:, 1:-1] = _B64[sextets]
        if pad:
            text[:, -1 - pad:-1] = _PAD
        out[offsets[rows][:, None] + np.arange(text.shape[1])] = text
    nulls = np.flatnonzero(~valid)
    out[offsets[nulls][:, None] + np.arange(4)] = _NULL
    return pa.Array.from_buffers(pa.binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(out)])


#: DATETIME's Debezium types (`debezium_values`: `_epoch_micros`, `_millis`): microseconds per unit
_EPOCH_UNITS = {"io.debezium.time.MicroTimestamp": 1, "io.debezium.time.Timestamp": 1000,
                "org.apache.kafka.connect.data.Timestamp": 1000}


def _epoch_texts(column: pa.Array, unit: int) -> pa.Array | None:
    """The JSON texts of a DATETIME column's ISO texts as Debezium's integers since the epoch (`_epoch_micros`,
    then `// unit`), by Arrow's ISO 8601 parser; None (value by value instead) when a value is one it does not
    read (a zero date, a day past its month's end) or reads where Python's `fromisoformat` does not (year 0)."""
    if pc.any(pc.starts_with(column, "0000")).as_py():
        return None
    try:
        micros = column.cast(pa.timestamp("us")).cast(pa.int64())
    except pa.ArrowInvalid:
        return None
    if unit != 1:  # floor division, as Python's `//` (before 1970 too)
        nulls = micros.is_null().to_numpy(zero_copy_only=False)
        micros = pa.array(pc.fill_null(micros, 0).to_numpy() // unit, mask=nulls if nulls.any() else None)
    return texts(micros)


def _keys(t: _Table, after: pa.Array, texts_before: dict[str, pa.Array] | None,
          texts_after: dict[str, pa.Array] | None, ops: list[str], n: int, schemas: bool
          ) -> list[bytes | None] | bool:
    """Each row's message key (the key columns of its after image, of its before image for a delete), all
    None for a table without a key; False when an update changes its key (the per-row path's)."""
    if not t.key:
        return [None] * n
    names = [c.name for c in t.key]
    if "update" in ops:
        if texts_before is None or texts_after is None:
            return False
        updates = pc.equal(pa.array(ops), "update")
        for name in names:
            same = pc.equal(texts_before[name], texts_after[name])
            if not pc.all(pc.or_(pc.invert(updates), same)).as_py():
                return False
    if "delete" not in ops:
        columns = [texts_after[name] for name in names]  # type: ignore[index]
    elif texts_after is None:  # deletes only
        columns = [texts_before[name] for name in names]  # type: ignore[index]
    else:
        valid = after.is_valid()
        columns = [pc.if_else(valid, texts_after[name], texts_before[name]) for name in names]  # type: ignore[index]
    parts = members(names, columns)
    if schemas:
        parts = [b'{"schema":' + t.key_schema_json + b',"payload":', *parts, b"}"]
    return join(*parts).to_pylist()


#: the position columns two rows share only as the halves of one key-changing update (a row change's `pos` and
#: `txid`, which `debezium.key_change_halves` compares)
HALVES_FIELDS = ("file", "offset", "gtid", "index", "txid")


def _key_change_halves(ops: list[str], data: pa.RecordBatch) -> bool:
    """Whether the run holds the halves of a key-changing update (a delete and an insert at one position, as
    `key_change: delete_insert` gives it: `debezium.key_change_halves`)."""
    pairs = [i for i in range(len(ops) - 1) if ops[i] == "delete" and ops[i + 1] == "insert"]
    if not pairs:
        return False
    fields = [data.column(c).to_pylist() for c in HALVES_FIELDS]
    return any(all(f[i] == f[i + 1] for f in fields) for i in pairs)


def _snapshot_marks(ser: DebeziumSerializer, name: str, n: int) -> pa.Array:
    """`source.snapshot` of each row of a snapshot's run (`snapshot_mark`: only a table's first row differs)."""
    first = ser.snapshot_mark(name)
    return pa.array([dumpb(first)] + [b'"true"'] * (n - 1), pa.binary())
