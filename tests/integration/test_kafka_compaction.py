"""A compacted topic fed by a mysql pipeline (kafka sink with `tombstones: true`): after inserts, updates,
primary-key changes (a delete of the old key, its tombstone, an insert of the new) and deletes, and after
Apache Kafka's log cleaner ran, the topic holds exactly the source table's rows as MariaDB's own SELECT gives
them: one message per live key, tombstones gone.

The cleaner never touches a partition's active segment, and a segment only rolls (after `segment.ms`) when
a message is appended; so while waiting, the test inserts one more row now and then (a real row of the
table, compared like the others): each rolls the segment before it and gives the cleaner new dirty data,
so it passes over the log again and drops the tombstones whose `delete.retention.ms` has passed."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic

from dbus_ray.config import parse_config
from dbus_ray.pipeline import Pipeline
from tests.support.helpers import execute, position, table_name, wait_for

pytestmark = pytest.mark.integration

DB = "dbus_test"
TOPIC_CONFIG = {
    "cleanup.policy": "compact",
    "segment.ms": "500",  # a segment rolls at the first append after 0.5 s
    "min.cleanable.dirty.ratio": "0.001",  # any new segment makes the log worth cleaning
    "delete.retention.ms": "200",  # tombstones go at the first clean after 0.2 s past the one that marked them
    "min.compaction.lag.ms": "3600000",  # nothing cleaned while the changes arrive; 0 once they are read
}


def create_compacted_topic(bootstrap: str, topic: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, 1, 1, config=TOPIC_CONFIG)]).values():
        future.result(30)
    described = admin.describe_configs([ConfigResource("topic", topic)])
    [entries] = [f.result(30) for f in described.values()]
    assert entries["cleanup.policy"].value == "compact" and entries["segment.ms"].value == "500"


def read_log(bootstrap: str, topic: str) -> list[tuple[Any, Any]]:
    """Every message of the topic's one partition from its first offset to its end: (key, value) as JSON."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "dbus-compaction-reader",
                         "enable.auto.commit": False, "enable.partition.eof": True})
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    out: list[tuple[Any, Any]] = []
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error() is not None:
                assert msg.error().code() == KafkaError._PARTITION_EOF, msg.error()
                return out
            value = msg.value()
            out.append((json.loads(msg.key()), None if value is None else json.loads(value)))
    finally:
        consumer.close()
    raise AssertionError(f"topic {topic}: no end of partition 0 within 30 s")


def allow_compaction(bootstrap: str, topic: str) -> None:
    """Let the cleaner compact every message from now on (the topic was created holding them a while)."""
    entry = ConfigEntry("min.compaction.lag.ms", "0", incremental_operation=AlterConfigOpType.SET)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.incremental_alter_configs([ConfigResource("topic", topic,
                                                                  incremental_configs=[entry])]).values():
        future.result(30)


def table_rows(root: Any, table: str) -> dict[int, dict[str, Any]]:
    """The table as MariaDB's SELECT gives it, by primary key."""
    root.commit()  # a fresh snapshot
    with root.cursor() as cur:
        cur.execute(f"SELECT id, name, qty FROM {table} ORDER BY id")
        return {row[0]: {"id": row[0], "name": row[1], "qty": row[2]} for row in cur.fetchall()}


@pytest.mark.usefixtures("ray_session")
def test_compacted_topic_holds_the_tables_rows(tmp_path: Path, mariadb: Any, root: Any, broker: Any) -> None:
    t = table_name("compact")
    topic = f"compact.{t}"
    create_compacted_topic(broker.bootstrap, topic)
    execute(root, f"CREATE TABLE {t} (id INT PRIMARY KEY, name VARCHAR(40), qty INT)")
    start = position(root)
    raw = {
        "name": f"compact-{t}".replace("_", "-"),
        "source": {"type": "mysql", "dsn": "mysql://dbus:${PW}@127.0.0.1:" + str(mariadb.port), "start": start,
                   "include": [f"{DB}.{t}"]},
        "sinks": [{"name": "k", "type": "kafka", "bootstrap": broker.bootstrap, "topic": topic,
                   "create_topics": False, "tombstones": True}],
        "flow": {"read_batch_rows": 100, "max_rows_in_flight": 400},
        "data_dir": str(tmp_path / "data"),
    }
    pipeline = Pipeline(parse_config(raw, "compact.yaml", {"PW": mariadb.password}))
    pipeline.start()
    try:
        execute(root, *(f"INSERT INTO {t} VALUES ({i}, 'row-{i}', {i})" for i in range(300)))
        execute(root, f"UPDATE {t} SET qty = qty + 1000 WHERE id % 3 = 0",  # every third row: 1 to 3 updates
                f"UPDATE {t} SET name = CONCAT(name, '-b') WHERE id % 6 = 0",
                f"UPDATE {t} SET name = CONCAT(name, '-c') WHERE id % 12 = 0",
                f"UPDATE {t} SET id = id + 10000 WHERE id BETWEEN 100 AND 139",  # 40 primary-key changes
                f"UPDATE {t} SET id = id - 5000 WHERE id BETWEEN 10100 AND 10109",  # changed once more
                f"DELETE FROM {t} WHERE id BETWEEN 200 AND 259",  # 60 deletes
                f"DELETE FROM {t} WHERE id BETWEEN 10110 AND 10114",  # deletes of moved rows
                f"INSERT INTO {t} VALUES (200, 'again', 1), (201, 'again', 2)")  # deleted keys come back
        root.commit()
        # a primary-key change is two row changes: a delete of the old key and an insert of the new
        changes = 300 + 100 + 50 + 25 + 40 * 2 + 10 * 2 + 60 + 5 + 2
        tombstones = 40 + 10 + 60 + 5
        wait_for(lambda: pipeline.status()["rows_delivered"] >= changes, timeout=60, what="every change delivered")
        before = read_log(broker.bootstrap, topic)
        assert len(before) == changes + tombstones, "every change and its tombstones are in the log"
        assert sum(v is None for _, v in before) == tombstones
        # what compaction keeps, the last message of each key: a moved row's old key ends deleted and
        # tombstoned, its new key holds the row
        history: dict[int, list[str]] = {}
        for k, v in before:
            history.setdefault(k["id"], []).append("tombstone" if v is None else v["op"])
        assert {i: history[i][-2:] for i in range(100, 140)} == {i: ["delete", "tombstone"] for i in range(100, 140)}
        assert {i: history[i] for i in range(10100, 10110)} == {i: ["insert", "delete", "tombstone"]
                                                               for i in range(10100, 10110)}
        assert {i: history[i] for i in [*range(5100, 5110), *range(10115, 10140)]} == {
            i: ["insert"] for i in [*range(5100, 5110), *range(10115, 10140)]}
        moved = [v for k, v in before if v is not None and v["op"] == "insert" and k["id"] == 5100]
        assert moved[0]["before"] is None and moved[0]["after"] == {"id": 5100, "name": "row-100", "qty": 100}
        allow_compaction(broker.bootstrap, topic)

        ticks = iter(range(50_000, 60_000))
        seen: dict[str, Any] = {}

        def compacted() -> bool:
            """One message per live key, no tombstone, and the values are the table's rows."""
            execute(root, f"INSERT INTO {t} VALUES ({next(ticks)}, 'tick', 0)")
            root.commit()
            log = read_log(broker.bootstrap, topic)
            keys = [k["id"] for k, _ in log]
            seen.update(messages=len(log), tombstones=sum(v is None for _, v in log))
            if len(keys) != len(set(keys)) or seen["tombstones"]:
                return False
            return {k["id"]: v["after"] for k, v in log} == table_rows(root, t)

        t0 = time.monotonic()
        wait_for(compacted, timeout=150, every=0.5, what=f"topic {topic} compacted to the table's rows ({seen})")
        took = time.monotonic() - t0
    finally:
        final = pipeline.stop()
    assert final["error"] is None
    # after the pipeline stopped (everything delivered): the log as a consumer reads it once more
    log = read_log(broker.bootstrap, topic)
    rows = table_rows(root, t)
    by_key = {k["id"]: v for k, v in log}
    assert len(by_key) == len(log) and None not in by_key.values()
    assert {k: v["after"] for k, v in by_key.items()} == rows
    assert {k: v["key"] for k, v in by_key.items()} == {k: {"id": k} for k in rows}
    assert 5000 + 100 in rows and 10000 + 115 in rows and 200 in rows and 250 not in rows and 100 not in rows
    print(f"\ncompaction: {len(before)} messages ({tombstones} tombstones) -> {len(log)} = the table's "
          f"{len(rows)} rows, {took:.1f} s after the last change")


def test_tombstones_are_for_row_formats() -> None:
    from dbus_ray.config import build
    from dbus_ray.sinks.kafka import KafkaOptions
    from dbus_ray.validation import Invalid

    with pytest.raises(Invalid, match=r"^is not for format arrow") as info:
        build(KafkaOptions, {"bootstrap": "127.0.0.1:1", "format": "arrow", "tombstones": True}, "sinks[0]")
    assert info.value.key == "sinks[0].tombstones"
