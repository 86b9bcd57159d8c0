"""`format: debezium` with `heartbeat_interval_ms`: an idle pipeline (mysql source on a database without
changes -> kafka sink on the session's broker) writes Debezium's heartbeat topic at the interval. The shape
expected is what Debezium 3.5's MariaDB connector writes (recorded from a run of tests/peer with
heartbeat.interval.ms; tests/peer compares it with Debezium's own too)."""

from __future__ import annotations

import json
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from dbus_ray.config import parse_config
from dbus_ray.pipeline import run_pipeline
from tests.support.helpers import execute

pytestmark = pytest.mark.integration

DB = "dbz_heartbeat"
INTERVAL_MS = 200
BEATS = 8


class Collector:
    """Every message of partition 0 of `topic` as it arrives, in a thread, once the topic exists."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "dbus-test-heartbeat",
                                  "enable.auto.commit": False, "allow.auto.create.topics": False})
        self.messages: list[Any] = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.done.is_set():  # the sink creates the topic
            found = self.consumer.list_topics(self.topic, timeout=5).topics.get(self.topic)
            if found is not None and found.error is None and found.partitions:
                break
            time.sleep(0.1)
        self.consumer.assign([TopicPartition(self.topic, 0, 0)])
        while not self.done.is_set():
            msg = self.consumer.poll(0.1)
            if msg is not None and msg.error() is None:
                self.messages.append(msg)

    def close(self) -> None:
        self.done.set()
        self.thread.join(10)
        self.consumer.close()


@pytest.mark.usefixtures("ray_session")
@pytest.mark.parametrize("schemas_enable", [True, False])
def test_idle_pipeline_beats_at_the_interval(tmp_path: Path, mariadb: Any, broker: Any, root: Any,
                                             schemas_enable: bool) -> None:
    prefix = f"hb-{str(schemas_enable).lower()}"
    execute(root, f"DROP DATABASE IF EXISTS {DB}", f"CREATE DATABASE {DB}")
    cfg = parse_config({
        "name": f"dbz-{prefix}",
        "source": {"type": "mysql", "dsn": mariadb.dsn, "server_id": 7451, "include": [f"{DB}.*"]},
        "sinks": [{"name": "k", "type": "kafka", "bootstrap": broker.bootstrap, "format": "debezium",
                   "debezium": {"topic_prefix": prefix, "heartbeat_interval_ms": INTERVAL_MS,
                                "schemas_enable": schemas_enable}}],
        "data_dir": str(tmp_path / "data"),
    }, "heartbeat.yaml", {})
    collector = Collector(broker.bootstrap, f"__debezium-heartbeat.{prefix}")
    deadline = time.monotonic() + 120
    try:
        final = run_pipeline(cfg, interval=0.1,
                             should_stop=lambda: len(collector.messages) >= BEATS or time.monotonic() > deadline)
    finally:
        collector.close()
    assert final["error"] is None, final["error"]
    messages = collector.messages
    assert len(messages) >= BEATS, f"{len(messages)} heartbeats in 120 s"
    keys = {m.key().decode() for m in messages}
    key = {"serverName": prefix}
    if schemas_enable:
        key = {"schema": {"type": "struct", "fields": [{"type": "string", "optional": False, "field": "serverName"}],
                          "optional": False, "name": "io.debezium.connector.common.ServerNameKey", "version": 1},
               "payload": key}
    assert [json.loads(k) for k in keys] == [key]
    values = [json.loads(m.value()) for m in messages]
    if schemas_enable:
        assert {json.dumps(v["schema"]) for v in values} == {json.dumps(
            {"type": "struct", "fields": [{"type": "int64", "optional": False, "field": "ts_ms"}], "optional": False,
             "name": "io.debezium.connector.common.Heartbeat", "version": 1})}
        values = [v["payload"] for v in values]
    assert all(set(v) == {"ts_ms"} for v in values)
    stamps = [v["ts_ms"] for v in values]
    assert stamps == sorted(stamps)
    now_ms = time.time() * 1000
    assert all(now_ms - 300_000 < t <= now_ms for t in stamps)
    gap = statistics.median(b - a for a, b in zip(stamps, stamps[1:]))
    assert INTERVAL_MS * 0.75 <= gap <= INTERVAL_MS * 2, f"median gap {gap} ms, interval {INTERVAL_MS} ms"
