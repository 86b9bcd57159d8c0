"""Where is my row? `trace(cfg, row, status, checkpoint)` says, for one row change of a binlog (a row of a
`history` table, or `file:offset`), whether the pipeline has read it, whether each sink has acknowledged it,
and for `kafka` sinks the topic, partition and offset of its message.

Read and acknowledged are checkpoint comparisons: a `mysql` position `{"file", "offset", "skip", "gtid"}` covers
a row when the row's event is before `file:offset` (the start of the transaction in progress, or the position
after the last one), or the row is one of the first `skip` rows of that transaction. The reader's status gives
the position after the newest batch read (`read_position`) and after the newest batch each sink acknowledged
(`sink_positions`); without a running reader the saved checkpoint answers for every sink alike.

The Kafka lookup reads the sink's topic for the row's table with a consumer of its own (assign, no group,
`read_committed`): in each partition from the first message produced after the row's commit time minus
SLACK_S (`offsets_for_times`), forward, comparing each message's `position` header with the row's, until a
message past it or `max_messages` messages. Messages of a partition come in source order (a replay after a
restart repeats rows from the checkpoint on), so the first match is the row's first delivery. `format: arrow`
messages hold a run: the run whose rows include the position matches. `format: debezium` is not looked up.
"""

from __future__ import annotations

import html
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from dbus_ray.config import PipelineConfig
from dbus_ray.errors import DbusError
from dbus_ray.mysql.offset import position_key

SLACK_S = 60.0  # clocks of the database and of the sink's host may differ by this much
MAX_MESSAGES = 100_000  # per partition


@dataclass(frozen=True)
class RowAt:
    """A row change's place in the binlog: its event's file and offset, its index in its transaction, txid."""

    file: str
    offset: int
    index: int = 0
    txid: str | None = None
    db: str | None = None
    table: str | None = None
    ts: float | None = None  # commit (or event) time, unix seconds: where the Kafka search starts

    @property
    def key(self) -> tuple[int, int, int]:
        return (*position_key(self.file, self.offset), self.index)

    def __str__(self) -> str:
        return f"{self.file}:{self.offset}#{self.index}"


def row_at(row: Any) -> RowAt:
    """A history row (dict, pandas Series, one-row pyarrow Table or DataFrame) or `file:offset` -> RowAt."""
    if hasattr(row, "to_pylist"):  # a pyarrow Table
        rows = row.to_pylist()
        if len(rows) != 1:
            raise DbusError(f"trace: expected one row change, got a table of {len(rows)} rows")
        row = rows[0]
    elif hasattr(row, "to_dict") and hasattr(row, "columns"):  # a DataFrame
        if len(row) != 1:
            raise DbusError(f"trace: expected one row change, got a DataFrame of {len(row)} rows")
        row = row.iloc[0].to_dict()
    elif hasattr(row, "to_dict"):  # a pandas Series
        row = row.to_dict()
    if isinstance(row, str):
        file, _, offset = row.strip().rpartition(":")
        if not file or not offset.isdigit():
            raise DbusError(f"trace: bad position {row!r}: expected FILE:OFFSET or a row of bus.history()")
        return RowAt(file, int(offset))
    if not isinstance(row, dict) or "file" not in row or "offset" not in row:
        raise DbusError(f"trace: bad position {str(row)[:80]!r}: expected FILE:OFFSET or a row of bus.history()")
    when = row.get("commit_ts") or row.get("ts")
    ts = when.timestamp() if hasattr(when, "timestamp") else (float(when) if when is not None else None)
    return RowAt(str(row["file"]), int(row["offset"]), int(row.get("index") or 0), row.get("txid"),
                 row.get("db"), row.get("table"), ts)


def covers(position: Any, row: RowAt) -> bool | None:
    """The row is before the source position `position` (a `mysql` checkpoint); None when it cannot tell."""
    if not isinstance(position, dict) or "file" not in position or "offset" not in position:
        return None
    file, offset = str(position["file"]), int(position["offset"])
    if position_key(row.file, row.offset) < position_key(file, offset):
        return True
    skip = int(position.get("skip") or 0)
    same = row.txid is not None and row.txid in (position.get("gtid"), f"{file}:{offset}")
    return bool(skip and same and row.index < skip)


def _brief(position: Any) -> str | None:
    if isinstance(position, dict) and "file" in position:
        skip = f"+{position['skip']}" if position.get("skip") else ""
        return f"{position['file']}:{position['offset']}{skip}"
    return None if position is None else str(position)


@dataclass
class Trace:
    """What `bus.trace()` found: one row per sink in `to_pandas()`, an HTML table in a notebook."""

    pipeline: str
    row: RowAt
    read: bool | None
    read_position: str | None
    sinks: list[dict[str, Any]] = field(default_factory=list)

    def to_pandas(self) -> Any:
        import pandas as pd

        frame = pd.DataFrame(self.sinks, columns=["sink", "type", "acknowledged", "acknowledged_to", "topic",
                                                  "partition", "offset", "note"])
        return frame.astype({"partition": "Int64", "offset": "Int64"})

    def sink(self, name: str) -> dict[str, Any]:
        return next(s for s in self.sinks if s["sink"] == name)

    def summary(self) -> str:
        read = {True: "read", False: "NOT read yet", None: "read: unknown"}[self.read]
        return f"pipeline {self.pipeline}, row {self.row}: {read} (reader at {self.read_position})"

    def __repr__(self) -> str:
        return self.summary() + "\n" + self.to_pandas().to_string(index=False)

    def _repr_html_(self) -> str:
        return f"<p>{html.escape(self.summary())}</p>" + self.to_pandas().to_html(index=False)


def trace(cfg: PipelineConfig, row: Any, status: dict[str, Any] | None, checkpoint: dict[str, Any] | None,
          max_messages: int = MAX_MESSAGES) -> Trace:
    """See the module docstring. `status`: the reader's live status (None when it is not running);
    `checkpoint`: the saved one (`{"source": ...}`)."""
    at = row_at(row)
    saved = (checkpoint or {}).get("source")
    read_pos = (status or {}).get("read_position") or saved
    sink_pos = (status or {}).get("sink_positions") or {}
    out = Trace(cfg.name, at, covers(read_pos, at), _brief(read_pos))
    for sink in cfg.sinks:
        pos = sink_pos.get(sink.name, saved)
        acked = covers(pos, at)
        entry: dict[str, Any] = {"sink": sink.name, "type": sink.type, "acknowledged": acked,
                                 "acknowledged_to": _brief(pos), "topic": None, "partition": None, "offset": None,
                                 "note": None}
        if sink.type == "kafka":
            _kafka(cfg, sink.options, at, entry, max_messages)
        out.sinks.append(entry)
    return out


def _kafka(cfg: PipelineConfig, o: Any, at: RowAt, entry: dict[str, Any], max_messages: int) -> None:
    if o.format == "debezium":
        entry["note"] = "not looked up: format debezium"
        return
    if at.db is None or at.table is None:
        entry["note"] = "not looked up: give a row of bus.history() (its table names the topic)"
        return
    topic = o.topic.format(db=at.db, table=at.table, pipeline=cfg.name)
    entry["topic"] = topic
    try:
        found, looked = find_message(o.bootstrap, topic, at, o.format == "arrow", max_messages,
                                     o.producer, o.delivery == "exactly_once")
    except DbusError as exc:
        entry["note"] = str(exc)
        return
    if found is None:
        entry["note"] = f"no message with this position ({looked:,} messages read)"
    else:
        entry["partition"], entry["offset"] = found


def _position(msg: Any) -> dict[str, Any] | None:
    for name, value in msg.headers() or ():
        if name == "position" and value:
            try:
                return json.loads(value)
            except ValueError:
                return None
    return None


def _in_run(msg: Any, at: RowAt) -> bool:
    """An arrow message (a run of rows) holds the row at `at`."""
    import pyarrow as pa

    data = pa.ipc.open_stream(msg.value()).read_all()
    return any(f == at.file and o == at.offset and i == at.index
               for f, o, i in zip(data.column("file").to_pylist(), data.column("offset").to_pylist(),
                                  data.column("index").to_pylist()))


def find_message(bootstrap: str, topic: str, at: RowAt, runs: bool, max_messages: int = MAX_MESSAGES,
                 settings: dict[str, Any] | None = None, committed: bool = False
                 ) -> tuple[tuple[int, int] | None, int]:
    """((partition, offset) of the first message holding the row at `at`, or None; messages read)."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    from dbus_ray.kafka.client import client_config, kafka_reason

    conf = {**client_config(bootstrap, settings), "group.id": f"dbus-trace-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False, "enable.partition.eof": True,
            "isolation.level": "read_committed" if committed else "read_uncommitted"}
    consumer = Consumer(conf)
    looked = 0
    try:
        meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if meta is None or meta.error is not None or not meta.partitions:
            raise DbusError(f"topic {topic} is not on {bootstrap}")
        since_ms = int(((at.ts or 0.0) - SLACK_S) * 1000) if at.ts else 0
        for p in sorted(meta.partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if high <= low:
                continue
            start = low
            if since_ms > 0:
                [tp] = consumer.offsets_for_times([TopicPartition(topic, p, since_ms)], timeout=10)
                start = high if tp.offset < 0 else max(low, tp.offset)
            if start >= high:
                continue
            consumer.assign([TopicPartition(topic, p, start)])
            seen = 0
            while seen < max_messages:
                msg = consumer.poll(10)
                if msg is None:
                    break
                if msg.error() is not None:
                    if msg.error().code() == -191:  # _PARTITION_EOF
                        break
                    raise DbusError(f"topic {topic}: {kafka_reason(KafkaException(msg.error()))}")
                seen += 1
                looked += 1
                pos = _position(msg) if msg.value() is not None else None  # tombstones carry no row
                if pos is None or "file" not in pos:
                    continue
                key = (*position_key(str(pos["file"]), int(pos["offset"])), int(pos.get("index") or 0))
                if key == at.key or (runs and key <= at.key and _in_run(msg, at)):
                    return (p, msg.offset()), looked
                if key > at.key:
                    break
                if msg.offset() >= high - 1:
                    break
        return None, looked
    except KafkaException as exc:
        raise DbusError(f"topic {topic} on {bootstrap}: {kafka_reason(exc)}") from None
    finally:
        consumer.close()
