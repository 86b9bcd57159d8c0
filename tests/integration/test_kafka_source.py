"""Source `kafka` through Ray: every message of every partition once and in partition order, positions in
our checkpoint (resume reads only what is new), and a mirror to a second broker keeping keys, headers,
timestamps and per-partition order (sink `kafka` with `format: raw`)."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from dbus_ray.checkpoints import FileCheckpointStore
from dbus_ray.config import build, parse_config
from dbus_ray.devstack import Broker
from dbus_ray.kafka.checkpoints import store_for
from dbus_ray.pipeline import Pipeline, run_pipeline
from dbus_ray.sinks.kafka import KafkaOptions, KafkaSink
from dbus_ray.sources.kafka import KafkaSource, KafkaSourceOptions
from tests.support.helpers import drain, kill_when
from tests.support.topics import kill_mid_transaction

pytestmark = pytest.mark.usefixtures("ray_session")
BASE_TS = 1_764_062_400_000


def create(bootstrap: str, topics: dict[str, int]) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(t, n) for t, n in topics.items()]).values():
        future.result(30)


def produce(bootstrap: str, topic: str, start: int, count: int, partitions: int, pad: int = 0) -> None:
    """Messages `start`..`start+count-1` (value `<topic>-<i>` then `pad` bytes), partition i % partitions."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for i in range(start, start + count):
        headers = [("trace", f"t{i}".encode()), ("dup", b"1"), ("dup", b"2")]
        key = None if i % 11 == 0 else f"k{i % 17}".encode()
        producer.produce(topic, f"{topic}-{i}".encode() + b"x" * pad, key, partition=i % partitions,
                         headers=headers, timestamp=BASE_TS + i)
    assert producer.flush(30) == 0


def consume_all(bootstrap: str, topic: str, partitions: int, expected: int,
                committed: bool = True) -> dict[int, list[tuple]]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "check", "enable.auto.commit": False,
                         "enable.partition.eof": True,
                         "isolation.level": "read_committed" if committed else "read_uncommitted"})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    out: dict[int, list[tuple]] = defaultdict(list)
    eof: set[int] = set()
    try:
        for _ in range(300):
            for msg in consumer.consume(1000, 0.2):
                if msg.error():
                    eof.add(msg.partition())
                    continue
                eof.discard(msg.partition())
                out[msg.partition()].append((msg.key(), msg.value(), msg.headers() or [], msg.timestamp()[1]))
            if sum(map(len, out.values())) >= expected and len(eof) == partitions:
                break
    finally:
        consumer.close()
    return out


def expected_messages(topic: str, count: int, partitions: int, pad: int = 0) -> dict[int, list[tuple]]:
    """What `produce` sent to each partition, in the order it sent them."""
    out: dict[int, list[tuple]] = defaultdict(list)
    for i in range(count):
        key = None if i % 11 == 0 else f"k{i % 17}".encode()
        out[i % partitions].append((key, f"{topic}-{i}".encode() + b"x" * pad,
                                    [("trace", f"t{i}".encode()), ("dup", b"1"), ("dup", b"2")], BASE_TS + i))
    return out


def source_messages(bootstrap: str, topic: str, count: int, partitions: int, pad: int = 0) -> dict[int, list[tuple]]:
    """Each partition of the source topic as Kafka's own consumer reads it: the mirror's expected content.
    The test's producer is a plain one (retries, no idempotence), so a partition may hold what it sent in
    another order; it holds each message exactly once."""
    source = consume_all(bootstrap, topic, partitions, count)
    sent = expected_messages(topic, count, partitions, pad)
    for partition in range(partitions):
        assert sorted(source[partition], key=repr) == sorted(sent[partition], key=repr), f"source {partition}"
    return source


def test_kafka_source_reads_every_partition_once_and_resumes(tmp_path: Path, broker: Broker) -> None:
    create(broker.bootstrap, {"ksrc.a": 3, "ksrc.b": 2, "other": 1})
    produce(broker.bootstrap, "ksrc.a", 0, 900, 3)
    produce(broker.bootstrap, "ksrc.b", 0, 400, 2)
    produce(broker.bootstrap, "other", 0, 50, 1)
    out = tmp_path / "out.jsonl"
    raw = {"name": "ksrc", "source": {"type": "kafka", "bootstrap": broker.bootstrap, "topic_regex": r"ksrc\..*"},
           "sinks": [{"name": "f", "type": "jsonl", "path": str(out)}], "data_dir": str(tmp_path / "data"),
           "flow": {"read_batch_rows": 250, "max_rows_in_flight": 1000}}
    cfg = parse_config(raw, "ksrc.yaml", {})
    final = run_pipeline(cfg, until_caught_up=True, interval=0.05)
    assert final["state"] == "stopped" and final["rows_delivered"] == 1300
    assert FileCheckpointStore(cfg.pipeline_dir).load()["source"] == {
        "offsets": {"ksrc.a": {"0": 300, "1": 300, "2": 300}, "ksrc.b": {"0": 200, "1": 200}}}
    produce(broker.bootstrap, "ksrc.a", 900, 90, 3)
    second = run_pipeline(cfg, until_caught_up=True, interval=0.05)
    assert second["rows_delivered"] == 90
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    by_partition: dict[tuple[str, str], list[int]] = defaultdict(list)
    for r in rows:
        assert r["after"]["topic"] == r["db"] and str(r["after"]["partition"]) == r["table"]
        by_partition[(r["db"], r["table"])].append(r["after"]["offset"])
    assert {k: len(v) for k, v in by_partition.items()} == {
        ("ksrc.a", "0"): 330, ("ksrc.a", "1"): 330, ("ksrc.a", "2"): 330, ("ksrc.b", "0"): 200, ("ksrc.b", "1"): 200}
    for offsets in by_partition.values():
        assert offsets == list(range(len(offsets))), "a message is missing, repeated or out of order"


def test_kafka_source_config_errors() -> None:
    from dbus_ray.config import ConfigError

    for source, message in [
        ({"bootstrap": "h:1"}, "source.topics: give either topics or topic_regex"),
        ({"bootstrap": "h:1", "topic_regex": "("}, "source.topic_regex: bad regular expression '('"),
        ({"bootstrap": "h:1", "topics": ["a"], "consumer": {"enable.auto.commit": True}},
         "source.consumer.enable.auto.commit: is set by the source"),
    ]:
        raw = {"name": "k", "source": {"type": "kafka", **source}, "sinks": [{"name": "n", "type": "null"}]}
        with pytest.raises(ConfigError) as info:
            parse_config(raw, "k.yaml", {})
        assert str(info.value).startswith(f"k.yaml: {message}"), str(info.value)


@pytest.fixture(scope="module")
def second_broker() -> Iterator[Broker]:
    """A second Apache Kafka broker, the mirror's target (one JVM for the module: each test uses its topics)."""
    server = Broker(heap="256m").start()
    try:
        yield server
    finally:
        server.stop()


def test_mirror_between_two_brokers_keeps_keys_headers_timestamps_and_order(
    tmp_path: Path, broker: Broker, second_broker: Broker
) -> None:
    create(broker.bootstrap, {"mirror.orders": 4})
    produce(broker.bootstrap, "mirror.orders", 0, 2000, 4)
    raw: dict[str, Any] = {
        "name": "mirror",
        "source": {"type": "kafka", "bootstrap": broker.bootstrap, "topics": ["mirror.orders"]},
        "sinks": [{"name": "dr", "type": "kafka", "bootstrap": second_broker.bootstrap, "topic": "{db}",
                   "format": "raw", "partitions": 4}],
        "data_dir": str(tmp_path / "data"),
        "flow": {"read_batch_rows": 300, "max_rows_in_flight": 1200},
    }
    cfg = parse_config(raw, "mirror.yaml", {})
    final = run_pipeline(cfg, until_caught_up=True, interval=0.05)
    assert final["state"] == "stopped" and final["error"] is None and final["rows_delivered"] == 2000
    produce(broker.bootstrap, "mirror.orders", 2000, 200, 4)
    assert run_pipeline(cfg, until_caught_up=True, interval=0.05)["rows_delivered"] == 200
    got = consume_all(second_broker.bootstrap, "mirror.orders", 4, 2200)
    want = source_messages(broker.bootstrap, "mirror.orders", 2200, 4)
    for partition in range(4):
        assert got[partition] == want[partition], f"partition {partition}"


def test_exactly_once_mirror_survives_kill_9_of_its_writer(
    tmp_path: Path, broker: Broker, second_broker: Broker
) -> None:
    """A mirror with `delivery: exactly_once` (source offsets committed with the rows in the target's
    `__dbus_checkpoints`): kill -9 its writer while a transaction's messages are on the target, run again;
    judged by a read_committed consumer of the target, every source message is there exactly once with its
    key, headers and timestamp, each partition in order."""
    total, topic = 12_000, "mirror.eos"
    create(broker.bootstrap, {topic: 4})
    produce(broker.bootstrap, topic, 0, total, 4, pad=2000)  # ~2 KB messages: a transaction takes a while
    raw: dict[str, Any] = {
        "name": "mirror-eos",
        "source": {"type": "kafka", "bootstrap": broker.bootstrap, "topics": [topic]},
        "sinks": [{"name": "dr", "type": "kafka", "bootstrap": second_broker.bootstrap, "topic": "{db}",
                   "format": "raw", "partitions": 4, "delivery": "exactly_once"}],
        "checkpoint": {"store": "kafka"},
        "data_dir": str(tmp_path / "data"),
        "flow": {"read_batch_rows": 3000, "sink_batch_rows": 3000, "max_rows_in_flight": 6000,
                 "placement": "spread"},  # the writer is killed alone
    }
    cfg = parse_config(raw, "mirror-eos.yaml", {})
    pipeline = Pipeline(cfg)
    pipeline.start()
    try:
        hidden = kill_mid_transaction("dbus:mirror-eos:writer:dr", second_broker.bootstrap, topic,
                                      committed=total // 4)
    finally:
        pipeline.kill()
    saved = store_for("mirror-eos", cfg).load()
    resumed_from = sum(int(n) for n in (saved or {}).get("source", {}).get("offsets", {}).get(topic, {}).values())
    assert hidden > 0 and total // 4 <= resumed_from < total
    final = run_pipeline(cfg, until_caught_up=True, interval=0.05)
    assert final["error"] is None and final["rows_delivered"] == total - resumed_from
    assert store_for("mirror-eos", cfg).load()["source"]["offsets"][topic] == {str(p): total // 4 for p in range(4)}
    got = consume_all(second_broker.bootstrap, topic, 4, total)
    plain = consume_all(second_broker.bootstrap, topic, 4, total + hidden, committed=False)
    assert sum(map(len, plain.values())) >= total + hidden  # the aborted transaction is in the log
    print(f"\nexactly-once mirror, writer killed after {resumed_from} committed: {hidden} messages of the aborted "
          f"transaction on the target, hidden by the broker; a read_uncommitted read sees "
          f"{sum(map(len, plain.values()))}")
    want = source_messages(broker.bootstrap, topic, total, 4, pad=2000)
    for partition in range(4):
        assert got[partition] == want[partition], f"partition {partition}: missing, repeated or out of order"


def test_at_least_once_mirror_survives_kill_9_of_its_writer(
    tmp_path: Path, broker: Broker, second_broker: Broker
) -> None:
    """The mirror in the default `at_least_once`: kill -9 its writer once the target holds messages past
    the last checkpoint, run again: nothing missing, each partition's first copies in order, duplicates
    only of messages after the checkpoint."""
    total, topic = 12_000, "mirror.alo"
    create(broker.bootstrap, {topic: 4})
    produce(broker.bootstrap, topic, 0, total, 4, pad=2000)
    raw: dict[str, Any] = {
        "name": "mirror-alo",
        "source": {"type": "kafka", "bootstrap": broker.bootstrap, "topics": [topic]},
        "sinks": [{"name": "dr", "type": "kafka", "bootstrap": second_broker.bootstrap, "topic": "{db}",
                   "format": "raw", "partitions": 4}],
        "data_dir": str(tmp_path / "data"),
        "checkpoint": {"every_ms": 200},
        "flow": {"read_batch_rows": 1000, "sink_batch_rows": 1000, "max_rows_in_flight": 4000,
                 "placement": "spread"},  # the writer is killed alone
    }
    cfg = parse_config(raw, "mirror-alo.yaml", {})
    watcher = Consumer({"bootstrap.servers": second_broker.bootstrap, "group.id": "watch"})

    def on_target() -> int:
        """Messages on the target by its high watermarks (cheap: the writer is frozen while this runs)."""
        if topic not in watcher.list_topics(timeout=5).topics:  # asking for it by name would auto-create it
            return 0
        try:
            return sum(watcher.get_watermark_offsets(TopicPartition(topic, p), timeout=5)[1] for p in range(4))
        except KafkaException:  # just created: no leader yet
            return 0

    pipeline = Pipeline(cfg)
    pipeline.start()
    try:
        kill_when("dbus:mirror-alo:writer:dr", lambda: on_target() >= total // 3,
                  f"{total // 3} messages on the target")
    finally:
        pipeline.kill()
        watcher.close()
    saved = FileCheckpointStore(cfg.pipeline_dir).load()
    resume = {int(p): n for p, n in ((saved or {}).get("source") or {}).get("offsets", {}).get(topic, {}).items()}
    assert sum(resume.values()) < total
    final = run_pipeline(cfg, until_caught_up=True, interval=0.05)
    assert final["error"] is None and final["rows_delivered"] == total - sum(resume.values())
    got = consume_all(second_broker.bootstrap, topic, 4, total)
    want = source_messages(broker.bootstrap, topic, total, 4, pad=2000)
    duplicates = 0
    for partition in range(4):
        first, seen = [], set()
        for message in got[partition]:  # each message's value holds its number: the copies are recognisable
            if message[1] in seen:
                duplicates += 1
                index = want[partition].index(message)  # its offset in the source partition
                assert index >= resume.get(partition, 0), f"message {index} of {partition} came again"
            else:
                seen.add(message[1])
                first.append(message)
        assert first == want[partition], f"partition {partition}: a message is missing or out of order"
    print(f"\nat-least-once mirror, writer killed with checkpoint {sum(resume.values())}: {duplicates} duplicates")


def test_mirror_dead_letters_an_oversize_message_with_its_source_position(broker: Broker) -> None:
    """A mirrored message over the target producer's `message.max.bytes` goes to the dead-letter topic with
    its source topic, partition and offset; the others are mirrored in order."""
    create(broker.bootstrap, {"mirror.big": 1})
    producer = Producer({"bootstrap.servers": broker.bootstrap})
    for i, size in enumerate([10, 5000, 10]):
        producer.produce("mirror.big", b"v" * size, f"k{i}".encode(), partition=0, headers=[("h", b"1")],
                         timestamp=BASE_TS + i)
    assert producer.flush(10) == 0
    source = KafkaSource("mb", build(KafkaSourceOptions, {"bootstrap": broker.bootstrap, "topics": ["mirror.big"]},
                                     "source"))
    source.open(None)
    batches = drain(source)
    source.close()
    sink = KafkaSink("mb", "dr", build(KafkaOptions, {
        "bootstrap": broker.bootstrap, "topic": "mirrored.big", "format": "raw", "partitions": 1,
        "producer": {"message.max.bytes": 2000}, "on_oversize": "dead_letter", "dead_letter_topic": "mirror-dead",
    }, "sinks[0]"))
    sink.open()
    for batch in batches:
        sink.write(batch)
    sink.close()
    got = consume_all(broker.bootstrap, "mirrored.big", 1, 2)[0]
    assert [(key, len(value), ts) for key, value, _, ts in got] == [(b"k0", 10, BASE_TS), (b"k2", 10, BASE_TS + 2)]
    [(key, value, headers, _)] = consume_all(broker.bootstrap, "mirror-dead", 1, 1)[0]
    record = json.loads(value)
    assert key == b"k1" and ("dbus.reason", b"oversize") in headers and ("h", b"1") in headers
    assert record["position"] == {"topic": "mirror.big", "partition": 0, "offset": 1}
    assert record["table"] == "mirror.big/0" and record["key"] == "k1" and record["payload_bytes"] == 5000
    assert record["topic"] == "mirrored.big" and record["payload_truncated"] is True
