"""Row keys of the mysql source without a database (`dbus_ray.mysql.keys`): an update that changes the key is
a delete of the old key and an insert of the new one (`key_change: delete_insert`, the default) or one update
(`key_change: update`); the Debezium format reads the pair back as the key change Debezium emits (compared
with the messages of the single update, whose form tests/peer checks against Debezium itself); DDL rows and
snapshot markers are not judged as a table without a key."""

from __future__ import annotations

import json
import logging
from typing import Any

import pyarrow as pa
import pytest

from dbus_ray.config import build
from dbus_ray.model import META_SCHEMA, RowBatch, TableRows
from dbus_ray.mysql.keys import MessageKeys
from dbus_ray.mysql.options import MysqlOptions
from dbus_ray.serializers.debezium import SLICE_ROWS, DebeziumOptions, DebeziumSerializer, produce_debezium
from dbus_ray.validation import Invalid

IMAGE = pa.struct([("a", pa.int32()), ("b", pa.string()), ("v", pa.string())])


def run(rows: list[tuple[str, dict | None, dict | None]], key: tuple[str, ...] = ("b", "a"),
        absent: list[dict | None] | None = None) -> TableRows:
    """A run of shop.t (columns a, b, v; PRIMARY KEY (b, a)), row i at offset 100 + i, index i."""
    n = len(rows)
    arrays = [
        pa.array([op for op, _, _ in rows], pa.string()), pa.array(["binlog.000002"] * n, pa.string()),
        pa.array([100 + i for i in range(n)], pa.int64()), pa.array(["0-1-7"] * n, pa.string()),
        pa.array(range(n), pa.int32()), pa.array(["tx1"] * n, pa.string()), pa.array([1_700_000_000.5] * n),
        pa.array([1_700_000_001.0] * n),
    ]
    schema = META_SCHEMA.append(pa.field("before", IMAGE)).append(pa.field("after", IMAGE))
    columns = [*arrays, pa.array([b for _, b, _ in rows], IMAGE), pa.array([a for _, _, a in rows], IMAGE)]
    if absent is not None:
        absent_type = pa.struct([("before", pa.list_(pa.string())), ("after", pa.list_(pa.string()))])
        schema = schema.append(pa.field("absent", absent_type))
        columns.append(pa.array(absent, absent_type))
    return TableRows("shop", "t", key, pa.RecordBatch.from_arrays(columns, schema=schema))


def applied(part: TableRows, key_change: str = "delete_insert", columns: dict | None = None) -> list[dict[str, Any]]:
    batch = MessageKeys("pipe", columns or {}, key_change).apply(RowBatch("pipe", 1, [part]))
    return [{k: r[k] for k in ("op", "key", "before", "after", "pos")} for r in batch.records()]


OLD = {"a": 1, "b": "k", "v": "x"}
NEW = {"a": 1, "b": "k2", "v": "y"}


def test_a_key_change_is_a_delete_of_the_old_key_then_an_insert_of_the_new() -> None:
    part = run([("insert", None, OLD), ("update", OLD, NEW), ("update", NEW, {**NEW, "v": "z"}), ("delete", NEW, None)])
    out = applied(part)
    assert [(r["op"], r["key"]) for r in out] == [
        ("insert", {"b": "k", "a": 1}),
        ("delete", {"b": "k", "a": 1}),  # the key change: the old key goes ...
        ("insert", {"b": "k2", "a": 1}),  # ... and the new one comes, at the same position
        ("update", {"b": "k2", "a": 1}),
        ("delete", {"b": "k2", "a": 1}),
    ]
    assert (out[1]["before"], out[1]["after"], out[2]["before"], out[2]["after"]) == (OLD, None, None, NEW)
    assert out[1]["pos"] == out[2]["pos"] == {"file": "binlog.000002", "offset": 101, "gtid": "0-1-7", "index": 1}
    assert [list(r["key"]) for r in out] == [["b", "a"]] * 5  # the primary key's order, not the columns'


def test_key_change_update_keeps_the_single_update() -> None:
    out = applied(run([("update", OLD, NEW)]), "update")
    assert [(r["op"], r["key"], r["before"], r["after"]) for r in out] == [("update", {"b": "k2", "a": 1}, OLD, NEW)]


def test_the_message_key_columns_decide_what_a_key_change_is() -> None:
    part = run([("update", OLD, NEW), ("update", NEW, {**NEW, "v": "w"})])
    out = applied(part, columns={"shop.*": ["v"]})
    assert [(r["op"], r["key"]) for r in out] == [("delete", {"v": "x"}), ("insert", {"v": "y"}),
                                                 ("delete", {"v": "y"}), ("insert", {"v": "w"})]
    same = applied(part, columns={"shop.*": ["a"]})
    assert [(r["op"], r["key"]) for r in same] == [("update", {"a": 1}), ("update", {"a": 1})]


def test_a_minimal_after_image_without_the_key_is_no_key_change() -> None:
    """binlog_row_image MINIMAL: the after image holds the changed columns only, the key stays."""
    part = run([("update", {"a": 1, "b": "k", "v": None}, {"a": None, "b": None, "v": "y"}),
                ("update", {"a": 1, "b": "k", "v": None}, {"a": None, "b": "k3", "v": None})],
               absent=[{"before": ["v"], "after": ["a", "b"]}, {"before": ["v"], "after": ["a", "v"]}])
    batch = MessageKeys("pipe", {}).apply(RowBatch("pipe", 1, [part]))
    out = list(batch.records())
    assert [(r["op"], r["key"]) for r in out] == [("update", {"b": "k", "a": 1}), ("delete", {"b": "k", "a": 1}),
                                                 ("insert", {"b": "k3", "a": None})]
    assert [r.get("absent") for r in out] == [{"before": ["v"], "after": ["a", "b"]}, {"before": ["v"]},
                                              {"after": ["a", "v"]}]


def test_a_table_without_key_keeps_its_updates() -> None:
    out = applied(run([("update", OLD, NEW)], key=()))
    assert [(r["op"], r["key"]) for r in out] == [("update", {})]


def marker(db: str, table: str) -> TableRows:
    """A snapshot marker of `db.table`, as the snapshot emits it before the table's rows."""
    marker_type = pa.struct([("snapshot", pa.string()), ("table", pa.string()), ("rows", pa.int64())])
    arrays = [pa.array(["ddl"]), pa.array(["f"]), pa.array([4], pa.int64()), pa.nulls(1, pa.string()),
              pa.array([0], pa.int32()), pa.array(["s"]), pa.array([1.0]), pa.array([1.0])]
    after = pa.array([{"snapshot": "start", "table": f"{db}.{table}", "rows": None}], marker_type)
    schema = META_SCHEMA.append(pa.field("before", marker_type)).append(pa.field("after", marker_type))
    return TableRows(db, table, (), pa.RecordBatch.from_arrays([*arrays, pa.nulls(1, marker_type), after],
                                                               schema=schema))


def test_no_key_warning_for_ddl_rows_and_markers_only_for_a_keyless_table(caplog: Any) -> None:
    keys = MessageKeys("pipe", {"shop.*": ["a"]})
    with caplog.at_level(logging.WARNING, logger="dbus.mysql"):
        keys.apply(RowBatch("pipe", 1, [marker("shop", "t"), marker("other", "t")]))
        batch = keys.apply(RowBatch("pipe", 2, [run([("insert", None, OLD)])]))
        assert [r["key"] for r in batch.records()] == [{"a": 1}]  # the rule applies after the marker
        keys.apply(RowBatch("pipe", 3, [marker("other", "t")]))
        assert caplog.records == []
        bare = TableRows("other", "t", (), run([("insert", None, OLD)]).data)
        keys.apply(RowBatch("pipe", 4, [bare, bare]))
    assert [r.getMessage() for r in caplog.records] == [
        "[pipe] table other.t has no primary key: its row changes carry an empty key (the kafka sink sends them "
        "with a null message key, spread over partitions without per-key order); set source.message_key_columns "
        "to give it one"]


def test_key_change_option_is_checked() -> None:
    assert build(MysqlOptions, {"dsn": "mysql://u:p@h:1"}, "source").key_change == "delete_insert"
    with pytest.raises(Invalid) as info:
        build(MysqlOptions, {"dsn": "mysql://u:p@h:1", "key_change": "split"}, "source")
    assert info.value.key == "source.key_change"


def debezium_messages(part: TableRows, tx: bool = True) -> list[tuple[Any, Any, dict, str]]:
    ser = DebeziumSerializer(DebeziumOptions(topic_prefix="srv", schemas_enable=False,
                                             provide_transaction_metadata=tx))
    out = []
    for key, value, headers, op in ser.messages(part, "pipe"):
        value = value and json.loads(value)
        if value and "source" in value:
            value["ts_ms"] = value["ts_us"] = value["ts_ns"] = None  # when the message was made
        out.append((key and json.loads(key), value, {k: json.loads(v) for k, v in headers or ()}, op))
    return out


def test_debezium_sends_the_pair_as_the_key_change_debezium_emits() -> None:
    part = run([("insert", None, OLD), ("update", OLD, NEW), ("update", NEW, {**NEW, "v": "z"})])
    split = MessageKeys("pipe", {}).apply(RowBatch("pipe", 1, [part])).parts[0]
    assert split.num_rows == 4
    out = debezium_messages(split)
    assert out == debezium_messages(part)  # the same messages as from the single update
    assert [(k, op, h) for k, _, h, op in out] == [
        ({"id": "0-1-7"}, "BEGIN", {}),
        ({"b": "k", "a": 1}, "c", {}),
        ({"b": "k", "a": 1}, "d", {"__debezium.newkey": {"b": "k2", "a": 1}}),
        ({"b": "k", "a": 1}, "tombstone", {"__debezium.newkey": {"b": "k2", "a": 1}}),
        ({"b": "k2", "a": 1}, "c", {"__debezium.oldkey": {"b": "k", "a": 1}}),
        ({"b": "k2", "a": 1}, "u", {}),
    ]
    assert [v["source"]["pos"] for _, v, _, op in out if op in "cdu"] == [100, 101, 101, 102]
    assert [v["after"] for _, v, _, op in out if op in "cdu"] == [OLD, None, NEW, {**NEW, "v": "z"}]


class FakeSink:
    def __init__(self, serializer: DebeziumSerializer) -> None:
        self.serializer, self.pipeline, self.topics_of, self.known_topics = serializer, "pipe", {}, set()
        self.produced: list[tuple[str, Any, Any, Any]] = []

    def _ensure_topic(self, topic: str) -> None:
        self.known_topics.add(topic)

    def _warm(self, topic: str) -> None:
        pass

    def _produce(self, topic: str, value: Any, key: Any, headers: Any, *_: Any) -> None:
        self.produced.append((topic, key and json.loads(key), value and json.loads(value),
                              {k: json.loads(v) for k, v in headers or ()}))


def test_debezium_slices_never_part_a_key_change() -> None:
    """The pair of the update at row SLICE_ROWS - 1 straddles the first slice's end."""
    rows = [("insert", None, {"a": i, "b": "k", "v": "x"}) for i in range(SLICE_ROWS - 1)]
    rows.append(("update", OLD, NEW))
    rows += [("insert", None, {"a": i, "b": "m", "v": "x"}) for i in range(5)]
    part = MessageKeys("pipe", {}).apply(RowBatch("pipe", 1, [run(rows)])).parts[0]
    assert part.num_rows == SLICE_ROWS + 6
    sink = FakeSink(DebeziumSerializer(DebeziumOptions(topic_prefix="srv", schemas_enable=False)))
    assert produce_debezium(sink, RowBatch("pipe", 1, [part])) == SLICE_ROWS - 1 + 3 + 5
    change = [(key, value and value["op"], headers) for _, key, value, headers in sink.produced[SLICE_ROWS - 1:][:3]]
    assert change == [({"b": "k", "a": 1}, "d", {"__debezium.newkey": {"b": "k2", "a": 1}}),
                      ({"b": "k", "a": 1}, None, {"__debezium.newkey": {"b": "k2", "a": 1}}),
                      ({"b": "k2", "a": 1}, "c", {"__debezium.oldkey": {"b": "k", "a": 1}})]
