"""Serializer `debezium` without a database: values, envelopes, tombstones, key changes and options. Expected
values are what Debezium 3.5's MariaDB connector wrote for the same column values (recorded from a run of
tests/peer) or follow from Kafka Connect's documented encodings (Decimal: unscaled big-endian two's
complement; Date: days since the epoch)."""

from __future__ import annotations

import datetime as dt
import decimal
import json
from typing import Any

import pyarrow as pa
import pytest

from dbus_ray.config import ConfigError, Invalid, build
from dbus_ray.model import META_SCHEMA, RowBatch, TableRows
from dbus_ray.mysql import values as bt
from dbus_ray.mysql.column_meta import column_field
from dbus_ray.serializers import get_serializer
from dbus_ray.serializers.debezium import DebeziumOptions, DebeziumSerializer, last_reads
from dbus_ray.sinks.kafka import KafkaOptions

COLUMNS = [
    (bt.ColumnDef("id", bt.LONG, nullable=False), pa.int32()),
    (bt.ColumnDef("d41", bt.NEWDECIMAL, precision=4, scale=1), pa.decimal128(4, 1)),
    (bt.ColumnDef("d10", bt.NEWDECIMAL, precision=10, scale=0), pa.decimal128(10, 0)),
    (bt.ColumnDef("bu", bt.LONGLONG, unsigned=True), pa.uint64()),
    (bt.ColumnDef("b1", bt.BIT, bits=1), pa.binary()),
    (bt.ColumnDef("b10", bt.BIT, bits=10), pa.binary()),
    (bt.ColumnDef("dt_", bt.DATE), pa.string()),
    (bt.ColumnDef("dtt", bt.DATETIME2), pa.string()),
    (bt.ColumnDef("dt6", bt.DATETIME2, fsp=6), pa.string()),
    (bt.ColumnDef("ts", bt.TIMESTAMP2, fsp=6), pa.string()),
    (bt.ColumnDef("tm", bt.TIME2), pa.duration("us")),
    (bt.ColumnDef("y", bt.YEAR), pa.uint16()),
    (bt.ColumnDef("bn", bt.STRING, charset="binary", max_length=4), pa.binary()),
    (bt.ColumnDef("e", bt.ENUM, members=("small", "medium", "large")), pa.string()),
    (bt.ColumnDef("name", bt.VARCHAR, charset="utf-8", max_length=80, nullable=False), pa.string()),
    (bt.ColumnDef("g", bt.GEOMETRY), pa.binary()),
]
IMAGE = pa.struct([column_field(c, t) for c, t in COLUMNS])
ROW = {
    "id": 1, "d41": decimal.Decimal("-999.9"), "d10": decimal.Decimal("-9999999999"), "bu": 2**64 - 1,
    "b1": b"\x01", "b10": b"\x03\xff", "dt_": "1000-01-01", "dtt": "1000-01-01T00:00:00",
    "dt6": "9999-12-31T23:59:59.999999", "ts": "2038-01-19T03:14:07.999999+00:00",
    "tm": dt.timedelta(hours=-838, minutes=-59, seconds=-59), "y": 0, "bn": b"ab", "e": "large", "name": "x",
    "g": bytes(4) + bytes.fromhex("0101000000000000000000f83f00000000000004c0"),
}
#: What Debezium wrote for ROW's values (binlog, default options).
DEBEZIUM_AFTER = {
    "id": 1, "d41": "2PE=", "d10": "/av0HAE=", "bu": -1, "b1": True, "b10": "/wM=", "dt_": -354285,
    "dtt": -30610224000000, "dt6": 253402300799999999, "ts": "2038-01-19T03:14:07.999999Z", "tm": -3020399000000,
    "y": 1900, "bn": "YWIAAA==", "e": "large", "name": "x",
    "g": {"wkb": "AQEAAAAAAAAAAAD4PwAAAAAAAATA", "srid": None},
}


def run(rows: list[tuple[str, dict | None, dict | None]], gtid: str | None = "0-1-7", offset: int = 400,
        db: str = "shop", table: str = "t") -> TableRows:
    n = len(rows)
    arrays = [
        pa.array([op for op, _, _ in rows], pa.string()), pa.array(["binlog.000002"] * n, pa.string()),
        pa.array([offset] * n, pa.int64()), pa.array([gtid] * n, pa.string()), pa.array(range(n), pa.int32()),
        pa.array(["tx1"] * n, pa.string()), pa.array([1_700_000_000.5] * n, pa.float64()),
        pa.array([1_700_000_001.0] * n, pa.float64()),
    ]
    before = pa.array([b for _, b, _ in rows], IMAGE)
    after = pa.array([a for _, _, a in rows], IMAGE)
    schema = META_SCHEMA.append(pa.field("before", IMAGE)).append(pa.field("after", IMAGE))
    return TableRows(db, table, ("id",), pa.RecordBatch.from_arrays([*arrays, before, after], schema=schema))


def marker(what: str) -> TableRows:
    """A snapshot marker row of table shop.t (as the mysql source's snapshot emits it)."""
    marker_type = pa.struct([("snapshot", pa.string()), ("table", pa.string()), ("rows", pa.int64())])
    arrays = [pa.array(["ddl"]), pa.array(["f"]), pa.array([4], pa.int64()), pa.nulls(1, pa.string()),
              pa.array([0], pa.int32()), pa.array(["s"]), pa.array([1.0]), pa.array([1.0])]
    after = pa.array([{"snapshot": what, "table": "shop.t", "rows": None}], marker_type)
    schema = META_SCHEMA.append(pa.field("before", marker_type)).append(pa.field("after", marker_type))
    return TableRows("shop", "t", (), pa.RecordBatch.from_arrays([*arrays, pa.nulls(1, marker_type), after],
                                                                 schema=schema))


def messages(ser: DebeziumSerializer, rows: TableRows, last: Any = None) -> list[tuple[Any, Any, dict, str]]:
    out = []
    for key, value, headers, op in ser.messages(rows, "pipe", None, last):
        out.append((key and json.loads(key), value and json.loads(value),
                    {k: json.loads(v) for k, v in headers or ()}, op))
    return out


def test_values_and_envelope_as_debezium_writes_them() -> None:
    ser = get_serializer("debezium", options=DebeziumOptions(topic_prefix="srv"))
    [(key, value, headers, op)] = messages(ser, run([("insert", None, ROW)]))
    assert op == "c" and headers == {}
    assert key == {"schema": {"type": "struct", "fields": [{"type": "int32", "optional": False, "field": "id"}],
                              "optional": False, "name": "srv.shop.t.Key"}, "payload": {"id": 1}}
    payload = value["payload"]
    assert payload["after"] == DEBEZIUM_AFTER and payload["before"] is None
    assert payload["op"] == "c" and payload["transaction"] is None
    source = payload["source"]
    assert {k: source[k] for k in ("connector", "name", "ts_ms", "snapshot", "db", "table", "server_id", "gtid",
                                   "file", "pos", "row", "thread", "query")} == {
        "connector": "mysql", "name": "srv", "ts_ms": 1_700_000_000_500, "snapshot": "false", "db": "shop",
        "table": "t", "server_id": 1, "gtid": "0-1-7", "file": "binlog.000002", "pos": 400, "row": 0,
        "thread": None, "query": None}
    assert ser.topic("shop", "t") == "srv.shop.t"
    schema = value["schema"]
    assert schema["name"] == "srv.shop.t.Envelope" and schema["version"] == 2
    after = {f["field"]: f for f in schema["fields"][1]["fields"]}
    assert after["d41"] == {"type": "bytes", "name": "org.apache.kafka.connect.data.Decimal", "version": 1,
                            "parameters": {"scale": "1", "connect.decimal.precision": "4"}, "optional": True,
                            "field": "d41"}
    assert after["dt_"]["name"] == "io.debezium.time.Date" and after["dtt"]["name"] == "io.debezium.time.Timestamp"
    assert after["dt6"]["name"] == "io.debezium.time.MicroTimestamp"
    assert after["e"]["parameters"] == {"allowed": "small,medium,large"}
    assert not after["id"]["optional"] and not after["name"]["optional"] and after["e"]["optional"]


def test_without_schema_the_payload_alone() -> None:
    ser = DebeziumSerializer(DebeziumOptions(topic_prefix="srv", schemas_enable=False))
    [(key, value, _, _)] = messages(ser, run([("insert", None, ROW)]))
    assert key == {"id": 1}
    assert set(value) == {"before", "after", "source", "transaction", "op", "ts_ms", "ts_us", "ts_ns"}
    assert value["after"] == DEBEZIUM_AFTER


def test_delete_then_tombstone_and_rows_counted_in_their_event() -> None:
    ser = DebeziumSerializer(DebeziumOptions(topic_prefix="srv", schemas_enable=False))
    other = {**ROW, "id": 2}
    out = messages(ser, run([("delete", ROW, None), ("delete", other, None)]))
    assert [(k, op) for k, _, _, op in out] == [({"id": 1}, "d"), ({"id": 1}, "tombstone"), ({"id": 2}, "d"),
                                               ({"id": 2}, "tombstone")]
    assert [v["source"]["row"] for _, v, _, op in out if op == "d"] == [0, 1]
    assert out[1][1] is None and out[0][1]["before"]["id"] == 1 and out[0][1]["after"] is None
    quiet = DebeziumSerializer(DebeziumOptions(topic_prefix="srv", tombstones_on_delete=False))
    assert [op for *_, op in messages(quiet, run([("delete", ROW, None)]))] == ["d"]


def test_key_change_is_delete_tombstone_create_with_key_headers() -> None:
    ser = DebeziumSerializer(DebeziumOptions(topic_prefix="srv", schemas_enable=False,
                                             provide_transaction_metadata=True))
    out = messages(ser, run([("update", ROW, {**ROW, "id": 100}), ("update", ROW, {**ROW, "name": "y"})]))
    assert [(k, op, h) for k, _, h, op in out] == [
        ({"id": "0-1-7"}, "BEGIN", {}),
        ({"id": 1}, "d", {"__debezium.newkey": {"id": 100}}),
        ({"id": 1}, "tombstone", {"__debezium.newkey": {"id": 100}}),
        ({"id": 100}, "c", {"__debezium.oldkey": {"id": 1}}),
        ({"id": 1}, "u", {}),
    ]
    orders = [(v["transaction"]["total_order"], v["transaction"]["data_collection_order"]) for _, v, _, op in out
              if v is not None and op != "BEGIN"]
    assert orders == [(1, 1), (2, 2), (3, 3)] and out[1][1]["transaction"]["id"] == "0-1-7"
    assert out[0][1] == {"status": "BEGIN", "id": "0-1-7", "event_count": None, "data_collections": None,
                         "ts_ms": 1_700_000_000_500}
    [(key, end, _, status)] = [(json.loads(k), json.loads(v), h, s) for k, v, h, s in ser.end_transaction()]
    assert (key, status) == ({"id": "0-1-7"}, "END")
    assert end == {"status": "END", "id": "0-1-7", "event_count": 3,
                   "data_collections": [{"data_collection": "shop.t", "event_count": 3}], "ts_ms": 1_700_000_000_500}
    assert ser.end_transaction() == []  # once
    assert ser.transaction_topic() == "srv.transaction"


def test_next_transaction_ends_the_last_and_ddl_has_begin_only() -> None:
    ser = DebeziumSerializer(DebeziumOptions(topic_prefix="srv", schemas_enable=False,
                                             provide_transaction_metadata=True))
    first = messages(ser, run([("insert", None, ROW)], gtid="0-1-7"))
    second = messages(ser, run([("insert", None, {**ROW, "id": 2})], gtid="0-1-8"))
    assert [op for *_, op in first] == ["BEGIN", "c"]
    assert [(op, v["id"] if op in ("BEGIN", "END") else None) for _, v, _, op in second] == [
        ("END", "0-1-7"), ("BEGIN", "0-1-8"), ("c", None)]
    ddl_type = pa.struct([("sql", pa.string())])
    arrays = [pa.array(["ddl"]), pa.array(["f"]), pa.array([9], pa.int64()), pa.array(["0-1-9"]),
              pa.array([0], pa.int32()), pa.array(["0-1-9"]), pa.array([2.0]), pa.array([2.0])]
    schema = META_SCHEMA.append(pa.field("before", ddl_type)).append(pa.field("after", ddl_type))
    ddl = TableRows("shop", "t", (), pa.RecordBatch.from_arrays(
        [*arrays, pa.nulls(1, ddl_type), pa.array([{"sql": "ALTER TABLE t ADD c INT"}], ddl_type)], schema=schema))
    assert [(op, v.get("id") or v.get("ddl")) for _, v, _, op in messages(ser, ddl)] == [
        ("END", "0-1-8"), ("BEGIN", "0-1-9"), ("schema", "ALTER TABLE t ADD c INT")]
    assert ser.end_transaction() == []


@pytest.mark.parametrize(("options", "column", "expected"), [
    ({"decimal_handling_mode": "string"}, "d41", "-999.9"),
    ({"decimal_handling_mode": "double"}, "d41", -999.9),
    ({"bigint_unsigned_handling_mode": "precise"}, "bu", "AP//////////"),
    ({"bigint_unsigned_handling_mode": "precise", "decimal_handling_mode": "string"}, "bu", "AP//////////"),
    ({"binary_handling_mode": "hex"}, "bn", "61620000"),
    ({"binary_handling_mode": "base64"}, "bn", "YWIAAA=="),
    ({"binary_handling_mode": "base64-url-safe"}, "g", None),
    ({"time_precision_mode": "connect"}, "dt_", -354285),
    ({"time_precision_mode": "connect"}, "dtt", -30610224000000 // 1000 * 1000),
    ({"time_precision_mode": "connect"}, "tm", None),  # outside 0..24 h: no Connect Time
])
def test_handling_modes(options: dict[str, Any], column: str, expected: Any) -> None:
    ser = DebeziumSerializer(DebeziumOptions(topic_prefix="srv", schemas_enable=False, **options))
    [(_, value, _, _)] = messages(ser, run([("insert", None, ROW)]))
    if column == "g":  # geometry is a struct of its own, untouched by binary_handling_mode
        assert value["after"]["g"] == DEBEZIUM_AFTER["g"]
    else:
        assert value["after"][column] == expected


def test_snapshot_markers_and_ddl_rows() -> None:
    ser = DebeziumSerializer(DebeziumOptions(topic_prefix="srv", schemas_enable=False))
    reads = run([("read", None, ROW), ("read", None, {**ROW, "id": 2}), ("read", None, {**ROW, "id": 3})],
                gtid=None)
    batch = RowBatch("pipe", 1, [marker("start"), reads, marker("end")], checkpoint={"file": "f", "offset": 4})
    last = last_reads(batch)
    assert last == {1: (2, "last")}
    assert messages(ser, batch.parts[0]) == []
    out = messages(ser, reads, last[1])
    assert [v["source"]["snapshot"] for _, v, _, _ in out] == ["first", "true", "last"]
    assert {(v["op"], v["source"]["server_id"], v["source"]["gtid"], v["source"]["row"]) for _, v, _, _ in out} \
        == {("r", 0, None, 0)}
    during = RowBatch("pipe", 1, [marker("start"), reads, marker("end")], checkpoint={"snapshot": {}})
    assert last_reads(during) == {1: (2, "last_in_data_collection")}


def test_options_are_checked_where_they_are_set() -> None:
    with pytest.raises(Invalid) as err:
        build(KafkaOptions, {"bootstrap": "b:9092", "format": "debezium",
                             "debezium": {"decimal_handling_mode": "exact"}}, "sinks[0]")
    assert err.value.key == "sinks[0].debezium.decimal_handling_mode"
    with pytest.raises((Invalid, ConfigError)) as err:
        build(KafkaOptions, {"bootstrap": "b:9092", "format": "debezium", "debezium": {"topic_prefix": "a b"}},
              "sinks[0]")
    assert "topic_prefix" in str(err.value.key if isinstance(err.value, Invalid) else err.value)


def test_a_changed_column_definition_gets_a_new_schema() -> None:
    """Arrow types equal but the MySQL definition changed (ALTER ... NULL): the schema follows."""
    ser = DebeziumSerializer(DebeziumOptions(topic_prefix="srv"))
    [(_, first, _, _)] = messages(ser, run([("insert", None, ROW)]))
    nullable = pa.struct([column_field(c if c.name != "name" else bt.ColumnDef("name", bt.VARCHAR, charset="utf-8"),
                                       t) for c, t in COLUMNS])
    rows = run([("insert", None, ROW)])
    data = rows.data
    schema = data.schema.set(data.schema.get_field_index("after"), pa.field("after", nullable))
    schema = schema.set(schema.get_field_index("before"), pa.field("before", nullable))
    changed = TableRows(rows.db, rows.table, rows.key, pa.RecordBatch.from_arrays(
        [*data.columns[:-2], data.column("before").cast(nullable), data.column("after").cast(nullable)],
        schema=schema))
    [(_, second, _, _)] = messages(ser, changed)

    def optional(value: dict[str, Any]) -> bool:
        return {f["field"]: f for f in value["schema"]["fields"][1]["fields"]}["name"]["optional"]

    assert optional(first) is False and optional(second) is True


class FakeSink:
    """What produce_debezium uses of a KafkaSink, recording the messages."""

    def __init__(self, serializer: DebeziumSerializer) -> None:
        self.serializer, self.pipeline = serializer, "pipe"
        self.topics_of: dict = {}
        self.known_topics: set[str] = set()
        self.produced: list[tuple[str, Any, Any]] = []

    def _ensure_topic(self, topic: str) -> None:
        self.known_topics.add(topic)

    def _warm(self, topic: str) -> None:
        pass

    def _produce(self, topic: str, value: Any, key: Any, headers: Any, position: str, table: str) -> None:
        self.produced.append((topic, key, value))


def test_produce_a_large_batch_in_slices_with_its_snapshot_ends() -> None:
    from dbus_ray.serializers.debezium import SLICE_ROWS, produce_debezium

    n = SLICE_ROWS * 2 + 5
    reads = run([("read", None, {**ROW, "id": i}) for i in range(n)], gtid=None)
    sink = FakeSink(DebeziumSerializer(DebeziumOptions(topic_prefix="srv", schemas_enable=False)))
    batch = RowBatch("pipe", 1, [marker("start"), reads, marker("end")],
                     checkpoint={"file": "f", "offset": 4, "skip": 0})
    assert produce_debezium(sink, batch) == n
    values = [json.loads(v) for _, _, v in sink.produced]
    assert {t for t, _, _ in sink.produced} == {"srv.shop.t"}
    assert [v["after"]["id"] for v in values] == list(range(n))
    snapshot = [v["source"]["snapshot"] for v in values]
    assert snapshot[0] == "first" and snapshot[-1] == "last" and set(snapshot[1:-1]) == {"true"}


def test_runs_of_many_rows_column_by_column_as_debezium_writes_them() -> None:
    """Runs of MIN_ROWS rows or more are built column by column (`serializers/debezium_columns.py`): each
    message's values still Debezium's, rows counted in their event across two runs, a delete's tombstone."""
    from dbus_ray.serializers import debezium_columns
    from dbus_ray.serializers.json_columns import MIN_ROWS

    n = MIN_ROWS + 6
    inserts = run([("insert", None, {**ROW, "id": i}) for i in range(n)])
    mixed = run([("update", {**ROW, "id": i, "name": "old"}, {**ROW, "id": i}) if i % 2 else
                 ("delete", {**ROW, "id": i}, None) for i in range(n)], gtid="0-9-8", offset=900)
    for schemas in (True, False):
        ser = DebeziumSerializer(DebeziumOptions(topic_prefix="srv", schemas_enable=schemas))
        assert debezium_columns.messages(ser, inserts) is not None  # (the way under test)
        ser = DebeziumSerializer(DebeziumOptions(topic_prefix="srv", schemas_enable=schemas))
        # the same run twice (a second run of the same event), then another event
        out = messages(ser, inserts) + messages(ser, inserts) + messages(ser, mixed)
        payloads = [(k and (k["payload"] if schemas else k), v and (v["payload"] if schemas else v), op)
                    for k, v, _, op in out]
        assert [op for *_, op in payloads] == ["c"] * 2 * n + [o for i in range(n)
                                                              for o in (["u"] if i % 2 else ["d", "tombstone"])]
        for i, (key, value, _op) in enumerate(payloads[:2 * n]):
            assert key == {"id": i % n} and value["after"] == {**DEBEZIUM_AFTER, "id": i % n}
            assert value["before"] is None and value["source"]["row"] == i and value["source"]["server_id"] == 1
        changes = [(k, v) for k, v, op in payloads[2 * n:] if op != "tombstone"]
        for i, (key, value) in enumerate(changes):
            assert key == {"id": i} and value["source"]["row"] == i and value["source"]["pos"] == 900
            assert value["source"]["gtid"] == "0-9-8" and value["source"]["server_id"] == 9
            if i % 2:
                assert value["before"] == {**DEBEZIUM_AFTER, "id": i, "name": "old"}
                assert value["after"] == {**DEBEZIUM_AFTER, "id": i}
            else:
                assert value["before"] == {**DEBEZIUM_AFTER, "id": i} and value["after"] is None
        assert all(v is None for _, v, op in payloads if op == "tombstone")
        reads = run([("read", None, {**ROW, "id": i}) for i in range(n)], gtid=None)
        assert debezium_columns.messages(ser, reads) is not None
        messages(ser, marker("start"))  # the table's snapshot starts: its next row is its first
        snap = [v["payload"] if schemas else v for _, v, _, _ in messages(ser, reads) + messages(ser, reads)]
        assert [v["source"]["snapshot"] for v in snap] == ["first"] + ["true"] * (2 * n - 1)
        assert all(v["after"] == {**DEBEZIUM_AFTER, "id": i % n} and v["op"] == "r" and v["source"]["row"] == 0
                   and v["source"]["gtid"] is None and v["source"]["server_id"] == 0 for i, v in enumerate(snap))
        if schemas:
            assert out[0][1]["schema"]["name"] == "srv.shop.t.Envelope"
            assert out[0][0]["schema"]["name"] == "srv.shop.t.Key"


def test_a_long_run_with_a_key_change_is_delete_tombstone_create() -> None:
    """A run of many rows that changes a key goes the per-row way: Debezium's three messages for it."""
    n = 80
    rows = run([("update", {**ROW, "id": i}, {**ROW, "id": i + (1000 if i == 40 else 0)}) for i in range(n)])
    out = messages(DebeziumSerializer(DebeziumOptions(topic_prefix="srv", schemas_enable=False)), rows)
    assert [op for *_, op in out] == ["u"] * 40 + ["d", "tombstone", "c"] + ["u"] * 39
    assert out[40][2] == {"__debezium.newkey": {"id": 1040}} and out[42][2] == {"__debezium.oldkey": {"id": 40}}


def _connect_decimal(unscaled: int) -> str:
    """Kafka Connect's Decimal bytes as Java's BigInteger.toByteArray gives them (the fewest bytes of the
    big-endian two's complement: found by trying each length), base64."""
    import base64

    for size in range(1, 17):
        try:
            return base64.b64encode(unscaled.to_bytes(size, "big", signed=True)).decode()
        except OverflowError:
            continue
    raise AssertionError(unscaled)


def test_long_runs_of_decimals_and_datetimes_as_connect_encodes_them() -> None:
    """The column-wise DECIMAL (at most 18 digits) and DATETIME conversions (`debezium_columns`) give Kafka
    Connect's encodings: the unscaled value's bytes, microseconds or milliseconds since the epoch (from the
    calendar: `calendar.timegm`); a column with a zero date goes value by value (null, as Debezium writes)."""
    import calendar
    import random

    rng = random.Random(5)
    edges = [0, 1, -1, 127, 128, -128, -129, 32767, 32768, -32769, 10**18 - 1, -(10**18 - 1)]
    unscaled = edges + [rng.randint(-(10**18 - 1), 10**18 - 1) for _ in range(200)] + [None]
    stamps = [dt.datetime(1969, 12, 31, 23, 59, 59, 999_999), dt.datetime(1000, 1, 1),
              dt.datetime(9999, 12, 31, 23, 59, 59)]
    stamps += [dt.datetime(1, 1, 1) + dt.timedelta(seconds=rng.randint(0, 315_537_897_599),
                                                   microseconds=rng.randint(0, 999_999))
               for _ in range(len(unscaled) - len(stamps) - 1)] + [None]
    image = pa.struct([column_field(bt.ColumnDef("id", bt.LONG, nullable=False), pa.int32()),
                       column_field(bt.ColumnDef("d", bt.NEWDECIMAL, precision=18, scale=4), pa.decimal128(18, 4)),
                       column_field(bt.ColumnDef("t6", bt.DATETIME2, fsp=6), pa.string()),
                       column_field(bt.ColumnDef("t0", bt.DATETIME2), pa.string())])

    def rows_of(texts: list[str | None]) -> TableRows:
        n = len(texts)
        after = pa.array([{"id": i, "d": None if u is None else decimal.Decimal(u).scaleb(-4), "t6": t, "t0": t}
                          for i, (u, t) in enumerate(zip(unscaled, texts))], image)
        arrays = [pa.array(["insert"] * n), pa.array(["f"] * n), pa.array([4] * n, pa.int64()),
                  pa.array(["0-1-2"] * n), pa.array(range(n), pa.int32()), pa.array(["x"] * n),
                  pa.array([1.0] * n), pa.array([1.0] * n), pa.nulls(n, image), after]
        schema = META_SCHEMA.append(pa.field("before", image)).append(pa.field("after", image))
        return TableRows("shop", "t", ("id",), pa.RecordBatch.from_arrays(arrays, schema=schema))

    texts = [None if s is None else s.isoformat() for s in stamps]
    ser = DebeziumSerializer(DebeziumOptions(topic_prefix="srv", schemas_enable=False))
    got = [v["after"] for _, v, _, _ in messages(ser, rows_of(texts))]
    for after, u, s in zip(got, unscaled, stamps):
        micros = None if s is None else calendar.timegm(s.utctimetuple()) * 10**6 + s.microsecond
        assert after["d"] == (None if u is None else _connect_decimal(u))
        assert after["t6"] == micros and after["t0"] == (None if micros is None else micros // 1000)
    for zero in ("0000-00-00T00:00:00", "0000-01-01T00:00:00"):  # (as the mysql source gives them)
        after = [v["after"] for _, v, _, _ in messages(ser, rows_of([texts[0], zero, *texts[2:]]))]
        assert after[1]["t6"] is None and after[0]["t6"] == got[0]["t6"] and after[5]["t0"] == got[5]["t0"]


def test_a_sink_key_column_the_table_lacks_is_an_error_not_dropped() -> None:
    """The sink's `key` naming a column the table does not have stops with one line (the per-row and the
    column-wise way alike), instead of keying the table's rows by the columns left; a snapshot marker (its
    images are not the table's columns) and a key of the table's columns go on as before."""
    from dbus_ray.errors import DbusError
    from dbus_ray.serializers.json_columns import MIN_ROWS

    line = ("sink key column(s) ['tenant'] not in table shop.t (columns: " + ", ".join(f.name for f in IMAGE)
            + "): every table the sink writes must have the key columns (or leave key out for the primary key)")
    for rows in (run([("insert", None, ROW)]), run([("insert", None, {**ROW, "id": i}) for i in range(MIN_ROWS)])):
        ser = get_serializer("debezium", options=DebeziumOptions(topic_prefix="srv", schemas_enable=False),
                             key=["id", "tenant"])
        with pytest.raises(DbusError) as info:
            messages(ser, rows)
        assert str(info.value) == line
    ser = DebeziumSerializer(DebeziumOptions(topic_prefix="srv", schemas_enable=False), key=["name", "id"])
    assert messages(ser, marker("start")) == []
    [(key, _, _, _)] = messages(ser, run([("insert", None, ROW)]))
    assert key == {"name": "x", "id": 1}
