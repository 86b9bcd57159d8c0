"""Where the Kafka sink's rows go (`SinkTopics`, a part of `dbus_ray.sinks.kafka.KafkaSink`): the topic of
each table (`topic`, fixed or a template), created with the sink's `partitions` when missing (unless
`create_topics: false`), its `max.message.bytes` checked against the producer's limit, and the producer
warmed for it (metadata with a leader for every partition) before its first message."""

from __future__ import annotations

import concurrent.futures
import logging
import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException

from dbus_ray.errors import DbusError
from dbus_ray.kafka.client import check_topic_name, create_topic, kafka_reason
from dbus_ray.kafka.sink_options import KafkaOptions
from dbus_ray.model import TableRows

log = logging.getLogger("dbus.kafka")


class SinkTopics:
    """The sink's topics; needs the sink's `options`, `admin`, `producer`, `pipeline`, `where` and `limit`.
    `_open_topics` (from the sink's `open`) starts the topic state and reads the broker's topics."""

    options: KafkaOptions
    admin: Any
    producer: Any
    pipeline: str
    where: str
    limit: int
    known_topics: set[str]
    topics_of: dict[tuple[str, str], str]
    partition_count: dict[str, int]

    def _open_topics(self) -> None:
        self.known_topics = set()
        self.topics_of = {}  # the topic of each (db, table) written so far
        self.partition_count = {}  # of each topic the producer was warmed for
        self._refresh_topics()

    def _refresh_topics(self) -> None:
        o: KafkaOptions = self.options
        try:
            metadata = self.admin.list_topics(timeout=o.timeout_s)  # all topics: never auto-creates one
        except KafkaException as exc:
            raise DbusError(f"{self.where}: cannot reach broker {o.bootstrap}: {kafka_reason(exc)}") from None
        self.known_topics = {name for name, t in metadata.topics.items() if t.error is None}

    def _ensure_topic(self, topic: str, partitions: int | None = None, config: dict[str, str] | None = None) -> None:
        if topic in self.known_topics:
            return
        o: KafkaOptions = self.options
        self._refresh_topics()
        if topic in self.known_topics:
            return
        if not o.create_topics:
            raise DbusError(f"{self.where}: topic {topic} does not exist (create_topics is off)")
        count = partitions or o.partitions
        try:
            if create_topic(self.admin, topic, count, o.replication_factor, config, o.timeout_s):
                log.info("[%s] %s created topic %s (%d partitions)", self.pipeline, self.where, topic, count)
        except RuntimeError as exc:
            raise DbusError(f"{self.where}: {exc}") from None
        self.known_topics.add(topic)

    def _topic_limit(self, topic: str) -> int:
        """The topic's `max.message.bytes` as the broker reports it (its default when it cannot tell)."""
        from confluent_kafka.admin import ConfigResource

        resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
        for attempt in range(20):  # a topic created a moment ago may be unknown to the broker's configs yet
            try:
                entries = self.admin.describe_configs([resource])[resource].result(timeout=self.options.timeout_s)
                return int(entries["max.message.bytes"].value)
            except KafkaException as exc:
                if exc.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART and attempt < 19:
                    time.sleep(0.1)
                    continue
                reason: Any = exc
            except (KeyError, ValueError, TypeError, concurrent.futures.TimeoutError) as exc:
                reason = exc
            log.warning("[%s] %s: max.message.bytes of topic %s unknown: %s", self.pipeline, self.where, topic,
                        reason)
            return 1_048_588
        return 1_048_588

    def _warm(self, topic: str) -> None:
        """Wait until the producer's metadata has the topic with a leader for every partition, and remember
        its partition count. A message produced while its topic is unknown waits in librdkafka's queue of
        unassigned messages and gets its place in a partition's queue only when it leaves it, possibly behind
        messages produced later: a topic the sink has just created is known before the first row."""
        deadline = time.monotonic() + self.options.timeout_s
        while True:
            try:
                meta = self.producer.list_topics(topic, timeout=max(0.1, deadline - time.monotonic()))
            except KafkaException as exc:
                raise DbusError(f"topic {topic}: no metadata: {kafka_reason(exc)}") from None
            found = meta.topics.get(topic)
            ready = found is not None and found.error is None and found.partitions and all(
                p.error is None and p.leader >= 0 for p in found.partitions.values())
            if ready:
                self.partition_count[topic] = len(found.partitions)
                return
            if time.monotonic() >= deadline:
                why = "unknown" if found is None else (found.error or "partitions without a leader")
                raise DbusError(f"topic {topic}: not ready for writing after {self.options.timeout_s:.0f} s: {why}")
            time.sleep(0.05)

    def topic_for(self, rows: TableRows) -> str:
        found = self.topics_of.get((rows.db, rows.table))
        if found is None:
            found = self.options.topic.format(db=rows.db, table=rows.table, pipeline=self.pipeline)
            reason = check_topic_name(found)
            if reason:
                raise DbusError(f"topic {found!r} for table {rows.name} {reason}")
            self._ensure_topic(found)
            limit = self._topic_limit(found) if found != self.options.topic else self.limit
            if limit < self.limit:
                raise DbusError(f"topic {found}: its max.message.bytes {limit} is below the "
                                f"sink's producer message.max.bytes {self.limit}: set producer: message.max.bytes "
                                "to at most the smallest max.message.bytes of the sink's topics")
            self._warm(found)
            self.topics_of[(rows.db, rows.table)] = found
        return found
