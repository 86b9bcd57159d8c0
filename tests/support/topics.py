"""Kafka topics as the tests read them, independently of the code under test: Kafka's murmur2 partitioner,
every message of a topic through a plain consumer, the checks that every mock row is there once and in key
order, and the committed and uncommitted records of a log by its transaction markers."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient

from dbus_ray.kafka import log as kafka_log
from tests.support.helpers import kill_when


def murmur2(data: bytes) -> int:
    """Kafka's Java murmur2 (what librdkafka's `murmur2_random` partitioner computes)."""
    m, r = 0x5BD1E995, 24
    length = len(data)
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    for i in range(length // 4):
        k = int.from_bytes(data[4 * i: 4 * i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = (h * m) & 0xFFFFFFFF
        h ^= k
    rest = length & 3
    tail = length & ~3
    if rest == 3:
        h ^= data[tail + 2] << 16
    if rest >= 2:
        h ^= data[tail + 1] << 8
    if rest >= 1:
        h ^= data[tail]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h


def partition_of(key: bytes, partitions: int) -> int:
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def partitions_of(bootstrap: str, topic: str) -> list[int]:
    metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)
    assert topic in metadata.topics, f"topic {topic} missing"
    return sorted(metadata.topics[topic].partitions)


def read_topic(bootstrap: str, topic: str, committed: bool = False, idle: float = 1.5,
               missing_ok: bool = False) -> list[Any]:
    """Every message of `topic` (all partitions, from the beginning) with assign(); read until every
    partition reached its end and nothing more came for `idle` seconds. With `missing_ok`, a topic that does
    not exist (yet) has no messages."""
    if missing_ok:
        meta = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10)
        if topic not in meta.topics or meta.topics[topic].error is not None:
            return []
    parts = partitions_of(bootstrap, topic)
    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": "dbus-test-reader", "enable.auto.commit": False,
        "enable.partition.eof": True, "isolation.level": "read_committed" if committed else "read_uncommitted",
    })
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
    out: list[Any] = []
    at_end: set[int] = set()
    last = time.monotonic()
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None:
                if len(at_end) == len(parts) and time.monotonic() - last > idle:
                    break
                continue
            if msg.error() is not None:
                assert msg.error().code() == KafkaError._PARTITION_EOF, msg.error()
                at_end.add(msg.partition())
                continue
            at_end.discard(msg.partition())
            last = time.monotonic()
            out.append(msg)
    finally:
        consumer.close()
    return out


def check_every_row(msgs: list[Any], total: int, partitions: int) -> dict[int, int]:
    """Every row 0..total-1 present; each key in one partition (murmur2), its rows in source order within
    that partition. Returns {row: times seen}."""
    seen: dict[int, int] = defaultdict(int)
    key_partition: dict[tuple[str, bytes], int] = {}
    per_key: dict[tuple[str, bytes], list[int]] = defaultdict(list)
    for msg in msgs:
        value = json.loads(msg.value())
        row = value["pos"]["offset"]
        seen[row] += 1
        k = (msg.topic(), msg.key())
        assert key_partition.setdefault(k, msg.partition()) == msg.partition(), f"key {k} in two partitions"
        assert msg.partition() == partition_of(msg.key(), partitions)
        per_key[k].append(row)
    assert sorted(seen) == list(range(total)), f"missing rows: {sorted(set(range(total)) - set(seen))[:10]}"
    for k, rows in per_key.items():
        first_seen = list(dict.fromkeys(rows))  # duplicates of a resume come again later, in order
        assert first_seen == sorted(first_seen), f"key {k} out of order"
    return seen


def log_counts(bootstrap: str, topic: str) -> tuple[int, int]:
    """(committed, uncommitted) data records in `topic`'s log by its transaction markers; (0, 0) while there
    is no such topic or its partitions have no leader yet (just created)."""
    committed = hidden = 0
    try:
        partitions = kafka_log.partitions_of(bootstrap, topic)
        logs = [kafka_log.record_batches(bootstrap, topic, partition) for partition in partitions]
    except kafka_log.KafkaLogError:
        return 0, 0
    for batches in logs:
        visible = kafka_log.committed_offsets(batches)
        for batch in batches:
            if not batch.control:
                n = sum(1 for o in batch.offsets if o in visible)
                committed += n
                hidden += len(batch.offsets) - n
    return committed, hidden


def kill_mid_transaction(actor: str, bootstrap: str, topic: str, before: int = 0, committed: int = 0) -> int:
    """kill -9 `actor` (a writer) while its open transaction has rows in `topic`'s log (more uncommitted rows
    than `before`, at least `committed` committed ones). Returns the uncommitted rows in the log then."""
    def check() -> int:
        done, hidden = log_counts(bootstrap, topic)
        return hidden if hidden > before and done >= committed else 0

    return kill_when(actor, check, f"an open transaction with rows in {topic}")
