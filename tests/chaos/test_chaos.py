"""Chaos: while a workload of inserts, updates and deletes over many keys runs on MariaDB, kill -9 in
turn the reader, router, batcher and writer processes and the controller, stall the broker
(SIGSTOP/SIGCONT), restart MariaDB (kill -9 and start in the first and every other round, a clean
restart in the others) and drop the network between the reader and MariaDB (every connection reset,
new ones refused for 2 s, through `tests.support.netfault`), kill -9 the controller and then a reader (the
pipeline's DSN password is a `${VAR}` only the submitter knew), and make the topic refuse the writes of a
batch for a moment (its `max.message.bytes` set to 100, then back: the sink fails one batch, then works; 100
bytes still admits the ~80-byte transaction markers, so the failed transaction can be aborted).
Then compare what Kafka holds with what was
committed, per fault in a table. Two modes:
- at-least-once: no row change missing, per-key order kept, duplicates counted and reported;
- exactly-once (`delivery: exactly_once`, `checkpoint.store: kafka`: each batch is one transaction with its
  checkpoint): judged by what an `isolation.level=read_committed` consumer gets from the broker, every row
  change exactly once and per-key order kept. There the writer is killed while its open transaction already
  has its checkpoint record on the broker (seen in the log by `dbus_ray.kafka.log`).

Short form in `make test`: at-least-once one round of 10 faults, exactly-once the 5 faults of EOS_SHORT;
`make chaos` runs DBUS_CHAOS_ROUNDS=5: 50 faults in each mode.
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
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    ResourceType,
)

from dbus_ray.actors.controller import get_controller
from dbus_ray.devstack import MariaDB
from dbus_ray.kafka.checkpoints import KafkaCheckpointStore
from dbus_ray.mysql.offset import binlog_index
from tests.support.helpers import actor_pid, execute, kill_when, position, wait_for
from tests.support.netfault import FaultProxy
from tests.support.topics import log_counts

pytestmark = pytest.mark.usefixtures("ray_session")

ROUNDS = int(os.environ.get("DBUS_CHAOS_ROUNDS", "1"))
KEYS = 200
AT_LEAST_ONCE, EXACTLY_ONCE = "at_least_once", "exactly_once"
#: one round; each stage kill restarts the whole pipeline under a new epoch
FAULTS = ("kill -9 reader", "kill -9 router", "kill -9 batcher:kafka", "kill -9 writer:kafka", "kill -9 controller",
          "kill -9 controller, then reader", "topic refuses a batch", "broker SIGSTOP 3s", "MariaDB restart",
          "network drop 2s")
#: the short form's exactly-once run: the writer dying mid-transaction, another stage, a failed batch, the
#: broker, the source
EOS_SHORT = ("kill -9 writer:kafka", "kill -9 batcher:kafka", "topic refuses a batch", "broker SIGSTOP 3s",
             "MariaDB restart")


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


def _change(msg: Any) -> tuple[int, int, int, tuple[str, int, int]]:
    """(Kafka timestamp in ms, partition, offset, row change) of a message."""
    row = json.loads(msg.value())
    image = row["after"] if row["op"] != "delete" else row["before"]
    return msg.timestamp()[1], msg.partition(), msg.offset(), (row["op"], image["id"], image["v"])


def read_topic(bootstrap: str, topic: str) -> list[tuple[int, int, int, tuple[str, int, int]]]:
    """(Kafka timestamp in ms, partition, offset, row change) of every message of `topic`, in partition and
    offset order (the order a consumer gets each key's changes in), as an `isolation.level=read_committed`
    consumer gets them from the broker (the records of aborted transactions hidden)."""
    got = []
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "chaos", "enable.auto.commit": False,
                         "isolation.level": "read_committed"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        idle = time.monotonic()
        while time.monotonic() - idle < 3:
            for msg in consumer.consume(2000, timeout=0.5):
                if msg.error() is None:
                    got.append(_change(msg))
                    idle = time.monotonic()
    finally:
        consumer.close()
    got.sort(key=lambda m: m[1:3])
    return got


def kill_in_transaction(pid: int, bootstrap: str, topic: str) -> None:
    """kill -9 the writer process `pid` while its open transaction has its checkpoint record in the log of the
    checkpoint topic `topic`."""
    before = log_counts(bootstrap, topic)[1]
    kill_when(pid, lambda: log_counts(bootstrap, topic)[1] > before,
              f"an open transaction's checkpoint in {topic}")


def set_max_message_bytes(bootstrap: str, topic: str, limit: int | None) -> None:
    """Set the topic's `max.message.bytes` (None: back to the broker's default)."""
    op = AlterConfigOpType.SET if limit is not None else AlterConfigOpType.DELETE
    entry = ConfigEntry("max.message.bytes", str(limit) if limit is not None else None, incremental_operation=op)
    resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[entry])
    admin = AdminClient({"bootstrap.servers": bootstrap})  # kept alive until the answer is in
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(timeout=30)


def fault_plan(mode: str) -> list[str]:
    """The faults of a run, in order: ROUNDS times the whole rotation; the short form of exactly-once
    (ROUNDS=1) runs EOS_SHORT only."""
    if mode == EXACTLY_ONCE and ROUNDS == 1:
        return list(EOS_SHORT)
    return list(FAULTS) * ROUNDS


@pytest.mark.parametrize("mode", [AT_LEAST_ONCE, EXACTLY_ONCE])
def test_chaos_loses_nothing_and_keeps_key_order(own: MariaDB, broker: Any, tmp_path: Path, mode: str) -> None:
    exactly = mode == EXACTLY_ONCE
    name = "chaos-eos" if exactly else "chaos"
    root = own.root_connect()
    execute(root, "CREATE DATABASE IF NOT EXISTS chaos", "DROP TABLE IF EXISTS chaos.items, chaos.txlog",
            "CREATE TABLE chaos.items (id INT PRIMARY KEY, v BIGINT NOT NULL)",
            "CREATE TABLE chaos.txlog (n INT PRIMARY KEY)")
    start = position(root)
    root.close()
    proxy = FaultProxy(own.host, own.port).start()
    topic = f"{name}-{uuid.uuid4().hex[:8]}"
    controller = get_controller()
    sink = {"name": "kafka", "type": "kafka", "bootstrap": broker.bootstrap, "topic": topic, "partitions": 3,
            "delivery_timeout_ms": 60_000}
    # the password as a `${VAR}` known only to the submitter: a restarted controller must get it back
    dsn = proxy.dsn(own.dsn).replace(f":{own.password}@", ":${CHAOS_PW}@")
    spec: dict[str, Any] = {
        "name": name, "data_dir": str(tmp_path / "data"),
        "source": {"type": "mysql", "dsn": dsn, "start": start, "include": ["chaos.items"]},
        "sinks": [sink],
        "flow": {"read_batch_rows": 500, "max_rows_in_flight": 5000, "placement": "spread"},  # stages killed alone
    }
    if exactly:  # each batch one transaction with its checkpoint, which the reader loads back from Kafka
        sink.update(delivery=EXACTLY_ONCE, checkpoint_topic=f"{topic}-checkpoints")
        spec["checkpoint"] = {"store": "kafka"}
    ray.get(controller.submit.remote(spec, {"CHAOS_PW": own.password}))

    def record() -> dict[str, Any]:
        return ray.get(controller.get.remote(name), timeout=30)

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

    faults = fault_plan(mode)
    restarts = 0  # of MariaDB: kill -9 and start in the first and every other one, a clean restart in the others
    try:
        for fault in faults:
            mark, wall = len(workload.expected), time.time()
            if fault == "kill -9 controller":
                pid = ray.get(controller.info.remote())["pid"]
                started = time.monotonic()
                os.kill(pid, signal.SIGKILL)
                wait_for(lambda p=pid: _answers_with_new_pid(controller, p), timeout=90, what="controller back")
            elif fault == "kill -9 controller, then reader":
                pid = ray.get(controller.info.remote())["pid"]
                epoch = record()["epoch"]
                started = time.monotonic()
                os.kill(pid, signal.SIGKILL)
                wait_for(lambda p=pid: _answers_with_new_pid(controller, p), timeout=90, what="controller back")
                loops = ray.get(controller.info.remote())["loops"]
                wait_for(lambda n=loops: ray.get(controller.info.remote())["loops"] > n, what="a reconcile loop")
                os.kill(actor_pid(f"dbus:{name}:reader"), signal.SIGKILL)
                wait_for(lambda e=epoch: flowing(e), timeout=90, what="recovery after killing the reader")
            elif fault == "topic refuses a batch":  # the broker rejects the writes of one batch, then accepts again
                epoch = record()["epoch"]
                started = time.monotonic()
                set_max_message_bytes(broker.bootstrap, topic, 100)
                try:
                    wait_for(lambda e=epoch: record()["epoch"] > e or record()["state"] == "failed", timeout=90,
                             what="the batch refused and the pipeline stopped")
                finally:
                    set_max_message_bytes(broker.bootstrap, topic, None)
                wait_for(lambda e=epoch: flowing(e), timeout=120, what="recovery after the refused batch")
            elif fault.startswith("kill -9 "):
                role = fault.removeprefix("kill -9 ")
                wait_for(lambda: delivered() > 0, what="rows flowing")
                epoch = record()["epoch"]
                pid = actor_pid(f"dbus:{name}:{role}")
                mark, wall = len(workload.expected), time.time()
                if exactly and role.startswith("writer"):  # the hardest moment: rows and checkpoint not committed
                    fault += " in txn"
                    kill_in_transaction(pid, broker.bootstrap, sink["checkpoint_topic"])
                else:
                    os.kill(pid, signal.SIGKILL)
                started = time.monotonic()
                wait_for(lambda e=epoch: flowing(e), timeout=90, what=f"recovery after killing the {role}")
            elif fault == "broker SIGSTOP 3s":
                os.kill(broker.pid, signal.SIGSTOP)
                time.sleep(3)
                before = delivered()
                os.kill(broker.pid, signal.SIGCONT)
                started = time.monotonic()
                wait_for(lambda b=before: delivered() > b, timeout=90, what="rows after the broker stall")
            elif fault == "MariaDB restart":
                crash = restarts % 2 == 0
                restarts += 1
                fault = "MariaDB kill -9+start" if crash else fault
                started = time.monotonic()
                own.restart(crash=crash)
                target = server_position()
                wait_for(lambda t=target: delivered_past(t), timeout=120,
                         what="rows written after the MariaDB restart")
            else:
                assert fault == "network drop 2s", fault
                started = time.monotonic()
                proxy.outage(2.0)
                target = server_position()
                wait_for(lambda t=target: delivered_past(t), timeout=90, what="rows written after the network drop")
            report.append((fault, time.monotonic() - started, wall, mark))
            if fault == "broker SIGSTOP 3s":
                time.sleep(1)
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
        ray.get(controller.remove.remote(name))
        ray.kill(controller, no_restart=True)
    finally:
        proxy.stop()

    messages = read_topic(broker.bootstrap, topic)
    got = [change for _, _, _, change in messages]
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
    for ts, _, _, change in sorted(messages):  # in the order they reached Kafka
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
    print(f"\n{'mode':<14} {'fault':<32} {'recovery s':>10} {'rows lost':>10} {'rows duplicated':>16}")
    print(f"{mode:<14} {'(before the first)':<32} {'':>10} {lost_after[0]:>10} {dup_after[0]:>16}")
    for i, (fault, seconds, _, _) in enumerate(report):
        print(f"{mode:<14} {fault:<32} {seconds:>10.1f} {lost_after[i + 1]:>10} {dup_after[i + 1]:>16}")
    hidden = f", records of aborted transactions in the log {log_counts(broker.bootstrap, topic)[1]}" \
        if exactly else ""
    print(f"{mode}: row changes written {len(expected)}, in Kafka {len(got)}, lost {len(missing)}, duplicated "
          f"{duplicates}, faults {len(report)}, workload transactions interrupted {workload.interrupted}, proxy "
          f"{proxy.stats()}{hidden}")
    assert len(report) == len(faults)
    assert not missing, f"{len(missing)} row changes lost, e.g. {sorted(missing)[:5]}"
    assert set(got) <= set(expected), "Kafka holds row changes nobody wrote"
    assert dict(first_seen) == dict(order), "per-key order broken"
    if exactly:
        assert duplicates == 0, f"exactly-once: {duplicates} row changes committed more than once"


def test_kafka_checkpoint_of_an_aborted_transaction_is_never_loaded(broker: Any) -> None:
    """The writer killed mid-transaction above: its checkpoint record is on the broker, the successor's
    init_transactions aborts it. The store must never resume from it (it would skip the aborted rows)."""
    topic = f"chaos-cp-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(topic, 1)])[topic].result(30)
    store = KafkaCheckpointStore("chaos-cp", broker.bootstrap, topic, transactional=True)
    producer = Producer({"bootstrap.servers": broker.bootstrap, "transactional.id": topic})
    producer.init_transactions(10)
    for n, end in ((1, "commit"), (2, "abort"), (3, "open"), (4, "commit"), (5, "abort")):
        producer.begin_transaction()
        producer.produce(topic, json.dumps({"source": {"next": n}}).encode(), b"chaos-cp")
        assert producer.flush(10) == 0
        if end == "commit":
            producer.commit_transaction(10)
        elif end == "abort":
            producer.abort_transaction(10)
        else:  # the writer dies with the transaction open; its successor fences and aborts it
            producer = Producer({"bootstrap.servers": broker.bootstrap, "transactional.id": topic})
            producer.init_transactions(10)
        assert store.load() == {"source": {"next": 1 if n < 4 else 4}}, f"after checkpoint {n} ({end})"


def _answers_with_new_pid(controller: Any, old: int) -> bool:
    try:
        return ray.get(controller.info.remote(), timeout=5)["pid"] != old
    except Exception:  # noqa: BLE001 - still restarting
        return False
