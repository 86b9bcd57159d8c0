"""Source `kafka`: consumes Kafka topics (a list, or every topic matching `topic_regex`) over all their
partitions, for mirroring to another cluster (sink `kafka` with `format: raw`) or into files.

- Partitions are taken with `assign()` (no consumer-group membership, no rebalances); new topics and
  partitions are picked up every `refresh_s` seconds and read from their beginning.
- Positions live in the pipeline's checkpoint, not in Kafka: `{"offsets": {topic: {partition: next offset}}}`.
  A resumed run continues after the last acknowledged message of each partition. Without a checkpoint,
  `start` decides (`earliest` | `latest`).
- Each partition's messages become one run (`TableRows`) with `db` = topic and `table` = the partition
  number, in partition order; the message is kept as it was in the `after` image (key, value, headers,
  timestamp: see `dbus_ray.kafka.raw`). `op` is `insert`, `file`/`offset`/`index` are topic, offset and
  partition, `txid` is `topic/partition/offset` and `ts` the message timestamp.
- Caught up: every assigned partition has reached its end (partition EOF) since its last message.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import pyarrow as pa
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaError, KafkaException, TopicPartition

from dbus_ray.errors import DbusError
from dbus_ray.kafka.raw import RAW_TYPE
from dbus_ray.model import META_SCHEMA, RowBatch, TableRows
from dbus_ray.registry import Source, source
from dbus_ray.validation import Invalid

log = logging.getLogger("dbus.kafka_source")

SCHEMA = META_SCHEMA.append(pa.field("before", RAW_TYPE)).append(pa.field("after", RAW_TYPE))
#: librdkafka settings the source owns.
MANAGED = {"bootstrap.servers", "enable.auto.commit", "enable.partition.eof", "auto.offset.reset"}


@dataclass
class KafkaSourceOptions:
    bootstrap: str
    topics: list[str] = field(default_factory=list)
    topic_regex: str | None = None  # every topic whose whole name matches (Python syntax)
    start: Literal["earliest", "latest"] = "earliest"  # without a checkpoint
    refresh_s: float = 10.0  # how often new topics and partitions are looked for
    timeout_s: float = 30.0
    consumer: dict[str, Any] = field(default_factory=dict)  # more librdkafka consumer settings

    def __post_init__(self) -> None:
        if not self.bootstrap.strip():
            raise Invalid("bootstrap", "must not be empty")
        if bool(self.topics) == (self.topic_regex is not None):
            raise Invalid("topics", "give either topics or topic_regex")
        for i, topic in enumerate(self.topics):
            if not topic:
                raise Invalid(f"topics[{i}]", "must not be empty")
        if self.topic_regex is not None:
            try:
                self.compiled = re.compile(self.topic_regex)
            except re.error as exc:
                raise Invalid("topic_regex", f"bad regular expression {self.topic_regex!r}: {exc}") from None
        if self.refresh_s <= 0 or self.timeout_s <= 0:
            raise Invalid("refresh_s" if self.refresh_s <= 0 else "timeout_s", "must be positive")
        for name in self.consumer:
            if name in MANAGED:
                raise Invalid(f"consumer.{name}", "is set by the source")


@source("kafka")
class KafkaSource(Source):
    Options = KafkaSourceOptions

    @classmethod
    def parse_position(cls, text: str) -> dict[str, Any]:
        """`topic:partition:offset[,topic:partition:offset...]` (the next offset to read)."""
        offsets: dict[str, dict[str, int]] = {}
        for item in text.split(","):
            parts = item.strip().rsplit(":", 2)
            if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
                raise ValueError(f"bad kafka position {item!r}: expected topic:partition:offset[,...]")
            offsets.setdefault(parts[0], {})[parts[1]] = int(parts[2])
        return {"offsets": offsets}

    def open(self, checkpoint: dict[str, Any] | None) -> None:
        o: KafkaSourceOptions = self.options
        config = {
            "group.id": f"dbus-{self.pipeline}",  # needed by librdkafka; never joined, never committed
            **o.consumer,
            "bootstrap.servers": o.bootstrap,
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": o.start,
            "logger": log,
        }
        self.consumer = Consumer(config)
        saved = (checkpoint or {}).get("offsets", {})
        self.offsets: dict[str, dict[str, int]] = {t: dict(p) for t, p in saved.items()}
        self.assigned: set[tuple[str, int]] = set()
        self.eof: set[tuple[str, int]] = set()
        self.first_refresh = True
        self.last_refresh = 0.0
        self.last_ts = 0.0
        self._refresh()

    def _refresh(self) -> None:
        o: KafkaSourceOptions = self.options
        try:
            metadata = self.consumer.list_topics(timeout=o.timeout_s)
        except KafkaException as exc:
            raise DbusError(f"kafka source: cannot reach {o.bootstrap}: {exc.args[0].str()}") from None
        if o.topic_regex is not None:
            topics = [t for t in metadata.topics if o.compiled.fullmatch(t) and not t.startswith("__")]
        else:
            topics = o.topics
            missing = [t for t in topics if t not in metadata.topics or metadata.topics[t].error is not None]
            if missing and self.first_refresh:
                raise DbusError(f"kafka source: topic {missing[0]} does not exist on {o.bootstrap}")
        new = []
        for topic in sorted(topics):
            t = metadata.topics.get(topic)
            if t is None or t.error is not None:
                continue
            for partition in sorted(t.partitions):
                if (topic, partition) in self.assigned:
                    continue
                saved = self.offsets.get(topic, {}).get(str(partition))
                if saved is not None:
                    offset = saved
                elif self.first_refresh:
                    offset = OFFSET_BEGINNING if o.start == "earliest" else OFFSET_END
                else:
                    offset = OFFSET_BEGINNING  # appeared while running: all of it
                new.append(TopicPartition(topic, partition, offset))
                self.assigned.add((topic, partition))
        if new:
            self.consumer.incremental_assign(new)
            log.info("[%s] kafka source assigned %d partitions", self.pipeline, len(new))
        self.first_refresh = False
        self.last_refresh = time.monotonic()

    def poll(self, max_rows: int, seq: int) -> RowBatch | None:
        if time.monotonic() - self.last_refresh >= self.options.refresh_s:
            self._refresh()
        messages = self.consumer.consume(num_messages=min(max_rows, 100_000), timeout=0.1)
        runs: list[list[Any]] = []
        for msg in messages:
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    self.eof.add((msg.topic(), msg.partition()))
                    continue
                if err.fatal() or not err.retriable():
                    raise DbusError(f"kafka source: {msg.topic()}/{msg.partition()}: {err.str()} ({err.name()})")
                log.warning("[%s] kafka source: %s", self.pipeline, err.str())
                continue
            where = (msg.topic(), msg.partition())
            self.eof.discard(where)
            if runs and (runs[-1][0].topic(), runs[-1][0].partition()) == where:
                runs[-1].append(msg)
            else:
                runs.append([msg])
        if not runs:
            return None
        now = time.time()
        parts = [self._run(run, now) for run in runs]
        for run in runs:
            last = run[-1]
            self.offsets.setdefault(last.topic(), {})[str(last.partition())] = last.offset() + 1
        ts = max(p.data.column("ts")[p.num_rows - 1].as_py() for p in parts)
        self.last_ts = ts
        checkpoint = {"offsets": {t: dict(p) for t, p in self.offsets.items()}}
        return RowBatch(self.pipeline, seq, parts, checkpoint, ts)

    def _run(self, messages: list[Any], now: float) -> TableRows:
        topic, partition = messages[0].topic(), messages[0].partition()
        n = len(messages)
        offsets = [m.offset() for m in messages]
        stamps = [m.timestamp() for m in messages]
        headers = [[{"key": k, "value": v} for k, v in (m.headers() or ())] for m in messages]
        after = pa.StructArray.from_arrays([
            pa.array([topic] * n, pa.string()),
            pa.array([partition] * n, pa.int32()),
            pa.array(offsets, pa.int64()),
            pa.array([m.key() for m in messages], pa.binary()),
            pa.array([m.value() for m in messages], pa.binary()),
            pa.array(headers, RAW_TYPE.field("headers").type),
            pa.array([ts for _, ts in stamps], pa.int64()),
            pa.array([kind for kind, _ in stamps], pa.int8()),
        ], fields=list(RAW_TYPE))
        data = pa.RecordBatch.from_arrays([
            pa.array(["insert"] * n, pa.string()),
            pa.array([topic] * n, pa.string()),
            pa.array(offsets, pa.int64()),
            pa.nulls(n, pa.string()),
            pa.array([partition] * n, pa.int32()),
            pa.array([f"{topic}/{partition}/{o}" for o in offsets], pa.string()),
            pa.array([ts / 1000 for _, ts in stamps], pa.float64()),
            pa.array([now] * n, pa.float64()),
            pa.nulls(n, RAW_TYPE),
            after,
        ], schema=SCHEMA)
        return TableRows(topic, str(partition), (), data)

    def caught_up(self) -> bool:
        return bool(self.assigned) and self.assigned <= self.eof

    def lag_seconds(self) -> float:
        return 0.0 if self.caught_up() or not self.last_ts else max(0.0, time.time() - self.last_ts)

    def close(self) -> None:
        consumer = getattr(self, "consumer", None)
        if consumer is not None:
            consumer.close()
