"""Sink `kafka` against a real Apache Kafka broker (session fixture `broker`): messages, keys, headers and
murmur2 partitioning; the mock pipeline through Ray into Kafka with every row present and per-key order;
resume after a clean stop and after a crash (duplicates only of unacknowledged rows); broker trouble."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from dbus_ray.checkpoints import FileCheckpointStore
from dbus_ray.config import ConfigError, build, load_config, parse_config
from dbus_ray.errors import DbusError
from dbus_ray.model import TableRows, dumpb
from dbus_ray.pipeline import Pipeline, run_pipeline
from dbus_ray.serializers.avro import AvroSerializer
from dbus_ray.sinks.kafka import KafkaOptions, KafkaSink
from dbus_ray.sources.mock import MockOptions, MockSource
from tests.support.helpers import wait_for
from tests.support.topics import check_every_row, partition_of, partitions_of, read_topic

# ---------------------------------------------------------------------------------------------- helpers


def kafka_config(tmp_path: Path, name: str, broker: Any, source: dict[str, Any], sink: dict[str, Any],
                 **extra: Any):
    raw = {
        "name": name,
        "source": {"type": "mock", **source},
        "sinks": [{"name": "k", "type": "kafka", "bootstrap": broker.bootstrap, **sink}],
        "data_dir": str(tmp_path / "data"),
        "flow": {"read_batch_rows": 1000, "sink_batch_rows": 4000, "max_rows_in_flight": 8000},
    }
    raw.update(extra)
    return parse_config(raw, f"{name}.yaml", {})


def mock_batches(n_batches: int, rows: int = 1000, **options: Any) -> list[Any]:
    src = MockSource("p", MockOptions(rows=None, **options))
    src.open(None)
    return [src.poll(rows, i + 1) for i in range(n_batches)]


def open_sink(broker: Any, **options: Any) -> KafkaSink:
    sink = KafkaSink("p", "k", build(KafkaOptions, {"bootstrap": broker.bootstrap, **options}, "sinks[0]"))
    sink.open()
    return sink


# ---------------------------------------------------------------------------------------------- the sink


def test_options_are_validated() -> None:
    def err(**sink: Any) -> str:
        raw = {"name": "v", "source": {"type": "mock"}, "sinks": [{"name": "k", "type": "kafka", **sink}]}
        with pytest.raises(ConfigError) as info:
            parse_config(raw, "v.yaml", {})
        return str(info.value)

    assert err() == "v.yaml: sinks[0].bootstrap: field required"
    assert "sinks[0].topic: unknown template field {schema}" in err(bootstrap="b:1", topic="x.{schema}")
    assert "sinks[0].topic: topic 'a b' has characters Kafka does not allow" in err(bootstrap="b:1", topic="a b")
    assert "sinks[0].format: expected one of 'json', 'avro', 'raw', 'arrow', 'debezium', got 'xml'" in err(
        bootstrap="b:1", format="xml")
    assert "sinks[0].partitions: must be at least 1" in err(bootstrap="b:1", partitions=0)
    assert "sinks[0].schema_registry: is for format avro only" in err(bootstrap="b:1", schema_registry="http://r")
    assert "sinks[0].producer.acks: is set by the sink" in err(bootstrap="b:1", producer={"acks": "1"})
    assert "sinks[0].delivery: expected one of" in err(bootstrap="b:1", delivery="maybe")
    cfg = load_config(Path(__file__).parents[2] / "configs" / "mock-kafka.yaml", {"DBUS_KAFKA": "h:1"})
    assert cfg.sinks[0].options.bootstrap == "h:1" and cfg.sinks[0].type == "kafka"


def test_messages_keys_headers_and_partitions(broker: Any) -> None:
    sink = open_sink(broker, topic="unit.{db}.{table}", partitions=3)
    batches = mock_batches(3, rows=500, keys=50, tables=2)
    for batch in batches:
        sink.write(batch)
    sink.close()
    for t in (0, 1):
        topic = f"unit.mock.items_{t}"
        assert partitions_of(broker.bootstrap, topic) == [0, 1, 2]  # created with the configured count
        msgs = read_topic(broker.bootstrap, topic)
        expected = [c for b in batches for part in b.parts if part.table == f"items_{t}"
                    for c in part.changes("p")]
        assert len(msgs) == len(expected) == 750
        by_row = {json.loads(m.value())["pos"]["offset"]: m for m in msgs}
        for change in expected:
            msg = by_row[change.position.offset]
            assert json.loads(msg.value()) == json.loads(change.to_json())
            assert msg.key() == json.dumps({"id": change.key["id"]}, separators=(",", ":")).encode()
            assert msg.partition() == partition_of(msg.key(), 3)
            headers = dict(msg.headers())
            assert headers["op"].decode() == change.op
            assert (headers["db"], headers["table"]) == (b"mock", f"items_{t}".encode())
            assert json.loads(headers["position"]) == change.position.to_dict()


def test_a_write_sends_at_once_whatever_the_linger(broker: Any) -> None:
    """`linger_ms` only gathers messages while a batch is produced: the write's flush sends the rest at
    once, so a write returns long before a linger of 20 s would have sent anything."""
    sink = open_sink(broker, topic="unit.linger", partitions=1, linger_ms=20_000)
    [batch] = mock_batches(1, rows=10, keys=10)
    sink.write(batch)  # warm: metadata, topic creation, the idempotent producer's id
    [batch] = mock_batches(1, rows=10, keys=10, tables=1)
    started = time.monotonic()
    sink.write(batch)
    took = time.monotonic() - started
    sink.close()
    assert took < 10, f"the write took {took:.1f} s: it waited for linger.ms"
    assert len(read_topic(broker.bootstrap, "unit.linger")) == 20


def test_key_columns_and_fixed_topic(broker: Any) -> None:
    sink = open_sink(broker, topic="unit-fixed", key=["name"], partitions=2)
    [batch] = mock_batches(1, rows=200, keys=20)
    sink.write(batch)
    msgs = read_topic(broker.bootstrap, "unit-fixed")
    assert len(msgs) == 200
    for msg in msgs:
        value = json.loads(msg.value())
        image = value["after"] or value["before"]
        assert json.loads(msg.key()) == {"name": image["name"]}


def test_avro_messages(broker: Any) -> None:
    sink = open_sink(broker, topic="unit-avro", format="avro")
    [batch] = mock_batches(1, rows=300, keys=30)
    sink.write(batch)
    msgs = read_topic(broker.bootstrap, "unit-avro")
    part: TableRows = batch.parts[0]
    decoder = AvroSerializer()
    got = sorted((decoder.decode(m.value(), part) for m in msgs), key=lambda v: v["pos"]["offset"])
    assert got == [c.to_dict() for c in part.changes("p")]


def oversize_batch(good: int = 40, big: int = 5) -> tuple[Any, list[Any], list[Any]]:
    """One batch: `good` small rows of mock.items, `big` rows of a table whose db name alone (1200 bytes) is
    over a 1000-byte `message.max.bytes`, then `good` more small rows. Returns (batch, the big rows' run,
    the small changes in order)."""
    ok = MockSource("p", MockOptions(rows=None, keys=10))
    ok.open(None)
    large = MockSource("p", MockOptions(rows=None, keys=10, db="d" * 1200))
    large.open({"next": good})
    batch = ok.poll(good, 1)
    big_part = large.poll(big, 1).parts[0]
    ok.open({"next": good + big})
    after = ok.poll(good, 1).parts[0]
    batch.parts += [big_part, after]
    small = [c for part in (batch.parts[0], after) for c in part.changes("p")]
    return batch, big_part, small


def test_delivery_error_fails_the_write(broker: Any) -> None:
    """A row the broker cannot take (here: larger than `message.max.bytes`) fails `write` with the topic,
    the row's position, table, key and size, and the reason; no row after it is produced."""
    sink = open_sink(broker, topic="unit-large", producer={"message.max.bytes": 1000}, partitions=2)
    batch, big, small = oversize_batch()
    with pytest.raises(DbusError) as info:
        sink.write(batch)
    text = str(info.value)
    first = next(big.changes("p"))
    value = sink.serializer.encode(big, "p", [first.to_dict()])[0]
    headers = 2 + 2 + 5 + 8 + len(b"insert" if first.op == "insert" else first.op) + 1200 + len("items") \
        + len(dumpb(first.position.to_dict()))
    size = len(value) + len(dumpb(first.key)) + headers
    assert text.startswith("topic unit-large: cannot produce row at {\"file\":\"mock\",\"offset\":40,")
    assert f"of table {'d' * 1200}.items, key {{\"id\":{first.key['id']}}}: " in text
    assert f"the message is {size} bytes, the limit 1000: raise" in text and "on_oversize: dead_letter" in text
    assert "too large" in text.lower() and "\n" not in text
    sink.close()  # delivers what was produced before the big row
    offsets = sorted(json.loads(m.value())["pos"]["offset"] for m in read_topic(broker.bootstrap, "unit-large"))
    assert offsets == list(range(40)), "only the rows before the oversize row may be delivered"


@pytest.mark.parametrize("delivery", ["at_least_once", "exactly_once"])
def test_oversize_rows_go_to_the_dead_letter_topic(broker: Any, delivery: str) -> None:
    topic, dead = f"unit-dlq-{delivery}", f"unit-dead-{delivery}"
    sink = open_sink(broker, topic=topic, producer={"message.max.bytes": 2000}, partitions=2, delivery=delivery,
                     on_oversize="dead_letter", dead_letter_topic=dead, dead_letter_payload_bytes=100)
    batch, big, small = oversize_batch()
    sink.write(batch)  # goes on
    sink.close()
    assert sink.dead_lettered == 5
    msgs = read_topic(broker.bootstrap, topic, committed=True)
    assert [json.loads(m.value())["pos"]["offset"] for m in sorted(msgs, key=lambda m: m.offset())
            if m.partition() == 0] == [c.position.offset for c in small if partition_of(dumpb(c.key), 2) == 0]
    assert sorted(json.loads(m.value())["pos"]["offset"] for m in msgs) == [c.position.offset for c in small]
    records = read_topic(broker.bootstrap, dead, committed=True)
    assert len(records) == 5
    by_offset = {json.loads(m.value())["position"]["offset"]: m for m in records}
    changes = list(big.changes("p"))
    for change, value in zip(changes, sink.serializer.encode(big, "p", [c.to_dict() for c in changes])):
        msg = by_offset[change.position.offset]
        record = json.loads(msg.value())
        assert record["position"] == change.position.to_dict()
        assert record["table"] == f"{'d' * 1200}.items" and record["topic"] == topic
        assert record["key"] == dumpb(change.key).decode() and msg.key() == dumpb(change.key)
        assert record["size"] > 2000 and record["limit"] == 2000 and record["topic"] == topic
        assert "MSG_SIZE_TOO_LARGE" in record["reason"] and record["payload_bytes"] == len(value)
        assert base64.b64decode(record["payload"]) == value[:100] and record["payload_truncated"] is True
        assert (record["pipeline"], record["sink"]) == ("p", "k")
        headers = dict(msg.headers())
        assert headers["dbus.reason"] == b"oversize" and headers["dbus.topic"] == topic.encode()
        assert len(msg.value()) + len(msg.key()) + sum(len(k) + len(v) for k, v in msg.headers()) <= 2000


def test_unreachable_broker_at_open() -> None:
    sink = KafkaSink("p", "k", build(KafkaOptions, {"bootstrap": "127.0.0.1:1", "timeout_s": 2}, "sinks[0]"))
    started = time.monotonic()
    with pytest.raises(DbusError) as info:
        sink.open()
    assert time.monotonic() - started < 10
    assert str(info.value).startswith("kafka sink k: cannot reach broker 127.0.0.1:1: ")
    assert "\n" not in str(info.value)


def test_missing_topic_without_create(broker: Any) -> None:
    with pytest.raises(DbusError, match="kafka sink k: topic unit-nothing does not exist"):
        open_sink(broker, topic="unit-nothing", create_topics=False)


# ---------------------------------------------------------------------------------------------- through Ray


@pytest.mark.usefixtures("ray_session")
def test_pipeline_every_row_in_key_order(tmp_path: Path, broker: Any) -> None:
    total = 20_000
    cfg = kafka_config(tmp_path, "kafka-e2e", broker, {"rows": total, "keys": 500, "tables": 2},
                       {"topic": "e2e.{db}.{table}", "partitions": 6})
    started = time.monotonic()
    final = run_pipeline(cfg, until_caught_up=True, interval=0.05)
    elapsed = time.monotonic() - started
    print(f"\nmock -> kafka through Ray: {total} rows in {elapsed:.2f} s = {total / elapsed:,.0f} rows/s")
    assert final["state"] == "stopped" and final["error"] is None
    assert final["rows_delivered"] == total
    msgs = [m for t in (0, 1) for m in read_topic(broker.bootstrap, f"e2e.mock.items_{t}")]
    assert {m.partition() for m in msgs} == set(range(6))
    seen = check_every_row(msgs, total, 6)
    assert set(seen.values()) == {1}
    assert FileCheckpointStore(cfg.pipeline_dir).load()["source"] == {"next": total}


@pytest.mark.usefixtures("ray_session")
def test_resume_after_clean_stop(tmp_path: Path, broker: Any) -> None:
    total = 12_000
    cfg = kafka_config(tmp_path, "kafka-resume", broker, {"rows": total, "keys": 300},
                       {"topic": "resume-clean", "partitions": 4})
    first = run_pipeline(cfg, max_rows=5_000, interval=0.05)
    assert first["error"] is None and first["rows_delivered"] == 5_000
    assert FileCheckpointStore(cfg.pipeline_dir).load()["source"] == {"next": 5_000}
    second = run_pipeline(cfg, until_caught_up=True, interval=0.05)
    assert second["error"] is None and second["rows_delivered"] == total - 5_000
    seen = check_every_row(read_topic(broker.bootstrap, "resume-clean"), total, 4)
    duplicates = sum(n - 1 for n in seen.values())
    print(f"\nresume after a clean stop: {duplicates} duplicates")
    assert duplicates == 0  # a clean stop delivers what is in flight and saves the final checkpoint


@pytest.mark.usefixtures("ray_session")
def test_resume_after_crash_duplicates_only_unacknowledged(tmp_path: Path, broker: Any) -> None:
    """Kill the pipeline's actors mid-way (no final checkpoint), then run again: every row is there, and
    the only duplicates are the rows delivered after the last saved checkpoint."""
    total = 30_000
    cfg = kafka_config(tmp_path, "kafka-crash", broker, {"rows": total, "keys": 400, "rate": 15_000},
                       {"topic": "resume-crash", "partitions": 6}, checkpoint={"every_ms": 300})
    pipeline = Pipeline(cfg)
    pipeline.start()
    wait_for(lambda: pipeline.status()["rows_delivered"] >= 8_000, timeout=30, every=0.05, what="8,000 rows delivered")
    pipeline.kill()
    saved = FileCheckpointStore(cfg.pipeline_dir).load()
    assert saved is not None and 0 < saved["source"]["next"] < total
    resume_at = saved["source"]["next"]
    before = read_topic(broker.bootstrap, "resume-crash")
    delivered_first = {json.loads(m.value())["pos"]["offset"] for m in before}
    assert max(delivered_first) < total

    final = run_pipeline(cfg, until_caught_up=True, interval=0.05)
    assert final["error"] is None and final["rows_delivered"] == total - resume_at
    seen = check_every_row(read_topic(broker.bootstrap, "resume-crash"), total, 6)
    duplicated = sorted(row for row, n in seen.items() if n > 1)
    print(f"\ncrash at ~{len(delivered_first)} rows delivered, checkpoint {resume_at}: "
          f"{len(duplicated)} duplicates (rows {duplicated[:1]}..{duplicated[-1:]})")
    assert all(n <= 2 for n in seen.values())
    # duplicates are exactly the rows the first run delivered past its last checkpoint
    assert duplicated == sorted(r for r in delivered_first if r >= resume_at)


@pytest.mark.usefixtures("ray_session")
def test_pipeline_unreachable_broker_fails_to_start(tmp_path: Path) -> None:
    raw = {"name": "kafka-down", "source": {"type": "mock", "rows": 10},
           "sinks": [{"name": "k", "type": "kafka", "bootstrap": "127.0.0.1:1", "timeout_s": 2}],
           "data_dir": str(tmp_path / "data")}
    cfg = parse_config(raw, "down.yaml", {})
    with pytest.raises(DbusError) as info:
        run_pipeline(cfg, until_caught_up=True)
    text = str(info.value)
    assert "\n" not in text
    assert "cannot start" in text and "kafka sink k: cannot reach broker 127.0.0.1:1" in text


@pytest.mark.usefixtures("ray_session")
def test_pipeline_message_too_large_fails_without_checkpoint(tmp_path: Path, broker: Any) -> None:
    cfg = kafka_config(tmp_path, "kafka-large", broker, {"rows": 3000, "keys": 10, "db": "x" * 1200},
                       {"topic": "too-large", "producer": {"message.max.bytes": 1000}})
    final = run_pipeline(cfg, until_caught_up=True, interval=0.05)
    assert final["state"] == "failed"
    error = final["error"]
    assert "\n" not in error
    assert error.startswith("sink k (kafka): topic too-large: cannot produce row at {\"file\":\"mock\",\"offset\":0,")
    assert f"of table {'x' * 1200}.items, key {{\"id\":0}}: " in error and "the limit 1000: " in error
    assert "too large" in error.lower()
    assert final["rows_delivered"] == 0
    assert FileCheckpointStore(cfg.pipeline_dir).load() is None


@pytest.mark.usefixtures("ray_session")
def test_pipeline_dead_letters_oversize_rows_and_goes_on(tmp_path: Path, broker: Any) -> None:
    cfg = kafka_config(tmp_path, "kafka-dlq", broker, {"rows": 300, "keys": 10, "db": "x" * 1200},
                       {"topic": "dlq-pipe", "producer": {"message.max.bytes": 2000}, "on_oversize": "dead_letter",
                        "dead_letter_topic": "dlq-pipe-dead"})
    final = run_pipeline(cfg, until_caught_up=True, interval=0.05)
    assert final["state"] == "stopped" and final["error"] is None and final["rows_delivered"] == 300
    records = [json.loads(m.value()) for m in read_topic(broker.bootstrap, "dlq-pipe-dead")]
    assert sorted(r["position"]["offset"] for r in records) == list(range(300))
    assert FileCheckpointStore(cfg.pipeline_dir).load()["source"] == {"next": 300}


@pytest.mark.usefixtures("ray_session")
def test_example_config_runs(tmp_path: Path, broker: Any) -> None:
    """configs/mock-kafka.yaml as shipped, pointed at the test broker."""
    path = Path(__file__).parents[2] / "configs" / "mock-kafka.yaml"
    cfg = load_config(path, {"DBUS_KAFKA": broker.bootstrap, "DBUS_DATA": str(tmp_path / "data")})
    final = run_pipeline(cfg, until_caught_up=True, interval=0.05)
    assert final["error"] is None and final["rows_delivered"] == 20_000
    msgs = [m for t in (0, 1) for m in read_topic(broker.bootstrap, f"dbus.mock.items_{t}")]
    assert set(check_every_row(msgs, 20_000, 6).values()) == {1}


def topic_with_limit(broker: Any, topic: str, limit: int) -> None:
    """Create `topic` (2 partitions) with the broker-side `max.message.bytes` `limit`, and check that the broker
    itself enforces it: a producer with librdkafka's default limit (1 MB) gets its larger message refused."""
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(topic, 2, config={"max.message.bytes": str(limit)})])[topic].result(30)
    refused: list[Any] = []
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0})
    producer.produce(topic, b"x" * (limit + 500), b"probe", partition=1,
                     on_delivery=lambda err, msg: refused.append(err))
    assert producer.flush(30) == 0
    assert refused and refused[0] is not None and refused[0].code() == KafkaError.MSG_SIZE_TOO_LARGE


def test_topic_max_message_bytes_of_the_broker_fails_the_write_at_the_row(broker: Any) -> None:
    """A row over the topic's `max.message.bytes` (enforced by the broker, the producer's own limit is the
    default 1 MB) fails the write at that row, naming the topic's limit; nothing after it is delivered."""
    topic_with_limit(broker, "unit-topic-limit", 2000)
    sink = open_sink(broker, topic="unit-topic-limit", partitions=2)
    batch, big, small = oversize_batch()
    with pytest.raises(DbusError) as info:
        sink.write(batch)
    text = str(info.value)
    assert text.startswith('topic unit-topic-limit: cannot produce row at {"file":"mock","offset":40,'), text
    assert "the limit 2000: raise" in text and "on_oversize: dead_letter" in text
    sink.close()
    offsets = sorted(json.loads(m.value())["pos"]["offset"] for m in read_topic(broker.bootstrap, "unit-topic-limit"))
    assert offsets == list(range(40)), "only the rows before the oversize row may be delivered"


@pytest.mark.parametrize("delivery", ["at_least_once", "exactly_once"])
def test_topic_max_message_bytes_of_the_broker_dead_letters_the_row(broker: Any, delivery: str) -> None:
    """With `on_oversize: dead_letter`, a row over the topic's broker-side `max.message.bytes` goes to the
    dead-letter topic and every other row is delivered, in order."""
    topic, dead = f"unit-topic-limit-dlq-{delivery}", f"unit-topic-limit-dead-{delivery}"
    topic_with_limit(broker, topic, 2000)
    sink = open_sink(broker, topic=topic, partitions=2, delivery=delivery, on_oversize="dead_letter",
                     dead_letter_topic=dead, dead_letter_payload_bytes=100)
    batch, big, small = oversize_batch()
    sink.write(batch)
    sink.close()
    assert sink.dead_lettered == 5
    msgs = read_topic(broker.bootstrap, topic, committed=True)
    assert sorted(json.loads(m.value())["pos"]["offset"] for m in msgs) == [c.position.offset for c in small]
    for partition in (0, 1):
        assert [json.loads(m.value())["pos"]["offset"] for m in msgs if m.partition() == partition] == \
            [c.position.offset for c in small if partition_of(dumpb(c.key), 2) == partition]
    records = [json.loads(m.value()) for m in read_topic(broker.bootstrap, dead, committed=True)]
    assert sorted(r["position"]["offset"] for r in records) == [c.position.offset for c in big.changes("p")]
    assert all(r["limit"] == 2000 and r["size"] > 2000 and r["topic"] == topic for r in records)


def test_templated_topic_with_a_smaller_max_message_bytes_is_named(broker: Any) -> None:
    topic_with_limit(broker, "unit-tpl.mock.items", 2000)
    sink = open_sink(broker, topic="unit-tpl.{db}.{table}", partitions=2)
    with pytest.raises(DbusError, match=r"topic unit-tpl\.mock\.items: its max.message.bytes 2000 is below the "
                                        r"sink's producer message.max.bytes 1000000"):
        sink.write(mock_batches(1, rows=10)[0])
    sink.close()
