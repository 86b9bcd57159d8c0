"""Three Apache Kafka brokers in one KRaft quorum (`dbus_ray.devstack.kafka_cluster`), topics with replication
factor 3 and `min.insync.replicas=2`, the kafka sink producing with `acks=all`: two mock pipelines stream into
it at once, one `exactly_once` (checkpoint in Kafka), one `at_least_once`.

- kill -9 of the broker leading a partition mid-stream: delivery goes on with the two others; no row lost,
  none duplicated under exactly-once (read back with `isolation.level=read_committed`);
- two brokers down (no ISR of two, no controller quorum): the writers block, back-pressure stops the readers
  (`rows_in_flight` stays within `max_rows_in_flight`), the lag grows in the pipelines' status; brokers back:
  caught up, nothing lost.

Times to recover are printed (`-s`). Runs in its own pytest process (`make test` does so): it starts its own
Ray and three broker JVMs (-Xmx384m each)."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from dbus_ray.config import parse_config
from dbus_ray.devstack.kafka_cluster import KafkaCluster
from dbus_ray.pipeline import Pipeline
from tests.support.helpers import wait_for

PARTITIONS = 3
MAX_IN_FLIGHT = 2000
RATE = 400  # rows per second per pipeline


@pytest.fixture(scope="module")
def kafka() -> Iterator[KafkaCluster]:
    cluster = KafkaCluster(3, heap="384m").start()
    print(f"\nthree-broker KRaft quorum (Kafka {cluster.version}) up in {cluster.start_seconds:.1f} s")
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def ray_local() -> Iterator[None]:
    assert not ray.is_initialized(), "tests/cluster must run in a pytest process of its own (see Makefile)"
    ray.init(address="local", num_cpus=2, include_dashboard=False, namespace="dbus",
             object_store_memory=200 * 1024**2)  # its own Ray, whatever the last `ray start` here left
    yield
    ray.shutdown()


def create_topics(bootstrap: str, *names: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    new = [NewTopic(n, PARTITIONS, 3, config={"min.insync.replicas": "2"}) for n in names]
    for future in admin.create_topics(new).values():
        future.result(30)
    for node in bootstrap.split(","):  # every broker's metadata has them (not only the one that created them)
        one = AdminClient({"bootstrap.servers": node})
        wait_for(lambda: set(names) <= set(one.list_topics(timeout=10).topics), timeout=30,  # noqa: B023
                 what=f"topics {names} known to {node}")
    topics = admin.list_topics(timeout=10).topics
    for name in names:
        assert [len(p.replicas) for p in topics[name].partitions.values()] == [3] * PARTITIONS


def leader_of(bootstrap: str, topic: str, partition: int) -> int:
    return AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics[topic].partitions[
        partition].leader


def start_pipeline(kafka: KafkaCluster, tmp_path: Path, name: str, delivery: str) -> Pipeline:
    raw = {
        "name": name,
        "source": {"type": "mock", "rows": None, "rate": RATE, "keys": 300},
        "sinks": [{"name": "k", "type": "kafka", "bootstrap": kafka.bootstrap, "topic": name, "delivery": delivery,
                   "timeout_s": 120, "delivery_timeout_ms": 180_000}],
        "flow": {"read_batch_rows": 100, "sink_batch_rows": 500, "max_rows_in_flight": MAX_IN_FLIGHT},
        "checkpoint": {"store": "kafka" if delivery == "exactly_once" else "file"},
        "data_dir": str(tmp_path / "data"),
    }
    pipeline = Pipeline(parse_config(raw, f"{name}.yaml", {}))
    pipeline.start()
    return pipeline


def read_rows(bootstrap: str, topic: str, committed: bool) -> Counter[int]:
    """How often each mock row number (its `pos.offset`) is in the topic, read to the end of every partition."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "dbus-cluster-reader",
                         "enable.auto.commit": False, "enable.partition.eof": True,
                         "isolation.level": "read_committed" if committed else "read_uncommitted"})
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
    seen: Counter[int] = Counter()
    at_end: set[int] = set()
    deadline = time.monotonic() + 90
    try:
        while len(at_end) < PARTITIONS:
            assert time.monotonic() < deadline, f"topic {topic}: partitions {at_end} of {PARTITIONS} read in 90 s"
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error() is not None:
                assert msg.error().code() == KafkaError._PARTITION_EOF, msg.error()
                at_end.add(msg.partition())
                continue
            seen[json.loads(msg.value())["pos"]["offset"]] += 1
    finally:
        consumer.close()
    return seen


def test_broker_loss_and_outage(kafka: KafkaCluster, ray_local: None, tmp_path: Path) -> None:
    names = {"exactly_once": "rf3-eos", "at_least_once": "rf3-alo"}
    create_topics(kafka.bootstrap, *names.values())
    pipes = {d: start_pipeline(kafka, tmp_path, n, d) for d, n in names.items()}

    last: dict[str, Any] = {}

    def status() -> dict[str, dict[str, Any]]:
        out = {d: p.status() for d, p in pipes.items()}
        last.update({d: {k: s[k] for k in ("rows_read", "rows_delivered", "rows_in_flight", "lag_seconds")}
                     for d, s in out.items()})
        for d, s in out.items():
            assert s["state"] == "running" and s["error"] is None, f"{d}: {s['state']}: {s['error']}"
            assert s["rows_in_flight"] <= MAX_IN_FLIGHT, f"{d}: {s['rows_in_flight']} rows in flight"
        return out

    def delivered() -> dict[str, int]:
        return {d: s["rows_delivered"] for d, s in status().items()}

    def all_past(marks: dict[str, int], more: int) -> bool:
        return all(n >= marks[d] + more for d, n in delivered().items())

    times: dict[str, float] = {}
    lags: dict[str, float] = {}
    try:
        wait_for(lambda: all_past({d: 0 for d in pipes}, 2 * RATE), timeout=60, what="rows flowing")

        # ---- one broker: kill -9 of the leader of a partition
        victim = leader_of(kafka.bootstrap, names["exactly_once"], 0)
        mark = delivered()
        t0 = time.monotonic()
        kafka.kill(victim)
        others = {n.node_id for n in kafka.nodes} - {victim}
        times["one down: broker fenced (metadata without it)"] = kafka.wait_registered(others, 30)
        wait_for(lambda: all_past(mark, 2 * RATE), timeout=60, what="delivery going on with one broker down")
        times["one down: both pipelines delivered 2 s of rows more"] = time.monotonic() - t0
        moved = leader_of(kafka.bootstrap, names["exactly_once"], 0)
        assert moved in others, f"partition 0 still led by {moved}"
        t0 = time.monotonic()
        kafka.restart(victim)
        times["restarted broker back in every ISR"] = kafka.wait_in_sync(120)

        # ---- two brokers down: no ISR of two, no quorum
        down = sorted(others)
        for node_id in down:
            kafka.kill(node_id)
        t0 = time.monotonic()
        samples: list[tuple[float, dict[str, tuple[int, int]]]] = []

        def reader_stopped() -> bool:
            """Nothing read nor delivered for 3 s (the blocked writer holds back the whole chain)."""
            now = {d: (s["rows_read"], s["rows_delivered"]) for d, s in status().items()}
            samples.append((time.monotonic(), now))
            return any(now == then for at, then in samples if at <= samples[-1][0] - 3)

        wait_for(reader_stopped, timeout=60, every=0.5, what="the readers held back by the blocked writers")
        times["two down: readers stopped by back-pressure"] = time.monotonic() - t0
        held = status()
        stalled = {d: s["rows_delivered"] for d, s in held.items()}
        wait_for(lambda: all(s["lag_seconds"] > 8 for s in status().values()), timeout=60,
                 what="the lag growing in the pipelines' status")
        during = status()
        for d, s in during.items():
            assert s["rows_delivered"] == stalled[d], f"{d}: rows delivered with two brokers down"
            assert s["rows_read"] == held[d]["rows_read"], f"{d}: the reader went on reading"
        lags.update({d: round(s["lag_seconds"], 1) for d, s in during.items()})
        t0 = time.monotonic()
        for node_id in down:
            kafka.restart(node_id)
        kafka.wait_registered({n.node_id for n in kafka.nodes}, 120)
        times["two back: brokers registered"] = time.monotonic() - t0
        wait_for(lambda: all(n > stalled[d] for d, n in delivered().items()), timeout=120,
                 what="delivery again after the outage")
        times["two back: delivering again"] = time.monotonic() - t0
        wait_for(lambda: all(s["lag_seconds"] < 2 and s["rows_in_flight"] < MAX_IN_FLIGHT / 2
                             for s in status().values()), timeout=120, what="caught up after the outage")
        times["two back: caught up (lag < 2 s)"] = time.monotonic() - t0
        finals = {d: p.stop() for d, p in pipes.items()}  # delivers what is in flight, final checkpoint
    except BaseException:
        print(f"\nlast status: {last}")
        raise
    finally:
        for p in pipes.values():
            p.kill()

    print("\nthree-broker cluster, recovery times:")
    for what, seconds in times.items():
        print(f"  {what}: {seconds:.1f} s")
    print(f"  lag at the end of the outage: {lags}")
    kafka.wait_in_sync(120)
    for d, final in finals.items():
        assert final["error"] is None, f"{d}: {final['error']}"
        total = final["checkpoint"]["source"]["next"]
        seen = read_rows(kafka.bootstrap, names[d], committed=d == "exactly_once")
        missing = sorted(set(range(total)) - set(seen))
        assert not missing, f"{d}: {len(missing)} rows lost, first {missing[:10]}"
        duplicates = sum(n - 1 for n in seen.values())
        print(f"  {d}: {total} rows, none lost, {duplicates} duplicates")
        if d == "exactly_once":
            assert duplicates == 0 and max(seen) == total - 1
