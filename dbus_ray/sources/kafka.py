"""Source `kafka`: consumes Kafka topics (a list, or every topic matching `topic_regex`) over all their
partitions, for mirroring to another cluster (sink `kafka` with `format: raw`) or into files.

- Without `group`, partitions are taken with `assign()` (no consumer-group membership, no rebalances); new
  topics and partitions are picked up every `refresh_s` seconds and read from their beginning.
- With `group`, the source joins that consumer group (`subscribe()`; a regex is handed to librdkafka as
  `^(pattern)$`) and reads the partitions the group gives it. A partition it is given starts at its offset
  in our checkpoint when there is one (the checkpoint stays the source of truth), else at the group's
  committed offset, else at `start`. A revoked partition stops counting for `caught_up`; the rows already
  read from it are still delivered by this pipeline, so delivery is at least once across a rebalance:
  the member that gets the partition starts at the group's last committed offset and may read again rows
  we read (and deliver) after that commit. Each rebalance (eager protocol) revokes every partition and
  gives some back: a partition given back continues where we read up to, not at the committed offset.
- `commit_offsets` (needs `group`) commits to the group the offsets of each checkpoint once it is saved,
  i.e. after every sink delivered its rows (never offsets merely read), asynchronously, for the partitions
  assigned at that moment; once more (synchronously) for partitions being revoked and on close. Kafka's
  tools (`kafka-consumer-groups --describe`) then show the pipeline's progress and lag.
- Offsets of partitions we no longer own: with `commit_offsets`, a partition revoked and not given back
  is dropped from later checkpoints (after its acknowledged offset was committed, the group's offset is
  the truth: a stale one of ours would make a later reassignment re-read what another member delivered);
  without it, the group holds no offset, so our last position stays in the checkpoint and is used if the
  partition comes back (re-reading what another member read meanwhile, never skipping).
- Positions live in the pipeline's checkpoint, not in Kafka: `{"offsets": {topic: {partition: next offset}}}`.
  A resumed run continues after the last acknowledged message of each partition. Without a checkpoint,
  `start` decides (`earliest` | `latest`).
- Each partition's messages become one run (`TableRows`) with `db` = topic and `table` = the partition
  number, in partition order; the message is kept as it was in the `after` image (key, value, headers,
  timestamp: see `dbus_ray.kafka.raw`). `op` is `insert`, `file`/`offset`/`index` are topic, offset and
  partition, `txid` is `topic/partition/offset` and `ts` the message timestamp.
- Caught up: every assigned partition has reached its end (partition EOF) since its last message; with
  `group`, only while the group's assignment is held (none between a revoke and the next assign).
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import pyarrow as pa
from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    OFFSET_INVALID,
    Consumer,
    KafkaError,
    KafkaException,
    TopicPartition,
)

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
    # the consumer group to join (subscribe, rebalances); none: take every partition with assign()
    group: str | None = None
    # commit the acknowledged (delivered) offsets to the group, for Kafka's tools; needs group
    commit_offsets: bool = False

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
        if self.group is not None and not self.group.strip():
            raise Invalid("group", "must not be empty")
        if self.group is not None and "group.id" in self.consumer:
            raise Invalid("consumer.group.id", "is set by group")
        if self.commit_offsets and self.group is None:
            raise Invalid("commit_offsets", "needs group (the consumer group to commit to)")


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
        config: dict[str, Any] = {
            "group.id": f"dbus-{self.pipeline}",  # without `group`: needed by librdkafka, never joined
            **o.consumer,
            "bootstrap.servers": o.bootstrap,
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": o.start,
            "logger": log,
        }
        if o.group is not None:
            config["group.id"] = o.group
            config.setdefault("topic.metadata.refresh.interval.ms", int(o.refresh_s * 1000))  # new partitions
            config["on_commit"] = self._on_commit
        # incremental rebalances (the cooperative assignor, or KIP-848's protocol): assign/revoke what changed
        self.cooperative = ("cooperative" in str(config.get("partition.assignment.strategy", ""))
                            or str(config.get("group.protocol", "")).lower() == "consumer")
        self.consumer = Consumer(config)
        saved = (checkpoint or {}).get("offsets", {})
        self.offsets: dict[str, dict[str, int]] = {t: dict(p) for t, p in saved.items()}
        self.assigned: set[tuple[str, int]] = set()
        self.eof: set[tuple[str, int]] = set()
        self.first_refresh = True
        self.last_refresh = 0.0
        self.last_ts = 0.0
        self.joined = False  # with a group: an assignment is held (not between a revoke and the next assign)
        self.revoked: set[tuple[str, int]] = set()  # revoked since the last assign
        self.acked: dict[str, dict[str, int]] = {}  # the offsets of the newest saved checkpoint
        self.commit_pending = False
        if o.group is None:
            self._refresh()
            return
        self._metadata(check_listed=True)
        # our checkpoint's partitions count as revoked until the group's first assignment: with
        # commit_offsets, those it does not give us are dropped (see the module docstring)
        self.revoked = {(t, int(p)) for t, ps in self.offsets.items() for p in ps}
        topics = [f"^({o.topic_regex})$"] if o.topic_regex is not None else list(o.topics)
        self.consumer.subscribe(topics, on_assign=self._on_assign, on_revoke=self._on_revoke,
                                on_lost=self._on_lost)
        self.last_refresh = float("inf")  # the group hands out new partitions: no refresh of our own

    def _metadata(self, check_listed: bool) -> Any:
        """The cluster's metadata; fails with one line when the broker cannot be reached or (`check_listed`)
        a listed topic does not exist."""
        o: KafkaSourceOptions = self.options
        try:
            metadata = self.consumer.list_topics(timeout=o.timeout_s)
        except KafkaException as exc:
            raise DbusError(f"kafka source: cannot reach {o.bootstrap}: {exc.args[0].str()}") from None
        for t in o.topics if check_listed else ():
            if t not in metadata.topics or metadata.topics[t].error is not None:
                raise DbusError(f"kafka source: topic {t} does not exist on {o.bootstrap}")
        return metadata

    # ------------------------------------------------------------------ group membership (inside poll)
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Each partition at our checkpoint's offset, else the group's committed one (OFFSET_INVALID: the
        stored offset), else `start` (auto.offset.reset)."""
        given = {(tp.topic, tp.partition) for tp in partitions}
        if self.options.commit_offsets:  # revoked and not given back: the group's offset is the truth now
            for topic, partition in self.revoked - given:
                self.offsets.get(topic, {}).pop(str(partition), None)
                if topic in self.offsets and not self.offsets[topic]:
                    del self.offsets[topic]
        self.revoked.clear()
        for tp in partitions:
            saved = self.offsets.get(tp.topic, {}).get(str(tp.partition))
            tp.offset = saved if saved is not None else OFFSET_INVALID
        if self.cooperative:
            consumer.incremental_assign(partitions)
        else:
            consumer.assign(partitions)
        self.assigned |= given
        self.joined = True
        log.info("[%s] kafka source: group %s assigned %s", self.pipeline, self.options.group,
                 _names(given) or "nothing")

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        taken = {(tp.topic, tp.partition) for tp in partitions}
        if self.options.commit_offsets:  # what was delivered of them, before another member starts there
            self._commit(taken & self.assigned, asynchronous=False)
        self._drop(consumer, partitions, taken)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Partitions lost without a revoke (session timeout): no commit is possible any more."""
        self._drop(consumer, partitions, {(tp.topic, tp.partition) for tp in partitions})

    def _drop(self, consumer: Consumer, partitions: list[TopicPartition], taken: set[tuple[str, int]]) -> None:
        self.assigned -= taken
        self.eof -= taken
        self.revoked |= taken
        if self.cooperative:
            consumer.incremental_unassign(partitions)
            self.joined = bool(self.assigned)
        else:
            consumer.unassign()
            self.joined = False
        log.info("[%s] kafka source: group %s revoked %s", self.pipeline, self.options.group, _names(taken))

    def committed(self, checkpoint: dict[str, Any] | None) -> None:
        """The checkpoint is saved (every sink delivered its rows): remember its offsets; `poll` commits them
        (this runs in the reader's thread, the consumer is used by the one that polls)."""
        if self.options.commit_offsets and checkpoint:
            self.acked = {t: dict(p) for t, p in checkpoint.get("offsets", {}).items()}
            self.commit_pending = True

    def _commit(self, partitions: set[tuple[str, int]], asynchronous: bool) -> None:
        offsets = [TopicPartition(t, p, self.acked[t][str(p)]) for t, p in sorted(partitions)
                   if str(p) in self.acked.get(t, {})]
        if not offsets:
            return
        try:
            self.consumer.commit(offsets=offsets, asynchronous=asynchronous)
        except KafkaException as exc:  # e.g. a rebalance under way: the next checkpoint commits again
            log.warning("[%s] kafka source: commit to group %s failed: %s", self.pipeline, self.options.group,
                        exc.args[0].str())

    def _on_commit(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        if err is not None:
            log.warning("[%s] kafka source: commit to group %s failed: %s", self.pipeline, self.options.group,
                        err.str())

    def _refresh(self) -> None:
        o: KafkaSourceOptions = self.options
        metadata = self._metadata(check_listed=self.first_refresh)  # a listed topic deleted later: skipped
        if o.topic_regex is not None:
            topics = [t for t in metadata.topics if o.compiled.fullmatch(t) and not t.startswith("__")]
        else:
            topics = o.topics
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
        if self.commit_pending:
            self.commit_pending = False
            self._commit(set(self.assigned), asynchronous=True)
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
            if self.options.group is not None and (last.topic(), last.partition()) not in self.assigned:
                continue  # read before its revoke: delivered, but the partition is another member's now
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
        if self.options.group is not None:  # a member may be given no partition (more members than them)
            return self.joined and self.assigned <= self.eof
        return bool(self.assigned) and self.assigned <= self.eof

    def lag_seconds(self) -> float:
        return 0.0 if self.caught_up() or not self.last_ts else max(0.0, time.time() - self.last_ts)

    def close(self) -> None:
        consumer = getattr(self, "consumer", None)
        if consumer is None:
            return
        if self.commit_pending:  # the final checkpoint (saved just before close)
            self.commit_pending = False
            self._commit(set(self.assigned), asynchronous=False)
        consumer.close()


def _names(partitions: set[tuple[str, int]]) -> str:
    return ", ".join(f"{t}/{p}" for t, p in sorted(partitions))
