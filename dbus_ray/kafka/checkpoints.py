"""Checkpoint store `kafka`: the pipeline's checkpoint as the last record keyed by the pipeline name in a
compacted topic (default `__dbus_checkpoints`, one partition, `cleanup.policy=compact`).

Two modes, chosen from the pipeline's sinks by `store_for(pipeline, cfg)`:
- transactional: the pipeline's (only) sink is a kafka sink with `delivery: exactly_once`. That sink writes
  the checkpoint record in the same transaction as the batch's rows, so rows and checkpoint commit
  together; `save()` is then a no-op (the reader's save after the acknowledgement would only repeat what
  is already committed) and `load()` returns the last committed record.
- plain: any other pipeline with a kafka sink. `save()` writes the record with an idempotent producer
  (acks=all) and returns once it is acknowledged, like the file store but on the brokers.

`load()` reads the topic with `isolation.level=read_committed` from the beginning to the end of every
partition and returns the value of the last record whose key is the pipeline name, i.e. the
`{"source": .., "seq": .., "time": ..}` the reader hands back to its source. Transactional: the broker
hides records of aborted transactions from read_committed consumers, and the records of a transaction
still open (its writer died) until it ends, so only a committed checkpoint is ever loaded.
"""

from __future__ import annotations

import json
from typing import Any

from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient

from dbus_ray.checkpoints import CheckpointStore
from dbus_ray.kafka.client import (
    CHECKPOINT_TOPIC,
    client_config,
    create_topic,
    kafka_reason,
    producer_config,
    read_to_end,
    topic_partitions,
)
from dbus_ray.model import dumps
from dbus_ray.registry import checkpoint_store


@checkpoint_store("kafka")
class KafkaCheckpointStore(CheckpointStore):
    """In a compacted Kafka topic, on the brokers of the pipeline's kafka sink (committed with the rows by an
    exactly-once sink)."""

    def __init__(
        self,
        pipeline: str,
        bootstrap: str,
        topic: str = CHECKPOINT_TOPIC,
        *,
        transactional: bool = False,
        client: dict[str, Any] | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        self.pipeline = pipeline
        self.bootstrap = bootstrap
        self.topic = topic
        self.transactional = transactional
        self.client = dict(client or {})
        self.timeout_s = timeout_s
        self._producer: Any = None
        self._acked = 0
        self._error: str | None = None

    @classmethod
    def for_pipeline(cls, pipeline: str, pipeline_dir: Any, cfg: Any = None) -> KafkaCheckpointStore:
        return store_for(pipeline, cfg)

    def _config(self) -> dict[str, Any]:
        return client_config(self.bootstrap, self.client)

    def _topic_partitions(self) -> list[int] | None:
        """The checkpoint topic's partitions, None when it does not exist (asked without creating it)."""
        try:
            return topic_partitions(AdminClient(self._config()), self.topic, self.timeout_s)
        except KafkaException as exc:
            raise RuntimeError(f"checkpoint store kafka: cannot reach broker {self.bootstrap}: "
                               f"{kafka_reason(exc)}") from None

    def load(self) -> dict[str, Any] | None:
        partitions = self._topic_partitions()
        if not partitions:
            return None
        key = self.pipeline.encode()
        found: tuple[int, int, bytes] | None = None  # (partition, offset, value) of the newest record
        for msg in read_to_end(self._config(), self.topic, partitions, self.timeout_s, "checkpoint store kafka",
                               **{"isolation.level": "read_committed"}):
            if msg.key() == key:
                # one key lives in one partition: the highest offset there is the newest
                found = (msg.partition(), msg.offset(), msg.value())
        if found is None or found[2] is None:
            return None
        return json.loads(found[2])

    def save(self, checkpoint: dict[str, Any]) -> None:
        if self.transactional:
            return  # committed by the exactly-once kafka sink in the transaction of the batch's rows
        if self._producer is None:
            self._ensure_topic()
            self._producer = Producer(producer_config(self.bootstrap, self.client, tuning={"linger.ms": 0}))
        self._acked, self._error = 0, None
        self._producer.produce(self.topic, dumps(checkpoint).encode(), self.pipeline.encode(),
                               on_delivery=self._on_delivery)
        self._producer.flush(self.timeout_s)
        if self._error or self._acked != 1:
            raise RuntimeError(f"checkpoint store kafka: saving to {self.topic} failed: "
                               f"{self._error or 'not acknowledged in time'}")

    def _on_delivery(self, err: Any, msg: Any) -> None:
        if err is None:
            self._acked += 1
        else:
            self._error = err.str()

    def _ensure_topic(self) -> None:
        if self._topic_partitions() is not None:
            return
        try:
            create_topic(AdminClient(self._config()), self.topic, 1, config={"cleanup.policy": "compact"},
                         timeout_s=self.timeout_s)
        except RuntimeError as exc:
            raise RuntimeError(f"checkpoint store kafka: {exc}") from None

    def describe(self) -> str:
        mode = "transactional" if self.transactional else "plain"
        return f"kafka {self.bootstrap} {self.topic} key {self.pipeline} ({mode})"


def store_for(pipeline: str, cfg: Any) -> KafkaCheckpointStore:
    """The kafka store of a pipeline config: the brokers and checkpoint topic of its kafka sink;
    transactional when that sink delivers exactly once (it must then be the pipeline's only sink, since
    its checkpoint must cover every sink)."""
    if cfg is None:
        raise ValueError("checkpoint store kafka needs the pipeline config")
    kafka = [s for s in cfg.sinks if s.type == "kafka"]
    if not kafka:
        raise ValueError(f"pipeline {pipeline}: checkpoint store kafka needs a kafka sink (it uses its brokers)")
    exactly = [s for s in kafka if s.options.delivery == "exactly_once"]
    chosen = exactly[0] if exactly else kafka[0]
    if exactly and len(cfg.sinks) > 1:
        raise ValueError(f"pipeline {pipeline}: kafka sink {chosen.name} delivers exactly_once with checkpoint "
                         "store kafka, so it must be the pipeline's only sink")
    o = chosen.options
    client = {k: v for k, v in o.producer.items() if k.startswith(("security.", "sasl.", "ssl."))}
    return KafkaCheckpointStore(pipeline, o.bootstrap, o.checkpoint_topic, transactional=bool(exactly),
                                client=client, timeout_s=o.timeout_s)
