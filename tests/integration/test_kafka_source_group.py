"""Source `kafka` with `group` (consumer-group membership) and `commit_offsets`, judged by Kafka's own tools:
the group's members and assignments (`describe_consumer_groups`), its committed offsets
(`list_consumer_group_offsets`) against the partitions' end offsets, and a plain librdkafka consumer joining
the group mid-stream."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from dbus_ray.checkpoints import FileCheckpointStore
from dbus_ray.config import parse_config
from dbus_ray.devstack import Broker
from dbus_ray.pipeline import Pipeline, run_pipeline
from tests.integration.test_kafka_source import create
from tests.support.helpers import wait_for

pytestmark = pytest.mark.usefixtures("ray_session")


def produce(bootstrap: str, topic: str, start: int, count: int, partitions: int = 4) -> None:
    """Messages `start`..`start+count-1` (value `m<i>`), message i to partition i % partitions."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for i in range(start, start + count):
        producer.produce(topic, f"m{i}".encode(), partition=i % partitions)
    assert producer.flush(30) == 0


def config(tmp_path: Path, name: str, bootstrap: str, topic: str, group: str, commit: bool = True) -> Any:
    raw = {"name": name,
           "source": {"type": "kafka", "bootstrap": bootstrap, "topics": [topic], "group": group,
                      "commit_offsets": commit, "consumer": {"client.id": name}},
           "sinks": [{"name": "f", "type": "jsonl", "path": str(tmp_path / f"{name}.jsonl")}],
           "data_dir": str(tmp_path / name), "checkpoint": {"every_ms": 100},
           "flow": {"read_batch_rows": 200, "max_rows_in_flight": 800}}
    return parse_config(raw, f"{name}.yaml", {})


def delivered(tmp_path: Path, name: str) -> dict[int, list[int]]:
    """The offsets a pipeline's jsonl sink holds, by partition, in the order written."""
    path = tmp_path / f"{name}.jsonl"
    out: dict[int, list[int]] = defaultdict(list)
    for line in path.read_text().splitlines() if path.exists() else []:
        row = json.loads(line)
        out[row["after"]["partition"]].append(row["after"]["offset"])
    return out


def members(admin: AdminClient, group: str) -> dict[str, set[int]]:
    """Kafka's view of the group: each member's client id and its partitions ({} unless the group is stable)."""
    description = admin.describe_consumer_groups([group])[group].result(10)
    if str(description.state).split(".")[-1] != "STABLE":
        return {}
    return {m.client_id: {tp.partition for tp in m.assignment.topic_partitions} for m in description.members}


def committed(admin: AdminClient, group: str) -> dict[int, int]:
    """The group's committed offsets (partition -> next offset), as Kafka reports them."""
    result = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group].result(10)
    return {tp.partition: tp.offset for tp in result.topic_partitions}


def ends(bootstrap: str, topic: str, partitions: int = 4) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "ends"})
    try:
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions)}
    finally:
        consumer.close()


def test_two_pipelines_of_one_group_split_the_partitions(tmp_path: Path, broker: Broker) -> None:
    """Two pipelines with the same `group` on a 4-partition topic: Kafka gives each 2 partitions, each
    delivers exactly its partitions' messages, every one once and in partition order."""
    topic, group, total = "kgroup.split", "kg-split", 4000
    create(broker.bootstrap, {topic: 4})
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    a = Pipeline(config(tmp_path, "kg-a", broker.bootstrap, topic, group))
    b = Pipeline(config(tmp_path, "kg-b", broker.bootstrap, topic, group))
    a.start()
    b.start()
    try:
        split = wait_for(lambda: (m := members(admin, group)) and len(m) == 2 and all(len(p) == 2 for p in m.values())
                         and m, timeout=60, what="a stable group of two members with two partitions each")
        produce(broker.bootstrap, topic, 0, total)
        wait_for(lambda: sum(s["rows_delivered"] for s in (a.status(), b.status())) >= total
                 and a.status()["caught_up"] and b.status()["caught_up"], timeout=60, what="both caught up")
        assert members(admin, group) == split  # no rebalance meanwhile
    finally:
        final = [a.stop(), b.stop()]
    assert [(f["state"], f["error"]) for f in final] == [("stopped", None)] * 2
    assert split["kg-a"] | split["kg-b"] == {0, 1, 2, 3}
    for name in ("kg-a", "kg-b"):
        got = delivered(tmp_path, name)
        assert set(got) == split[name], f"{name} delivered partitions {set(got)}, Kafka gave it {split[name]}"
        for partition, offsets in got.items():
            assert offsets == list(range(total // 4)), f"{name} partition {partition}: missing, repeated or reordered"
    assert committed(admin, group) == ends(broker.bootstrap, topic)


def test_committed_offsets_are_the_delivered_ones(tmp_path: Path, broker: Broker) -> None:
    """`commit_offsets`: after a run until caught up, Kafka's committed offsets of the group are the end
    offsets; a second run after more messages moves them to the new ends. Without a checkpoint entry, a
    pipeline starts at the group's committed offset."""
    topic, group = "kgroup.commit", "kg-commit"
    create(broker.bootstrap, {topic: 4})
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    produce(broker.bootstrap, topic, 0, 2000)
    cfg = config(tmp_path, "kg-commit", broker.bootstrap, topic, group)
    assert run_pipeline(cfg, until_caught_up=True, interval=0.05)["rows_delivered"] == 2000
    assert committed(admin, group) == ends(broker.bootstrap, topic) == {p: 500 for p in range(4)}
    produce(broker.bootstrap, topic, 2000, 400)
    assert run_pipeline(cfg, until_caught_up=True, interval=0.05)["rows_delivered"] == 400
    assert committed(admin, group) == {p: 600 for p in range(4)}
    produce(broker.bootstrap, topic, 2400, 40)
    fresh = config(tmp_path, "kg-fresh", broker.bootstrap, topic, group)  # no checkpoint: the group's offsets
    assert run_pipeline(fresh, until_caught_up=True, interval=0.05)["rows_delivered"] == 40
    assert {p: o[0] for p, o in delivered(tmp_path, "kg-fresh").items()} == {p: 600 for p in range(4)}
    assert committed(admin, group) == {p: 610 for p in range(4)}


def test_a_member_joining_mid_stream_takes_partitions_and_nothing_is_lost(tmp_path: Path, broker: Broker) -> None:
    """A pipeline reads a 4-partition topic alone; a plain librdkafka consumer joins its group while
    messages keep coming: Kafka revokes two partitions from the pipeline and gives them to the newcomer,
    which starts at the offsets the pipeline committed. Both outputs together hold every message, each
    output's messages of a partition in order; the pipeline keeps no offset of the partitions it lost."""
    topic, group, total = "kgroup.rebalance", "kg-rebalance", 0
    create(broker.bootstrap, {topic: 4})
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    produce(broker.bootstrap, topic, 0, 2000)
    cfg = config(tmp_path, "kg-first", broker.bootstrap, topic, group)
    pipeline = Pipeline(cfg)
    pipeline.start()
    other: dict[int, list[int]] = defaultdict(list)
    newcomer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group, "client.id": "newcomer",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    try:
        wait_for(lambda: pipeline.status()["rows_delivered"] >= 1000, timeout=60, what="the pipeline delivering")
        newcomer.subscribe([topic])
        produced, deadline, split, seen = 2000, time.monotonic() + 60, {}, []
        while time.monotonic() < deadline:
            for msg in newcomer.consume(500, 0.1):
                if msg.error() is None:
                    other[msg.partition()].append(msg.offset())
            now = members(admin, group)
            if now and now not in seen:
                seen.append(now)
            if not split and len(now) == 2 and produced >= 4000:  # messages came while the group rebalanced
                split, total = now, produced + 2000
                produce(broker.bootstrap, topic, produced, 2000)  # and after: the newcomer's share is its own
                produced = total
            elif not split:
                produce(broker.bootstrap, topic, produced, 100)
                produced += 100
            mine = delivered(tmp_path, "kg-first")
            if split and pipeline.status()["caught_up"] and all(
                    set(mine[p]) | set(other[p]) >= set(range(total // 4)) for p in range(4)):
                break
        else:
            raise AssertionError(f"not every message delivered by the pipeline or read by the newcomer: {seen}")
    finally:
        final = pipeline.stop()
        newcomer.close()
    assert final["state"] == "stopped" and final["error"] is None
    print(f"\ngroup assignments seen: {seen}")
    assert sorted(map(len, split.values())) == [2, 2] and split["newcomer"] == {p for p, o in other.items() if o}
    kept = split["kg-first"]
    assert all(other[p][0] > 0 for p in split["newcomer"])  # at the pipeline's commits, not at `earliest`
    saved = FileCheckpointStore(cfg.pipeline_dir).load()["source"]["offsets"][topic]
    assert {int(p) for p in saved} == kept and all(saved[str(p)] == total // 4 for p in kept)
    mine = delivered(tmp_path, "kg-first")
    for partition in range(4):
        for offsets in (mine[partition], other[partition]):
            assert offsets == sorted(set(offsets)), f"partition {partition}: repeated or out of order"
        assert set(mine[partition]) | set(other[partition]) == set(range(total // 4)), f"partition {partition}"
        if partition in kept:
            assert mine[partition] == list(range(total // 4))
    moved = sum(len(other[p]) for p in split["newcomer"])
    again = sum(len(set(mine[p]) & set(other[p])) for p in split["newcomer"])
    print(f"\nrebalance: the newcomer took partitions {sorted(split['newcomer'])} and read {moved} messages, "
          f"{again} of them delivered by the pipeline too (read before the revoke, after its last commit)")
