"""Options of the `kafka` sink (`KafkaOptions`, each error naming its key) and the librdkafka settings of
its producer built from them. The sink itself: `dbus_ray.sinks.kafka`."""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from typing import Any, Literal

from dbus_ray.kafka.client import CHECKPOINT_TOPIC, MANAGED, check_topic_name, producer_config
from dbus_ray.serializers.debezium import DebeziumOptions
from dbus_ray.validation import Invalid

TEMPLATE_FIELDS = {"db", "table", "pipeline"}


@dataclass
class KafkaOptions:
    bootstrap: str
    topic: str = "dbus.{db}.{table}"  # fixed, or a template over {db}, {table}, {pipeline}
    key: list[str] | None = None  # message key columns; null: the table's primary key
    format: Literal["json", "avro", "raw", "arrow", "debezium"] = "json"  # arrow: a run a message; raw: mirror
    debezium: DebeziumOptions = field(default_factory=DebeziumOptions)  # format debezium: its options
    schema_registry: str | None = None  # avro only: Confluent wire format with this registry
    # avro with schema_registry: subject of a table's value schema: topic ({topic}-value), record (its record
    # name, dbus.{db}.{table}.Change) or topic_record ({topic}-dbus.{db}.{table}.Change); topic needs {table}
    subject_name_strategy: Literal["topic", "record", "topic_record"] = "topic"
    delivery: Literal["at_least_once", "exactly_once"] = "at_least_once"
    partitions: int = 6  # for topics the sink creates
    replication_factor: int = -1  # for topics the sink creates; -1: the broker's default
    create_topics: bool = True
    compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "lz4"
    batch_size: int = 1_000_000  # bytes per partition batch (librdkafka batch.size)
    linger_ms: int = 50  # each sink batch ends in a flush, which sends at once: no added latency
    retries: int = 2_147_483_647  # bounded in time by delivery_timeout_ms
    retry_backoff_ms: int = 100
    delivery_timeout_ms: int = 120_000  # a message not acknowledged by then fails the write
    timeout_s: float = 30.0  # broker metadata, topic creation and transaction calls
    checkpoint_topic: str = CHECKPOINT_TOPIC  # exactly_once: where the checkpoint commits with the rows
    tombstones: bool = False  # a delete (and a key change's old key) is followed by a null-value message
    on_oversize: Literal["fail", "dead_letter"] = "fail"  # a row larger than producer message.max.bytes
    dead_letter_topic: str = "dbus.dead_letter"  # on_oversize dead_letter: where such rows are recorded
    dead_letter_payload_bytes: int = 1024  # how much of the oversize value the dead-letter record keeps
    producer: dict[str, Any] = field(default_factory=dict)  # more librdkafka producer settings

    def __post_init__(self) -> None:
        if not self.bootstrap.strip():
            raise Invalid("bootstrap", "must not be empty")
        try:
            names = {name for _, name, _, _ in string.Formatter().parse(self.topic) if name is not None}
        except ValueError as exc:
            raise Invalid("topic", f"bad template {self.topic!r}: {exc}") from None
        unknown = names - TEMPLATE_FIELDS
        if unknown:
            raise Invalid("topic", f"unknown template field {{{min(unknown)}}} (allowed: {{db}}, {{table}}, "
                                   "{pipeline})")
        if not names:
            reason = check_topic_name(self.topic)
            if reason:
                raise Invalid("topic", f"topic {self.topic!r} {reason}")
        if self.key is not None:
            if not self.key:
                raise Invalid("key", "must name at least one column (or be left out for the primary key)")
            for i, column in enumerate(self.key):
                if not column:
                    raise Invalid(f"key[{i}]", "must not be empty")
        if self.key is not None and self.format in ("arrow", "raw"):
            raise Invalid("key", f"is not for format {self.format} (its message key is set by the format)")
        if self.tombstones and self.format in ("arrow", "raw"):
            raise Invalid("tombstones", f"is not for format {self.format} (a message there is not one row)")
        if self.schema_registry is not None and self.format != "avro":
            raise Invalid("schema_registry", "is for format avro only")
        if self.schema_registry is not None and self.subject_name_strategy == "topic" and "table" not in names:
            raise Invalid("subject_name_strategy", f"topic (one schema subject per topic) needs a topic per table, "
                                                   f"and topic {self.topic!r} has no {{table}}: use record or "
                                                   "topic_record")
        if self.partitions < 1:
            raise Invalid("partitions", "must be at least 1")
        if self.replication_factor == 0 or self.replication_factor < -1:
            raise Invalid("replication_factor", "must be at least 1 (or -1 for the broker's default)")
        for key in ("batch_size", "delivery_timeout_ms"):
            if getattr(self, key) < 1:
                raise Invalid(key, "must be at least 1")
        for key in ("linger_ms", "retries", "retry_backoff_ms"):
            if getattr(self, key) < 0:
                raise Invalid(key, "must not be negative")
        if self.timeout_s <= 0:
            raise Invalid("timeout_s", "must be positive")
        for key in ("checkpoint_topic", "dead_letter_topic"):
            reason = check_topic_name(getattr(self, key))
            if reason:
                raise Invalid(key, f"topic {getattr(self, key)!r} {reason}")
        if self.dead_letter_payload_bytes < 0:
            raise Invalid("dead_letter_payload_bytes", "must not be negative")
        for name in self.producer:
            if name in MANAGED:
                raise Invalid(f"producer.{name}", "is set by the sink (use its own option, e.g. compression)")


def sink_producer_config(o: KafkaOptions, client_id: str) -> dict[str, Any]:
    """The librdkafka settings of the sink's producer (without `transactional.id`)."""
    return producer_config(o.bootstrap, o.producer, client_id, tuning={
        "compression.type": o.compression,
        "batch.size": o.batch_size,
        "linger.ms": o.linger_ms,
        "message.send.max.retries": o.retries,
        "retry.backoff.ms": o.retry_backoff_ms,
        "delivery.timeout.ms": o.delivery_timeout_ms,
    })


