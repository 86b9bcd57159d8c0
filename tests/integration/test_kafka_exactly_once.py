"""Exactly-once delivery of the kafka sink against a real Apache Kafka broker: each batch is one transaction
holding its rows and the checkpoint record; `KafkaCheckpointStore` reads the last committed checkpoint;
a restarted writer is fenced by the broker's transaction coordinator; resume from the Kafka checkpoint
delivers every row once.

Exactly-once is judged by what librdkafka `isolation.level=read_committed` consumers get from the broker;
`dbus_ray.kafka_log` (raw Fetch of the log with its transaction markers) finds transactions still open in
the log and cross-checks the broker's answer."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from dbus_ray.checkpoints import open_store
from dbus_ray.config import build, parse_config
from dbus_ray.errors import DbusError
from dbus_ray.kafka import log as kafka_log
from dbus_ray.kafka.checkpoints import KafkaCheckpointStore, store_for
from dbus_ray.pipeline import Pipeline, run_pipeline
from dbus_ray.sinks.kafka import KafkaOptions, KafkaSink
from dbus_ray.sources.mock import MockOptions, MockSource
from tests.support.topics import check_every_row, kill_mid_transaction, log_counts, read_topic


def eos_sink(broker: Any, pipeline: str, **options: Any) -> KafkaSink:
    opts = build(KafkaOptions, {"bootstrap": broker.bootstrap, "delivery": "exactly_once", **options}, "sinks[0]")
    sink = KafkaSink(pipeline, "k", opts)
    sink.open()
    return sink


def store(broker: Any, pipeline: str, topic: str = "__dbus_checkpoints", **kw: Any) -> KafkaCheckpointStore:
    return KafkaCheckpointStore(pipeline, broker.bootstrap, topic, **kw)


def test_transactions_commit_rows_and_checkpoint(broker: Any) -> None:
    sink = eos_sink(broker, "eos-a", topic="eos-a")
    src = MockSource("eos-a", MockOptions(rows=None, keys=50))
    src.open(None)
    for seq in (1, 2, 3):
        sink.write(src.poll(400, seq))
    sink.close()
    rows = read_topic(broker.bootstrap, "eos-a", committed=True)
    check_every_row(rows, 1200, 6)
    assert len(rows) == 1200
    st = store(broker, "eos-a", transactional=True)
    saved = st.load()
    assert saved is not None and saved["source"] == {"next": 1200} and saved["seq"] == 3
    st.save({"source": {"next": 1}})  # a no-op: the sink commits the checkpoint with the rows
    assert st.load()["source"] == {"next": 1200}
    assert store(broker, "eos-nobody").load() is None
    assert store(broker, "eos-a", topic="no-such-checkpoints").load() is None


def test_failed_batch_leaves_checkpoint_behind(broker: Any) -> None:
    sink = eos_sink(broker, "eos-b", topic="eos-b", producer={"message.max.bytes": 1000})
    ok = MockSource("eos-b", MockOptions(rows=None, keys=10))
    ok.open(None)
    sink.write(ok.poll(100, 1))
    big = MockSource("eos-b", MockOptions(rows=None, keys=10, db="x" * 1200))
    big.open({"next": 100})
    batch = ok.poll(50, 2)
    batch.parts += big.poll(5, 2).parts  # good rows, then a row too large for the broker
    with pytest.raises(DbusError, match="topic eos-b: cannot produce row at .* too large"):
        sink.write(batch)
    assert store(broker, "eos-b", transactional=True).load()["source"] == {"next": 100}
    sink.write(ok.poll(100, 3))  # the producer is usable again after the abort
    assert store(broker, "eos-b", transactional=True).load()["source"] == {"next": 250}


def test_aborted_rows_are_invisible_to_read_committed(broker: Any) -> None:
    sink = eos_sink(broker, "eos-c", topic="eos-c")
    src = MockSource("eos-c", MockOptions(rows=None, keys=10))
    src.open(None)
    sink.producer.begin_transaction()
    for part in src.poll(50, 1).parts:
        sink._produce_part(part)
    assert sink.producer.flush(10) == 0 and sink.acked == 50  # on the broker, then aborted
    sink.producer.abort_transaction(10)
    assert read_topic(broker.bootstrap, "eos-c", committed=True) == []
    assert len(read_topic(broker.bootstrap, "eos-c", committed=False)) == 50  # in the log, aborted


def test_restarted_writer_fences_its_zombie(broker: Any) -> None:
    zombie = eos_sink(broker, "eos-d", topic="eos-d")
    src = MockSource("eos-d", MockOptions(rows=None, keys=10))
    src.open(None)
    zombie.write(src.poll(10, 1))
    successor = eos_sink(broker, "eos-d", topic="eos-d")  # same transactional.id: dbus-eos-d-k
    with pytest.raises(DbusError) as info:
        zombie.write(src.poll(10, 2))
    assert "fenced" in str(info.value).lower(), info.value
    successor.write(src.poll(10, 3))
    assert store(broker, "eos-d", transactional=True).load()["source"] == {"next": 30}


def test_resume_from_kafka_checkpoint_delivers_each_row_once(broker: Any) -> None:
    """The reader's loop by hand: open the source at the Kafka checkpoint, write, 'crash', again."""
    total = 3000
    for run in range(3):
        sink = eos_sink(broker, "eos-e", topic="eos-e", partitions=4)
        saved = store(broker, "eos-e", transactional=True).load()
        src = MockSource("eos-e", MockOptions(rows=total, keys=100))
        src.open(saved["source"] if saved else None)
        for seq in range(1, 5):  # crash after at most 4 batches
            batch = src.poll(300, seq)
            if batch is None:
                break
            sink.write(batch)
        if run < 2:  # a crash: nothing closed, a batch produced but never committed is in the air
            pending = src.poll(300, 99)
            if pending is not None:
                sink.producer.begin_transaction()
                for part in pending.parts:
                    sink._produce_part(part)
                sink.producer.flush(10)
    rows = read_topic(broker.bootstrap, "eos-e", committed=True)
    seen = check_every_row(rows, total, 4)
    assert set(seen.values()) == {1}, "a read_committed consumer gets every row exactly once"
    aborted = len(read_topic(broker.bootstrap, "eos-e", committed=False)) - total
    assert aborted > 0, "the crashed runs left transactions in the log that the broker must hide"
    print(f"\nexactly-once resume: {aborted} rows of aborted transactions in the log, hidden by the broker")


def test_plain_store_save_and_load(broker: Any) -> None:
    st = store(broker, "plain-a", topic="plain-checkpoints")
    assert st.load() is None
    st.save({"source": {"next": 5}, "seq": 1, "time": 1.0})
    st.save({"source": {"next": 9}, "seq": 2, "time": 2.0})
    store(broker, "plain-b", topic="plain-checkpoints").save({"source": {"next": 1}})
    assert st.load() == {"source": {"next": 9}, "seq": 2, "time": 2.0}
    metadata = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=10)
    assert len(metadata.topics["plain-checkpoints"].partitions) == 1
    assert "plain" in st.describe()


def test_store_for_config(broker: Any, tmp_path: Path) -> None:
    def cfg(sinks: list[dict[str, Any]]):
        raw = {"name": "sf", "source": {"type": "mock"}, "sinks": sinks, "checkpoint": {"store": "kafka"}}
        return parse_config(raw, "sf.yaml", {})

    k = {"name": "k", "type": "kafka", "bootstrap": broker.bootstrap}
    assert not store_for("sf", cfg([k])).transactional
    eos = store_for("sf", cfg([{**k, "delivery": "exactly_once", "checkpoint_topic": "cp"}]))
    assert eos.transactional and eos.topic == "cp" and eos.bootstrap == broker.bootstrap
    with pytest.raises(ValueError, match="must be the pipeline's only sink"):
        store_for("sf", cfg([{**k, "delivery": "exactly_once"}, {"name": "n", "type": "null"}]))
    with pytest.raises(ValueError, match="needs a kafka sink"):
        store_for("sf", cfg([{"name": "n", "type": "null"}]))
    assert isinstance(open_store("kafka", "sf", tmp_path, cfg=cfg([k])), KafkaCheckpointStore)


@pytest.mark.usefixtures("ray_session")
def test_pipeline_exactly_once_through_ray(tmp_path: Path, broker: Any) -> None:
    total = 10_000
    raw = {
        "name": "eos-ray", "source": {"type": "mock", "rows": total, "keys": 200},
        "sinks": [{"name": "k", "type": "kafka", "bootstrap": broker.bootstrap, "topic": "eos-ray",
                   "delivery": "exactly_once", "partitions": 3}],
        "flow": {"read_batch_rows": 1000, "sink_batch_rows": 2500, "max_rows_in_flight": 5000},
        "data_dir": str(tmp_path / "data"),
    }
    final = run_pipeline(parse_config(raw, "eos.yaml", {}), until_caught_up=True, interval=0.05)
    assert final["error"] is None and final["rows_delivered"] == total
    seen = check_every_row(read_topic(broker.bootstrap, "eos-ray", committed=True), total, 3)
    assert set(seen.values()) == {1}
    assert store(broker, "eos-ray", transactional=True).load()["source"] == {"next": total}


@pytest.mark.usefixtures("ray_session")
def test_pipeline_with_kafka_checkpoint_store(tmp_path: Path, broker: Any) -> None:
    """`checkpoint.store: kafka` through Ray (the reader opens the store with the pipeline's config): a run
    stopped after 1,500 rows saves its checkpoint in the transactional topic, the next resumes from it."""
    total = 4_000
    raw = {
        "name": "eos-store", "source": {"type": "mock", "rows": total, "keys": 100},
        "sinks": [{"name": "k", "type": "kafka", "bootstrap": broker.bootstrap, "topic": "eos-store",
                   "delivery": "exactly_once", "partitions": 2}],
        "checkpoint": {"store": "kafka"},
        "data_dir": str(tmp_path / "data"),
    }
    cfg = parse_config(raw, "eos-store.yaml", {})
    first = run_pipeline(cfg, max_rows=1_500, interval=0.05)
    assert first["error"] is None
    assert store(broker, "eos-store", transactional=True).load()["source"] == {"next": 1_500}
    second = run_pipeline(cfg, until_caught_up=True, interval=0.05)
    assert second["error"] is None and second["rows_delivered"] == total - 1_500
    seen = check_every_row(read_topic(broker.bootstrap, "eos-store", committed=True), total, 2)
    assert set(seen.values()) == {1}


# ------------------------------------------------------------------ read_committed from the log's markers


def test_log_markers_decide_what_read_committed_sees(broker: Any) -> None:
    """The broker keeps commit/abort markers in the log: `kafka_log` reads them with raw Fetch requests and
    keeps committed and plain records only, which is what the broker's read_committed answer holds."""
    topic = "eos-log"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(topic, 2)])[topic].result(30)
    config = {"bootstrap.servers": broker.bootstrap, "transactional.id": "eos-log", "linger.ms": 5,
              "compression.type": "lz4"}
    first = Producer(config)
    first.init_transactions(10)

    def txn(producer: Any, prefix: str, n: int) -> None:
        producer.begin_transaction()
        for i in range(n):
            producer.produce(topic, f"{prefix}{i}".encode(), b"k", partition=i % 2)
        assert producer.flush(10) == 0

    txn(first, "commit", 6)
    first.commit_transaction(10)
    txn(first, "abort", 4)
    first.abort_transaction(10)
    txn(first, "zombie", 2)  # left open: the successor's init_transactions fences and aborts it
    successor = Producer(config)
    successor.init_transactions(10)
    txn(successor, "next", 2)
    successor.commit_transaction(10)
    plain = Producer({"bootstrap.servers": broker.bootstrap})
    plain.produce(topic, b"plain", b"k", partition=0)
    assert plain.flush(10) == 0

    batches = kafka_log.record_batches(broker.bootstrap, topic, 0)
    markers = [(b.producer_epoch, b.marker) for b in batches if b.control]
    # the coordinator aborts the zombie's open transaction with a bumped epoch (1) and gives the successor
    # the next one (2): Kafka's fencing (KIP-360)
    assert markers == [(0, kafka_log.COMMIT), (0, kafka_log.ABORT), (1, kafka_log.ABORT), (2, kafka_log.COMMIT)]
    assert all(b.transactional for b in batches[:-1]) and not batches[-1].transactional
    got = {(m.partition(), m.value()) for m in kafka_log.read_committed(broker.bootstrap, topic)}
    assert got == {(i % 2, f"commit{i}".encode()) for i in range(6)} | {(i, f"next{i}".encode()) for i in range(2)} \
        | {(0, b"plain")}
    from_broker = {(m.partition(), m.value()) for m in read_topic(broker.bootstrap, topic, committed=True)}
    assert from_broker == got


def uncommitted(bootstrap: str, topic: str) -> int:
    """Data records in the log that a read_committed consumer must not see."""
    return log_counts(bootstrap, topic)[1]


@pytest.mark.usefixtures("ray_session")
def test_kill_9_writer_mid_transaction_every_row_once(tmp_path: Path, broker: Any) -> None:
    """kill -9 of the writer actor while a transaction's rows are already in the log; a new run resumes
    from the checkpoint committed in Kafka. Judged by the log's transaction markers (`kafka_log`): every
    row change exactly once, each key in one partition and in order."""
    total, topic = 20_000, "eos-kill"
    raw = {
        "name": "eos-kill", "source": {"type": "mock", "rows": total, "keys": 200},
        "sinks": [{"name": "k", "type": "kafka", "bootstrap": broker.bootstrap, "topic": topic,
                   "delivery": "exactly_once", "partitions": 3}],
        "checkpoint": {"store": "kafka"},
        "flow": {"read_batch_rows": 1000, "sink_batch_rows": 3000, "max_rows_in_flight": 6000,
                 "placement": "spread"},  # the writer is killed alone
        "data_dir": str(tmp_path / "data"),
    }
    cfg = parse_config(raw, "eos-kill.yaml", {})
    started = time.monotonic()
    hidden = 0
    for run in range(2):  # each run commits some batches, then dies while a transaction's rows are on the broker
        pipeline = Pipeline(cfg)
        pipeline.start()
        try:
            hidden = kill_mid_transaction("dbus:eos-kill:writer:k", broker.bootstrap, topic, hidden,
                                          committed=3_000 * (run + 1))
        finally:
            pipeline.kill()
    killed_at = time.monotonic()
    saved = store(broker, "eos-kill", transactional=True).load()
    assert saved is not None and 6_000 <= saved["source"]["next"] < total
    final = run_pipeline(cfg, until_caught_up=True, interval=0.05)
    assert final["error"] is None
    assert store(broker, "eos-kill", transactional=True).load()["source"] == {"next": total}
    resumed_at = time.monotonic()
    committed = read_topic(broker.bootstrap, topic, committed=True)
    seen = check_every_row(committed, total, 3)
    assert set(seen.values()) == {1}, f"{sum(n - 1 for n in seen.values())} duplicates"
    everything = read_topic(broker.bootstrap, topic, committed=False)
    print(f"\nkill -9 writer x2 (checkpoint then {saved['source']['next']}): {len(committed)} rows committed "
          f"once each; {hidden} rows of aborted transactions in the log, hidden by the broker; "
          f"kills {killed_at - started:.1f} s, resume {resumed_at - killed_at:.1f} s, "
          f"check {time.monotonic() - resumed_at:.1f} s")
    assert len(everything) == len(committed) + hidden
