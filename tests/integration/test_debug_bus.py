"""Debugging through `dbus_ray.connect()` against the session's MariaDB, Kafka broker and Ray: a MySQL -> Kafka
pipeline under the controller, then `bus.history`, `bus.trace` (read? acknowledged? which topic, partition and
offset?), `bus.metrics`, `bus.dag` and `bus.lag`. Expected values come from MariaDB's own SELECT and the SQL the
test ran, the message found by `trace` is read back with a consumer of the test's own, and its partition is
checked against murmur2 of the key."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pyarrow as pa
import pytest
from confluent_kafka import Consumer, TopicPartition

import dbus_ray
from dbus_ray.errors import DbusError
from tests.support.helpers import execute, position, table_name, wait_for
from tests.support.topics import partition_of

pytestmark = [pytest.mark.integration]


def _select(conn: Any, table: str, key: int) -> dict[str, Any]:
    with conn.cursor() as cur:
        cur.execute(f"SELECT id, status, amount FROM {table} WHERE id = %s", (key,))
        row = cur.fetchone()
    return {"id": row[0], "status": row[1], "amount": str(row[2])}


def _message(bootstrap: str, topic: str, partition: int, offset: int) -> Any:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"t-{uuid.uuid4().hex[:6]}",
                         "enable.auto.commit": False})
    try:
        consumer.assign([TopicPartition(topic, partition, offset)])
        msg = consumer.poll(10)
        assert msg is not None and msg.error() is None and msg.offset() == offset
        return msg
    finally:
        consumer.close()


def test_history_trace_and_pictures(mariadb: Any, broker: Any, controller: Any, root: Any, tmp_path: Any) -> None:
    table = table_name("trace_orders")
    full = f"dbus_test.{table}"
    execute(root, f"CREATE TABLE {table} (id INT PRIMARY KEY, status VARCHAR(16), amount DECIMAL(10,2))")
    start = position(root)
    name = f"trace-{uuid.uuid4().hex[:6]}"
    bus = dbus_ray.connect()
    bus.submit({
        "name": name,
        "source": {"type": "mysql", "dsn": mariadb.dsn, "start": start, "include": [full]},
        "sinks": [{"name": "kafka", "type": "kafka", "bootstrap": broker.bootstrap, "topic": "trace.{table}",
                   "partitions": 3},
                  {"name": "runs", "type": "kafka", "bootstrap": broker.bootstrap, "topic": "trace_runs.{table}",
                   "format": "arrow", "partitions": 1},
                  {"name": "file", "type": "jsonl", "path": str(tmp_path / "rows.jsonl")}],
        "data_dir": str(tmp_path),
    })
    for i in range(1, 21):
        execute(root, f"INSERT INTO {table} VALUES ({i}, 'NEW', {i}.50)")
    execute(root, "BEGIN", f"UPDATE {table} SET status = 'PAID', amount = 70.01 WHERE id = 7", "COMMIT")
    paid = _select(root, table, 7)
    with root.cursor() as cur:
        cur.execute("SELECT @@last_gtid")
        gtid = cur.fetchone()[0]
    wait_for(lambda: (s := bus.get(name).get("status") or {}).get("rows_delivered", 0) >= 21 and s["caught_up"],
             timeout=90, what="21 rows delivered")

    changes = bus.history(full, key={"id": 7})  # the server: the one the pipeline reads
    assert [r["op"] for r in changes.to_pylist()] == ["insert", "update"]
    update = changes.slice(1, 1)
    assert json.loads(update.column("after")[0].as_py()) == paid
    assert update.column("gtid")[0].as_py() == gtid
    assert [r["op"] for r in bus.transaction(gtid).to_pylist()] == ["update"]

    found = bus.trace(name, update)
    assert found.read is True
    kafka, file = found.sink("kafka"), found.sink("file")
    assert kafka["acknowledged"] is True and file["acknowledged"] is True
    assert kafka["topic"] == f"trace.{table}"
    assert kafka["partition"] == partition_of(b'{"id":7}', 3)
    msg = _message(broker.bootstrap, kafka["topic"], kafka["partition"], kafka["offset"])
    value = json.loads(msg.value())
    assert value["op"] == "update" and value["after"] == paid and value["key"] == {"id": 7}
    assert "_repr_html_" in dir(found) and "kafka" in found._repr_html_()
    runs = found.sink("runs")  # format arrow: the message holding the run the row is in
    assert runs["acknowledged"] is True and (runs["topic"], runs["partition"]) == (f"trace_runs.{table}", 0)
    held = pa.ipc.open_stream(_message(broker.bootstrap, runs["topic"], 0, runs["offset"]).value()).read_all()
    images = [{"op": r["op"], **r["after"], "amount": str(r["after"]["amount"])} for r in held.to_pylist()]
    assert {"op": "update", **paid} in images  # Arrow keeps the DECIMAL: its text is SELECT's

    # pictures and figures of the running pipeline
    frame = bus.metrics()
    row = frame[frame.name == name].iloc[0]
    assert row.rows_delivered >= 21 and row.state == "running"
    assert "writer:kafka" in bus.dag(name)._repr_svg_()
    wait_for(lambda: len(bus.samples(name, 1)) >= 3, timeout=30, what="three samples")
    plot = bus.lag(name, minutes=1)
    assert plot._repr_png_().startswith(b"\x89PNG") and len(plot.to_pandas()) >= 3
    assert plot.to_pandas()["rows_delivered"].iloc[-1] >= 21

    # a change the pipeline has not read: stopped, its checkpoint answers
    bus.stop(name)
    wait_for(lambda: bus.get(name)["state"] == "stopped", timeout=60, what="pipeline stopped")
    execute(root, f"UPDATE {table} SET status = 'LATE' WHERE id = 8")
    late = bus.history(full, key={"id": 8}, since=start).to_pylist()[-1]
    assert json.loads(late["after"]) == _select(root, table, 8)
    missed = bus.trace(name, late, max_messages=1000)
    assert missed.read is False
    assert [s["acknowledged"] for s in missed.sinks] == [False, False, False]
    assert missed.sink("kafka")["offset"] is None and "no message" in missed.sink("kafka")["note"]
    with pytest.raises(DbusError, match="expected FILE:OFFSET"):
        bus.trace(name, "not a position")


def test_a_sink_behind_the_others_has_not_acknowledged(mariadb: Any, broker: Any, controller: Any, root: Any,
                                                        tmp_path: Any) -> None:
    """A sink that takes 15 s per write: the fast kafka sink has acknowledged the row, the slow one not yet
    (the reader's per-sink positions), then it has."""
    table = table_name("trace_slow")
    full = f"dbus_test.{table}"
    execute(root, f"CREATE TABLE {table} (id INT PRIMARY KEY, v VARCHAR(16))")
    start = position(root)
    name = f"slow-{uuid.uuid4().hex[:6]}"
    bus = dbus_ray.connect()
    bus.submit({
        "name": name,
        "source": {"type": "mysql", "dsn": mariadb.dsn, "start": start, "include": [full]},
        "sinks": [{"name": "kafka", "type": "kafka", "bootstrap": broker.bootstrap, "topic": "trace_slow.{table}",
                   "partitions": 1},
                  {"name": "slow", "type": "null", "delay_ms": 15000}],
        "data_dir": str(tmp_path),
    })
    wait_for(lambda: (bus.get(name).get("status") or {}).get("state") == "running", 90, "pipeline running")
    execute(root, f"INSERT INTO {table} VALUES (1, 'x')")
    row = bus.history(full, key={"id": 1}, since=start).slice(0, 1)
    first = wait_for(lambda: (t := bus.trace(name, row)).sink("kafka")["acknowledged"] and t, 30, "kafka acked")
    assert first.read is True and first.sink("slow")["acknowledged"] is False
    assert first.sink("kafka")["offset"] == 0 and first.sink("slow")["topic"] is None
    wait_for(lambda: bus.trace(name, row).sink("slow")["acknowledged"], 60, "the slow sink acked")
