"""Chaos: while a workload of inserts, updates and deletes over many keys runs on MariaDB, kill -9 in
turn the reader, router, batcher and writer processes and the controller, stall the broker
(SIGSTOP/SIGCONT), restart MariaDB (kill -9 and start in the first and every other round, a clean
restart in the others) and drop the network between the reader and MariaDB (every connection reset,
new ones refused for 2 s, through `dbus_ray.netfault`). Then compare what Kafka holds with what was
committed: no row change missing, per-key order kept, duplicates counted and reported (at-least-once),
per fault in a table.

Short form in `make test` (one round of 8 faults); `make chaos` runs DBUS_CHAOS_ROUNDS=5 (40 faults).
Node removal is tested in tests/cluster (a multi-node Ray cannot share the session's Ray).
"""

from __future__ import annotations

import bisect
import contextlib
import json
import os
import random
import signal
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest
import ray
from confluent_kafka import Consumer, TopicPartition

from dbus_ray.actors.controller import get_controller
from dbus_ray.binlog.preflight import binlog_index
from dbus_ray.devstack import MariaDB
from dbus_ray.netfault import FaultProxy
from dbus_ray.testing import execute, position, wait_for

pytestmark = pytest.mark.usefixtures("ray_session")

ROUNDS = int(os.environ.get("DBUS_CHAOS_ROUNDS", "1"))
KEYS = 200
FAULTS_PER_ROUND = 8


@pytest.fixture(scope="module")
def own() -> Iterator[MariaDB]:
    """A private MariaDB of this module: it gets restarted and killed (the session's one is shared)."""
    server = MariaDB().start()
    try:
        yield server
    finally:
        server.stop()


class Workload(threading.Thread):
    """Row changes over KEYS keys; every written value is unique, so each change is identified by
    (op, id, value) and `expected` holds them in commit order. Each transaction also inserts its number
    into chaos.txlog (not read by the pipeline): when the server goes away during a transaction, that
    row says on the next connection whether it committed."""

    def __init__(self, server: MariaDB) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.expected: list[tuple[str, int, int]] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.interrupted = 0  # transactions whose connection was lost; outcome read back from chaos.txlog

    def _connect(self) -> pymysql.connections.Connection:
        deadline = time.monotonic() + 120
        while True:
            try:
                return self.server.root_connect(connect_timeout=2)
            except pymysql.err.MySQLError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def run(self) -> None:
        try:
            conn = self._connect()
            rng = random.Random(11)
            live: dict[int, int] = {}
            value = txn = 0
            while not self.stop.is_set():
                txn += 1
                ops: list[tuple[str, int, int]] = []
                after = dict(live)
                for _ in range(rng.randint(1, 5)):
                    value += 1
                    key = rng.randint(1, KEYS)
                    if key not in after:
                        ops.append(("insert", key, value))
                        after[key] = value
                    elif rng.random() < 0.7:
                        ops.append(("update", key, value))
                        after[key] = value
                    else:
                        ops.append(("delete", key, after.pop(key)))
                try:
                    with conn.cursor() as cur:
                        cur.execute("BEGIN")
                        for op, key, v in ops:
                            if op == "insert":
                                cur.execute("INSERT INTO chaos.items VALUES (%s, %s)", (key, v))
                            elif op == "update":
                                cur.execute("UPDATE chaos.items SET v = %s WHERE id = %s", (v, key))
                            else:
                                cur.execute("DELETE FROM chaos.items WHERE id = %s", (key,))
                        cur.execute("INSERT INTO chaos.txlog VALUES (%s)", (txn,))
                        cur.execute("COMMIT")
                    committed = True
                except (pymysql.err.OperationalError, pymysql.err.InterfaceError):
                    self.interrupted += 1
                    with contextlib.suppress(Exception):
                        conn.close()
                    conn = self._connect()
                    with conn.cursor() as cur:
                        cur.execute("SELECT COUNT(*) FROM chaos.txlog WHERE n = %s", (txn,))
                        committed = cur.fetchone()[0] == 1
                if committed:
                    self.expected += ops
                    live = after
                time.sleep(0.004)
            conn.close()
        except BaseException as exc:  # noqa: BLE001 - the test reports it
            self.error = exc


def actor_pid(name: str) -> int:
    from ray._private.state import actors

    def alive() -> int | None:
        for actor in actors().values():
            if actor.get("Name") == name and actor["State"] == "ALIVE" and actor.get("Pid"):
                return actor["Pid"]
        return None

    return wait_for(alive, timeout=30, what=f"a live actor {name}")


def read_topic(bootstrap: str, topic: str) -> list[tuple[int, tuple[str, int, int]]]:
    """(Kafka timestamp in ms, row change) of every message of `topic`, in timestamp order."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "chaos", "enable.auto.commit": False})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        got: list[tuple[int, int, int, tuple[str, int, int]]] = []
        idle = time.monotonic()
        while time.monotonic() - idle < 3:
            for msg in consumer.consume(2000, timeout=0.5):
                if msg.error() is None:
                    row = json.loads(msg.value())
                    image = row["after"] if row["op"] != "delete" else row["before"]
                    change = (row["op"], image["id"], image["v"])
                    got.append((msg.timestamp()[1], msg.partition(), msg.offset(), change))
                    idle = time.monotonic()
        got.sort()
        return [(ts, change) for ts, _, _, change in got]
    finally:
        consumer.close()


def test_chaos_loses_nothing_and_keeps_key_order(own: MariaDB, broker: Any, tmp_path: Path) -> None:
    root = own.root_connect()
    execute(root, "CREATE DATABASE IF NOT EXISTS chaos", "DROP TABLE IF EXISTS chaos.items, chaos.txlog",
            "CREATE TABLE chaos.items (id INT PRIMARY KEY, v BIGINT NOT NULL)",
            "CREATE TABLE chaos.txlog (n INT PRIMARY KEY)")
    start = position(root)
    root.close()
    proxy = FaultProxy(own.host, own.port).start()
    topic = f"chaos-{uuid.uuid4().hex[:8]}"
    controller = get_controller()
    spec = {
        "name": "chaos", "data_dir": str(tmp_path / "data"),
        "source": {"type": "mysql", "dsn": proxy.dsn(own.dsn), "start": start, "include": ["chaos.items"]},
        "sinks": [{"name": "kafka", "type": "kafka", "bootstrap": broker.bootstrap, "topic": topic,
                   "partitions": 3, "delivery_timeout_ms": 60_000}],
        "flow": {"read_batch_rows": 500, "max_rows_in_flight": 5000},
    }
    ray.get(controller.submit.remote(spec))

    def record() -> dict[str, Any]:
        return ray.get(controller.get.remote("chaos"), timeout=30)

    wait_for(lambda: record()["state"] == "running", what="pipeline running")
    workload = Workload(own)
    workload.start()
    # (fault, recovery seconds, wall time of the fault, row changes committed before it)
    report: list[tuple[str, float, float, int]] = []

    def delivered() -> int:
        return (record().get("status") or {}).get("rows_delivered", 0)

    def flowing(after_epoch: int) -> bool:
        r = record()
        return r["epoch"] > after_epoch and r["state"] == "running" and (r.get("status") or {}).get(
            "rows_delivered", 0) > 0

    def server_position() -> tuple[int, int]:
        conn = own.root_connect()
        try:
            file, offset = position(conn).rsplit(":", 1)
        finally:
            conn.close()
        return binlog_index(file), int(offset)

    def delivered_past(target: tuple[int, int]) -> bool:
        """The pipeline's checkpoint (everything before it delivered) is at or after `target`."""
        r = record()
        source = ((r.get("status") or {}).get("checkpoint") or {}).get("source") or {}
        return r["state"] == "running" and "file" in source and (
            binlog_index(source["file"]), source["offset"]) >= target

    try:
        for round_ in range(ROUNDS):
            for role in ("reader", "router", "batcher:kafka", "writer:kafka"):
                wait_for(lambda: delivered() > 0, what="rows flowing")
                epoch = record()["epoch"]
                pid = actor_pid(f"dbus:chaos:{role}")
                mark, wall, started = len(workload.expected), time.time(), time.monotonic()
                os.kill(pid, signal.SIGKILL)
                wait_for(lambda e=epoch: flowing(e), timeout=90, what=f"recovery after killing the {role}")
                report.append((f"kill -9 {role}", time.monotonic() - started, wall, mark))
            pid = ray.get(controller.info.remote())["pid"]
            mark, wall, started = len(workload.expected), time.time(), time.monotonic()
            os.kill(pid, signal.SIGKILL)
            wait_for(lambda p=pid: _answers_with_new_pid(controller, p), timeout=90, what="controller back")
            report.append(("kill -9 controller", time.monotonic() - started, wall, mark))

            mark, wall = len(workload.expected), time.time()
            os.kill(broker.pid, signal.SIGSTOP)
            time.sleep(3)
            before = delivered()
            os.kill(broker.pid, signal.SIGCONT)
            started = time.monotonic()
            wait_for(lambda b=before: delivered() > b, timeout=90, what="rows after the broker stall")
            report.append(("broker SIGSTOP 3s", time.monotonic() - started, wall, mark))
            time.sleep(1)

            crash = round_ % 2 == 0
            mark, wall, started = len(workload.expected), time.time(), time.monotonic()
            own.restart(crash=crash)
            target = server_position()
            wait_for(lambda t=target: delivered_past(t), timeout=120, what="rows written after the MariaDB restart")
            report.append(("MariaDB kill -9+start" if crash else "MariaDB restart", time.monotonic() - started,
                           wall, mark))

            mark, wall, started = len(workload.expected), time.time(), time.monotonic()
            proxy.outage(2.0)
            target = server_position()
            wait_for(lambda t=target: delivered_past(t), timeout=90, what="rows written after the network drop")
            report.append(("network drop 2s", time.monotonic() - started, wall, mark))
    finally:
        workload.stop.set()
        workload.join(timeout=60)
        os.kill(broker.pid, signal.SIGCONT)
        proxy.clear()
    assert workload.error is None, workload.error
    expected = workload.expected
    try:
        # counters restart with each new owner; caught up = the reader is idle at the binlog's end, nothing in flight
        wait_for(lambda: (s := record()["status"]).get("caught_up") and s.get("rows_in_flight") == 0, timeout=120,
                 what="the pipeline to catch up")
        ray.get(controller.remove.remote("chaos"))
        ray.kill(controller, no_restart=True)
    finally:
        proxy.stop()

    messages = read_topic(broker.bootstrap, topic)
    got = [change for _, change in messages]
    missing = set(expected) - set(got)
    duplicates = len(got) - len(set(got))
    # per fault: changes committed after it (and before the next one) that are missing, and copies that
    # reached Kafka after it (and before the next one)
    walls = [r[2] * 1000 for r in report]
    marks = [r[3] for r in report]
    lost_after = [0] * (len(report) + 1)
    dup_after = [0] * (len(report) + 1)
    index = {change: i for i, change in enumerate(expected)}
    for change in missing:
        lost_after[bisect.bisect_right(marks, index[change])] += 1
    seen: set[tuple[str, int, int]] = set()
    for ts, change in messages:
        if change in seen:
            dup_after[bisect.bisect_right(walls, ts)] += 1
        seen.add(change)
    first_seen: dict[int, list[int]] = defaultdict(list)
    seen = set()
    for change in got:
        if change not in seen:
            seen.add(change)
            first_seen[change[1]].append(change[2])
    order: dict[int, list[int]] = defaultdict(list)
    for _, key, value in expected:
        order[key].append(value)
    print(f"\n{'fault':<24} {'recovery s':>10} {'rows lost':>10} {'rows duplicated':>16}")
    print(f"{'(before the first)':<24} {'':>10} {lost_after[0]:>10} {dup_after[0]:>16}")
    for i, (name, seconds, _, _) in enumerate(report):
        print(f"{name:<24} {seconds:>10.1f} {lost_after[i + 1]:>10} {dup_after[i + 1]:>16}")
    print(f"row changes written {len(expected)}, in Kafka {len(got)}, lost {len(missing)}, duplicated {duplicates}, "
          f"faults {len(report)}, workload transactions interrupted {workload.interrupted}, proxy {proxy.stats()}")
    assert len(report) == FAULTS_PER_ROUND * ROUNDS
    assert not missing, f"{len(missing)} row changes lost, e.g. {sorted(missing)[:5]}"
    assert set(got) <= set(expected), "Kafka holds row changes nobody wrote"
    assert dict(first_seen) == dict(order), "per-key order broken"


def _answers_with_new_pid(controller: Any, old: int) -> bool:
    try:
        return ray.get(controller.info.remote(), timeout=5)["pid"] != old
    except Exception:  # noqa: BLE001 - still restarting
        return False
