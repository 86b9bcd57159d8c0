"""librdkafka clients of the bus: every producer's and admin client's settings are built here, plus the
topic helpers the sink and the checkpoint store share.

`producer_config` sets what every producer of the bus must have (idempotence, `acks=all`, Java's murmur2
partitioner, so one key always lands in one partition) over the user's `producer:` settings; the caller adds
its own tuning (`linger.ms`, batch size ...). `client_config` keeps only the settings an admin client or a
consumer shares with the producer (security, client id).
"""

from __future__ import annotations

import concurrent.futures
import logging
import string
import time
import uuid
from collections.abc import Iterator
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

log = logging.getLogger("dbus.kafka")

#: The compacted topic checkpoints are kept in (checkpoint store `kafka`, the exactly-once sink).
CHECKPOINT_TOPIC = "__dbus_checkpoints"
#: librdkafka settings a producer of the bus owns: `producer:` may not change them.
MANAGED = {"bootstrap.servers", "enable.idempotence", "acks", "transactional.id", "partitioner",
           "compression.type", "compression.codec", "batch.size", "linger.ms", "queue.buffering.max.ms",
           "message.send.max.retries", "retries", "retry.backoff.ms", "delivery.timeout.ms",
           "message.timeout.ms"}
_TOPIC_OK = set(string.ascii_letters + string.digits + "._-")
_SHARED_PREFIXES = ("security.", "sasl.", "ssl.", "client.")


def producer_config(bootstrap: str, settings: dict[str, Any] | None = None, client_id: str | None = None,
                    tuning: dict[str, Any] | None = None) -> dict[str, Any]:
    """The settings of a producer: the user's `settings`, then the bus' own, then the caller's `tuning`
    (all librdkafka names, e.g. `{"linger.ms": 5}`)."""
    settings = dict(settings or {})
    config = {
        **settings,
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "partitioner": "murmur2_random",
        "logger": log,
    }
    if client_id is not None:
        config["client.id"] = settings.get("client.id", client_id)
    config.update(tuning or {})
    return config


def client_config(bootstrap: str, settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """The settings of an admin client or consumer: those of `settings` it shares with the producer."""
    shared = {k: v for k, v in (settings or {}).items() if k.startswith(_SHARED_PREFIXES)}
    return {**shared, "bootstrap.servers": bootstrap, "logger": log}


def check_topic_name(topic: str) -> str | None:
    """Why `topic` is not a legal Kafka topic name, or None."""
    if not topic or topic in (".", ".."):
        return "is empty"
    if len(topic) > 249:
        return "is longer than 249 characters"
    bad = sorted(set(topic) - _TOPIC_OK)
    if bad:
        return f"has characters Kafka does not allow ({''.join(bad)!r}; allowed: letters, digits, '.', '_', '-')"
    return None


def kafka_reason(exc: BaseException) -> str:
    """The broker's or librdkafka's reason, one line (`KafkaError` name and text)."""
    err = exc.args[0] if exc.args else None
    if hasattr(err, "str") and hasattr(err, "name"):
        return f"{err.str()} ({err.name()})"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def topic_partitions(admin: AdminClient, topic: str, timeout_s: float) -> list[int] | None:
    """The partitions of `topic`, None when it does not exist (asked without creating it). Raises the
    `KafkaException` of an unreachable broker."""
    found = admin.list_topics(timeout=timeout_s).topics.get(topic)
    if found is None or found.error is not None:
        return None
    return sorted(found.partitions)


def create_topic(admin: AdminClient, topic: str, partitions: int, replication_factor: int = -1,
                 config: dict[str, str] | None = None, timeout_s: float = 30.0) -> bool:
    """Create `topic`; False when it already exists. Raises `RuntimeError` with the broker's reason."""
    new = NewTopic(topic, num_partitions=partitions, replication_factor=replication_factor, config=config or {})
    future = admin.create_topics([new], operation_timeout=timeout_s, request_timeout=timeout_s)[topic]
    try:
        future.result(timeout=timeout_s + 5)
    except KafkaException as exc:
        if exc.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
            return False
        raise RuntimeError(f"cannot create topic {topic}: {kafka_reason(exc)}") from None
    except concurrent.futures.TimeoutError:
        raise RuntimeError(f"cannot create topic {topic}: no answer in {timeout_s:.0f} s") from None
    return True


def read_to_end(config: dict[str, Any], topic: str, partitions: list[int], timeout_s: float, what: str,
                **settings: Any) -> Iterator[Any]:
    """Every message of `partitions` of `topic`, from the beginning to the end each had when read (a consumer
    of its own, `assign()`, no group membership; `settings`: e.g. `isolation.level`). Raises RuntimeError
    naming `what` when a read fails or takes over `timeout_s`."""
    consumer = Consumer({**config, "group.id": f"dbus-reader-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False,
                         "enable.partition.eof": True, "auto.offset.reset": "earliest", **settings})
    try:
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        open_partitions, deadline = set(partitions), time.monotonic() + timeout_s
        while open_partitions:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what}: reading {topic} timed out after {timeout_s:.0f} s")
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error() is not None:
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    open_partitions.discard(msg.partition())
                    continue
                raise RuntimeError(f"{what}: reading {topic}: {msg.error().str()}")
            yield msg
    finally:
        consumer.close()
