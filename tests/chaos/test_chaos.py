"""Chaos: while a workload of inserts, updates and deletes over many keys runs on MariaDB, kill -9 in
turn the reader, router, batcher and writer processes and the controller, and stall the broker
(SIGSTOP/SIGCONT). Then compare what Kafka holds with what was written: no row change missing,
per-key order kept, duplicates counted and reported (at-least-once).

Short form in `make test` (one round of 6 faults); `make chaos` runs DBUS_CHAOS_ROUNDS=5 (30 faults).
"""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import ray
from confluent_kafka import Consumer, TopicPartition

from dbus_ray.actors.controller import get_controller
from dbus_ray.testing import wait_for

pytestmark = pytest.mark.usefixtures("ray_session")

ROUNDS = int(os.environ.get("DBUS_CHAOS_ROUNDS", "1"))
KEYS = 200


class Workload(threading.Thread):
    """Row changes over KEYS keys; every written value is unique, so each change is identified by
    (op, id, value) and `expected` holds them in commit order."""

    def __init__(self, connect: Any) -> None:
        super().__init__(daemon=True)
        self.connect = connect
        self.expected: list[tuple[str, int, int]] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            conn = self.connect()
            cur = conn.cursor()
            rng = random.Random(11)
            live: dict[int, int] = {}
            value = 0
            while not self.stop.is_set():
                cur.execute("BEGIN")
                done = []
                for _ in range(rng.randint(1, 5)):
                    value += 1
                    key = rng.randint(1, KEYS)
                    if key not in live:
                        cur.execute("INSERT INTO chaos.items VALUES (%s, %s)", (key, value))
                        done.append(("insert", key, value))
                        live[key] = value
                    elif rng.random() < 0.7:
                        cur.execute("UPDATE chaos.items SET v = %s WHERE id = %s", (value, key))
                        done.append(("update", key, value))
                        live[key] = value
                    else:
                        cur.execute("DELETE FROM chaos.items WHERE id = %s", (key,))
                        done.append(("delete", key, live.pop(key)))
                cur.execute("COMMIT")
                self.expected += done
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


def read_topic(bootstrap: str, topic: str) -> list[tuple[str, int, int]]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "chaos", "enable.auto.commit": False})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        got: list[tuple[str, int, int]] = []
        idle = time.monotonic()
        while time.monotonic() - idle < 3:
            for msg in consumer.consume(2000, timeout=0.5):
                if msg.error() is None:
                    row = json.loads(msg.value())
                    image = row["after"] if row["op"] != "delete" else row["before"]
                    got.append((row["op"], image["id"], image["v"]))
                    idle = time.monotonic()
        return got
    finally:
        consumer.close()


def test_chaos_loses_nothing_and_keeps_key_order(mariadb: Any, broker: Any, tmp_path: Path) -> None:
    root = mariadb.root_connect()
    with root.cursor() as cur:
        cur.execute("CREATE DATABASE IF NOT EXISTS chaos")
        cur.execute("DROP TABLE IF EXISTS chaos.items")
        cur.execute("CREATE TABLE chaos.items (id INT PRIMARY KEY, v BIGINT NOT NULL)")
        cur.execute("SHOW MASTER STATUS")
        file, offset = cur.fetchone()[:2]
    topic = f"chaos-{uuid.uuid4().hex[:8]}"
    controller = get_controller()
    spec = {
        "name": "chaos", "data_dir": str(tmp_path / "data"),
        "source": {"type": "mysql", "dsn": mariadb.dsn, "start": f"{file}:{offset}", "include": ["chaos.items"]},
        "sinks": [{"name": "kafka", "type": "kafka", "bootstrap": broker.bootstrap, "topic": topic,
                   "partitions": 3, "delivery_timeout_ms": 60_000}],
        "flow": {"read_batch_rows": 500, "max_rows_in_flight": 5000},
    }
    ray.get(controller.submit.remote(spec))

    def record() -> dict[str, Any]:
        return ray.get(controller.get.remote("chaos"), timeout=30)

    wait_for(lambda: record()["state"] == "running", what="pipeline running")
    workload = Workload(mariadb.root_connect)
    workload.start()
    report: list[tuple[str, float]] = []

    def delivered() -> int:
        return (record().get("status") or {}).get("rows_delivered", 0)

    def flowing(after_epoch: int) -> bool:
        r = record()
        return r["epoch"] > after_epoch and r["state"] == "running" and (r.get("status") or {}).get(
            "rows_delivered", 0) > 0

    try:
        for _ in range(ROUNDS):
            for role in ("reader", "router", "batcher:kafka", "writer:kafka"):
                wait_for(lambda: delivered() > 0, what="rows flowing")
                epoch = record()["epoch"]
                os.kill(actor_pid(f"dbus:chaos:{role}"), signal.SIGKILL)
                started = time.monotonic()
                wait_for(lambda e=epoch: flowing(e), timeout=90, what=f"recovery after killing the {role}")
                report.append((f"kill -9 {role}", time.monotonic() - started))
            pid = ray.get(controller.info.remote())["pid"]
            os.kill(pid, signal.SIGKILL)
            started = time.monotonic()
            wait_for(lambda p=pid: _answers_with_new_pid(controller, p), timeout=90, what="controller back")
            report.append(("kill -9 controller", time.monotonic() - started))
            os.kill(broker.pid, signal.SIGSTOP)
            time.sleep(3)
            before = delivered()
            os.kill(broker.pid, signal.SIGCONT)
            started = time.monotonic()
            wait_for(lambda b=before: delivered() > b, timeout=90, what="rows after the broker stall")
            report.append(("broker SIGSTOP 3s", time.monotonic() - started))
            time.sleep(1)
    finally:
        workload.stop.set()
        workload.join(timeout=30)
        os.kill(broker.pid, signal.SIGCONT)
    assert workload.error is None, workload.error
    expected = workload.expected
    # counters restart with each new owner; caught up = the reader is idle at the binlog's end, nothing in flight
    wait_for(lambda: (s := record()["status"]).get("caught_up") and s.get("rows_in_flight") == 0, timeout=120,
             what="the pipeline to catch up")
    ray.get(controller.remove.remote("chaos"))
    ray.kill(controller, no_restart=True)

    got = read_topic(broker.bootstrap, topic)
    missing = set(expected) - set(got)
    duplicates = len(got) - len(set(got))
    first_seen: dict[int, list[int]] = defaultdict(list)
    seen: set[tuple[str, int, int]] = set()
    for change in got:
        if change not in seen:
            seen.add(change)
            first_seen[change[1]].append(change[2])
    order: dict[int, list[int]] = defaultdict(list)
    for _, key, value in expected:
        order[key].append(value)
    print(f"\n{'fault':<22} {'recovery s':>10}")
    for fault, seconds in report:
        print(f"{fault:<22} {seconds:>10.1f}")
    print(f"row changes written {len(expected)}, in Kafka {len(got)}, lost {len(missing)}, "
          f"duplicated {duplicates}, faults {len(report)}")
    assert len(report) == 6 * ROUNDS
    assert not missing, f"{len(missing)} row changes lost, e.g. {sorted(missing)[:5]}"
    assert set(got) <= set(expected), "Kafka holds row changes nobody wrote"
    assert dict(first_seen) == dict(order), "per-key order broken"


def _answers_with_new_pid(controller: Any, old: int) -> bool:
    try:
        return ray.get(controller.info.remote(), timeout=5)["pid"] != old
    except Exception:  # noqa: BLE001 - still restarting
        return False
