"""Sink `kafka`: every row change as one Kafka message (confluent-kafka / librdkafka).

- value: the row change serialized by `format` (`json`: the documented JSON form; `avro`: see
  `dbus_ray.serializers.avro`, Confluent wire format when `schema_registry` is set, registered under the
  `subject_name_strategy` subject; `arrow` and `raw`: below);
- key: the primary key (or the `key` columns) as a JSON object, e.g. `{"id":42}`; partitioned with
  murmur2 (`partitioner: murmur2_random`, Java's default), so one key always lands in one partition and
  keeps its order; a `key` column a table does not have fails the write before any of its batch is
  produced (`dbus_ray.kafka.key_columns`), naming the columns, the table and the table's columns; a row
  whose images leave columns out (binlog_row_image MINIMAL/NOBLOB: its `absent`) takes each key column from
  the image that carries it (`image_key`: an update's after image, else its before image; a tombstone's old
  key from the before image), and one that no image carries fails the write with one line naming the
  column, the table, the op and the binlog position (nothing from that row on is produced);
- `tombstones: true` (for compacted topics): a delete is followed by a tombstone (the key, a null value),
  and an update that changes the key is preceded by a tombstone of the old key (the mysql source sends such
  an update as a delete of the old key and an insert of the new one unless its `key_change` is `update`);
- headers: `op`, `db`, `table` and `position` (the row's source position as compact JSON:
  `{"file":..,"offset":..,"gtid":..,"index":..}`).

`format: arrow`: one message per table run instead of one per row: the value is an Arrow IPC stream of one
record batch (`dbus_ray.serializers.arrow`: the meta columns, `before` and `after` as struct columns of the
table's Arrow types, schema metadata `dbus.db`, `dbus.table`, `dbus.key`, `dbus.pipeline`), the key
`{"db":..,"table":..}` (so a table's runs stay in order in one partition), headers `db`, `table`, `rows` and
`position` (the run's first row). `format: raw` mirrors a kafka source (`dbus_ray.kafka.raw`). `avro` and
`debezium` have no field for the columns a row image leaves out: a batch with such a run fails with one line
before any of it is produced (`dbus_ray.serializers.require_full_images`; `json` names them in `absent`).

`topic` is fixed (`cdc`) or a template over `{db}`, `{table}` and `{pipeline}` (default `dbus.{db}.{table}`).
A topic that does not exist is created with `partitions` partitions before the first message goes to it
(`create_topics: false` turns that off: the sink then fails on a missing topic instead of letting the
broker auto-create it with its default partition count).

Delivery:
- `at_least_once` (default): idempotent producer, `acks=all`. `write(batch)` produces every row, flushes
  and checks the deliveries; any error raises one line naming the sink, the topic, the row's position and
  the broker's reason, so the checkpoint does not advance past an unacknowledged row. The producer reports
  failed deliveries only (`delivery.report.only.error`: no Python call per delivered message): after the
  flush left nothing outstanding, a batch whose messages brought no error report was delivered whole
  (`acked` = messages produced - failed - still outstanding).
- `exactly_once`: a transactional producer (`transactional.id` = `dbus-<pipeline>-<sink>`, so a restarted
  writer fences its zombie). Each `write(batch)` is one transaction holding the batch's rows AND the
  checkpoint record (`{"source": batch.checkpoint, "seq": .., "time": ..}`, keyed by the pipeline name)
  in the compacted topic `checkpoint_topic` (default `__dbus_checkpoints`): rows and checkpoint commit
  together. Read it back with `dbus_ray.kafka.checkpoints.KafkaCheckpointStore` (`checkpoint.store:
  kafka`, whose `save` is then a no-op). Consumers must read with `isolation.level=read_committed`.

A row whose message is larger than the producer's `message.max.bytes` (librdkafka refuses it when it is
produced):
- `on_oversize: fail` (default): the write fails with one line naming the topic, the row's position, its
  table and key, its size and the limit; nothing after the row is produced and the checkpoint stays before it.
- `on_oversize: dead_letter`: the row goes to `dead_letter_topic` instead (in the same transaction under
  exactly_once) and the pipeline goes on. The dead-letter message has the row's key, headers `dbus.reason:
  oversize` and `dbus.topic` (plus the row's own headers when they fit), and as value a JSON object:
  `pipeline`, `sink`, `topic` (where the row was going), `table`, `key` (the message key as text),
  `position` (the row's source position: `{"file","offset","gtid","index"}` for a binlog,
  `{"topic","partition","offset"}` for a kafka source), `size` (key + value + header bytes), `limit`,
  `reason`, `payload_bytes` (the value's size) and `payload`: the head of the value, base64, at most
  `dead_letter_payload_bytes` (1024) and only as much as fits under the limit (possibly nothing), with
  `payload_truncated` true when it is not all of it (always, for a value that is oversize by itself).
  A record that cannot fit even without payload fails the write like `fail`.
The limit is the smaller of the producer's `message.max.bytes` and the `max.message.bytes` of the sink's
fixed topic as the broker reports it at open: the sink lowers its producer's limit to the topic's, so the
producer refuses such a row before it reaches the broker and the row goes the `on_oversize` way (the
broker would reject the whole record batch, after later rows were sent). A templated topic whose
`max.message.bytes` is below the producer's limit fails the write when it is first used, naming both.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from dbus_ray.acks import Checkpoint
from dbus_ray.errors import DbusError
from dbus_ray.kafka.client import (
    client_config,
    kafka_reason,
)
from dbus_ray.kafka.key_columns import KeyColumns, image_key
from dbus_ray.kafka.messages import key_text, message_size, position_of
from dbus_ray.kafka.raw import raw_messages, raw_positions
from dbus_ray.kafka.sink_options import KafkaOptions, sink_producer_config
from dbus_ray.kafka.sink_topics import SinkTopics
from dbus_ray.model import RowBatch, TableRows, dumpb, dumps
from dbus_ray.registry import Sink, sink
from dbus_ray.serializers import FULL_IMAGE_FORMATS, get_serializer, json_columns, require_full_images
from dbus_ray.serializers.debezium import produce_debezium, start_heartbeat
from dbus_ray.serializers.json import decimals_as_text, encode_jsonb, json_text
from dbus_ray.serializers.json_columns import produce_json

log = logging.getLogger("dbus.kafka")

#: Rows serialized and handed to the producer at a time: the Python objects of one slice are alive at once,
#: not those of the whole batch.
SLICE_ROWS = 2048

def checkpoint_record(pipeline: str, batch: RowBatch, sink_name: str) -> bytes:
    """The checkpoint committed in the transaction of `batch`'s rows (exactly-once): the position after it."""
    return dumps({**Checkpoint(batch.checkpoint, batch.seq, time.time()).to_dict(), "sink": sink_name}).encode()


@sink("kafka")
class KafkaSink(SinkTopics, Sink):
    Options = KafkaOptions

    def open(self) -> None:
        o: KafkaOptions = self.options
        self.where = f"kafka sink {self.name}"
        self.exactly_once = o.delivery == "exactly_once"
        options: dict[str, Any] = {}
        if o.schema_registry:
            options = {"schema_registry": o.schema_registry, "subject_name_strategy": o.subject_name_strategy}
        if o.format == "debezium":
            options = {"options": o.debezium, "key": o.key}
        self.serializer = None if o.format == "raw" else get_serializer(o.format, **options)
        self.key_columns = KeyColumns(o.key)  # `key` checked against each table's columns
        self.full_images = o.format in FULL_IMAGE_FORMATS  # runs whose images leave columns out refused
        self.admin = AdminClient(client_config(o.bootstrap, o.producer))
        self._open_topics()  # fails fast when the broker is unreachable
        if "{" not in o.topic:
            self._ensure_topic(o.topic)
        self.dead_letter = o.on_oversize == "dead_letter"
        if self.dead_letter:
            self._ensure_topic(o.dead_letter_topic)
        self.dead_lettered = 0
        # json with the default message key and no tombstones: messages built column by column, no dict per row
        self.columnwise = o.format == "json" and o.key is None and not o.tombstones
        self.fatal: str | None = None
        config = sink_producer_config(o, f"dbus-{self.pipeline}-{self.name}")
        config["error_cb"] = self._on_error
        # one report per failed message only, to the producer-wide callback: delivered messages cost no
        # Python call (the sink counts what it produced, the failures and what is still outstanding)
        config["delivery.report.only.error"] = True
        config["on_delivery"] = self._on_delivery
        self.limit = int(config.get("message.max.bytes", 1_000_000))
        topic_limit = self._topic_limit(o.topic) if "{" not in o.topic else self.limit
        if topic_limit < self.limit:
            self.limit = config["message.max.bytes"] = topic_limit
            config["batch.size"] = min(int(config["batch.size"]), self.limit)
        if self.exactly_once:
            self._ensure_topic(o.checkpoint_topic, partitions=1, config={"cleanup.policy": "compact"})
            config["transactional.id"] = f"dbus-{self.pipeline}-{self.name}"
            config.setdefault("transaction.timeout.ms", o.delivery_timeout_ms)  # must be >= delivery timeout
        self._producer_config = config
        self.producer = Producer(config)
        if self.dead_letter:
            self._warm(o.dead_letter_topic)
        if self.exactly_once:
            self._warm(o.checkpoint_topic)
            try:
                self.producer.init_transactions(o.timeout_s)
            except KafkaException as exc:
                raise DbusError(f"{self.where}: cannot start transactions on {o.bootstrap}: {kafka_reason(exc)}") \
                    from None
        self.heartbeat = start_heartbeat(self) if o.format == "debezium" else None
        self.errors: list[tuple[str, str, str]] = []
        self.produced = 0  # messages handed to the producer since the write began
        self.failed = 0  # of them, those whose delivery failed
        log.info("[%s] %s open: %s -> %s (%s, %s)", self.pipeline, self.where, o.bootstrap, o.topic, o.format,
                 o.delivery)

    # ------------------------------------------------------------------ writing
    @property
    def acked(self) -> int:
        """Messages of the current write the broker acknowledged (exact once nothing is outstanding)."""
        return self.produced - self.failed - len(self.producer)

    def _on_delivery(self, err: Any, msg: Any) -> None:
        """The report of a failed delivery (`delivery.report.only.error`: never called for a delivered one)."""
        if err is None:
            return
        self.failed += 1
        if len(self.errors) < 10:
            topic = msg.topic()
            position = ("checkpoint" if topic == self.options.checkpoint_topic
                        else position_of(msg, self.options.format == "json"))
            self.errors.append((topic, position, f"{err.str()} ({err.name()})"))

    def write(self, batch: RowBatch) -> None:
        if not batch.parts and (not self.exactly_once or batch.checkpoint is None):
            return
        for part in batch.parts:  # a `key` column a table lacks fails the batch before any of it is produced,
            self.key_columns.check(part)
            if self.full_images:  # and so do absent columns in a format that would write them as null
                require_full_images(part, self.options.format)
        self.errors = []
        self.produced = self.failed = 0
        expected = 0
        if self.exactly_once:
            self._txn("begin_transaction", self.producer.begin_transaction)
        try:
            if self.options.format == "debezium":  # messages per row vary, topics are <prefix>.<db>.<table>
                expected += produce_debezium(self, batch)
            else:
                for part in batch.parts:
                    expected += self._produce_part(part)
            if self.exactly_once and batch.checkpoint is not None:
                self._produce(self.options.checkpoint_topic, checkpoint_record(self.pipeline, batch, self.name),
                              self.pipeline.encode(), None, "checkpoint", "checkpoint")
                expected += 1
            self._flush()
            self._check(expected)
            if self.exactly_once:
                self._txn("commit_transaction", lambda: self.producer.commit_transaction(self.options.timeout_s))
        except BaseException:
            if self.exactly_once:
                self._abort()
            raise

    def _produce_part(self, part: TableRows) -> int:
        topic = self.topic_for(part)
        if self.options.format == "raw":  # key, value, headers, timestamp and partition as the source had them
            return self._produce_raw(topic, part)
        if self.options.format == "arrow":
            return self._produce_arrow(topic, part)
        produced = 0
        step = json_columns.SLICE_ROWS if self.columnwise else SLICE_ROWS
        for start in range(0, part.num_rows, step):  # bounded memory: a slice's row objects at a time
            rows = TableRows(part.db, part.table, part.key, part.data.slice(start, step))
            produced += self._produce_rows(topic, rows)
        return produced

    def _produce_raw(self, topic: str, rows: TableRows) -> int:
        """A run of raw Kafka messages (`dbus_ray.kafka.raw`) with the same key, value, headers and timestamp,
        to the source partition modulo the topic's partition count (so each source partition's order is
        kept). The position of a message is `{"topic":..,"partition":..,"offset":..}` of the source."""
        count = self.partition_count[topic]  # known since topic_for warmed the topic
        n = 0
        for (partition, key, value, headers, timestamp), position in zip(raw_messages(rows), raw_positions(rows)):
            self._produce(topic, value, key, headers or None, position, f"{rows.db}/{partition}",
                          partition=partition % count, timestamp=timestamp or 0)
            n += 1
        return n

    def _produce_arrow(self, topic: str, rows: TableRows) -> int:
        """The whole run as one message: an Arrow IPC stream (see the module docstring)."""
        if not rows.num_rows:
            return 0
        [value] = self.serializer.encode(rows, self.pipeline)
        first = {name: rows.data.column(name)[0].as_py() for name in ("file", "offset", "gtid", "index")}
        position = dumps(first)
        headers = [("db", rows.db.encode()), ("table", rows.table.encode()), ("rows", str(rows.num_rows).encode()),
                   ("position", position.encode())]
        self._produce(topic, value, dumpb({"db": rows.db, "table": rows.table}), headers, position, rows.name)
        return 1

    def _produce_rows(self, topic: str, part: TableRows) -> int:
        """One message per row change (json, avro), plus the tombstones of `tombstones: true`. The producer is
        called straight from the loop; a row it refuses (full queue, oversize) goes the `_produce` way."""
        o: KafkaOptions = self.options
        # json: the DECIMAL columns as their JSON text, no Decimal object per value; a run too small for the
        # column-wise path keeps its Decimals (Arrow's cost per call is more than theirs; same text)
        if o.format == "json" and part.num_rows >= json_columns.MIN_ROWS:
            part = decimals_as_text(part)
            if self.columnwise:
                done = produce_json(self, topic, part)
                if done is not None:
                    return done
        records = list(part.records(self.pipeline))
        extra = {"topic": topic} if o.format == "avro" else {}  # the registry subject may name it
        # json: each value encoded as the loop reaches it (`JsonSerializer.values`; writer 4.7 -> 4.4 us/row)
        values = (self.serializer.values(records) if o.format == "json"
                  else self.serializer.encode(part, self.pipeline, records, **extra))
        key_columns, tombstones, name, produce = o.key, o.tombstones, part.name, self.producer.produce
        absent = "absent" in part.data.schema.names  # a run whose rows may leave columns out of their images
        db, table = ("db", part.db.encode()), ("table", part.table.encode())
        ops: dict[str, tuple[str, bytes]] = {}
        # file names and GTIDs are encoded again only when they differ from the row before's
        last_file = last_gtid = file = gtid = ""
        produced = tombstoned = 0
        for record, value in zip(records, values):
            op, pos = record["op"], record["pos"]
            if absent and "absent" in record:  # images without some columns: each key column from the image that has it
                key = image_key(record, key_columns or part.key, part.key)
            elif key_columns is None:
                key = record["key"]
            else:
                image = record["after"] if record["after"] is not None else record["before"] or {}
                key = {k: image.get(k) for k in key_columns}
            if pos["file"] != last_file:
                last_file, file = pos["file"], json_text(pos["file"])
            if pos["gtid"] != last_gtid:  # one-row transactions: a new GTID each row
                last_gtid, gtid = pos["gtid"], json_text(pos["gtid"])
            position = f'{{"file":{file},"offset":{pos["offset"]},"gtid":{gtid},"index":{pos["index"]}}}'
            headers = [ops.get(op) or ops.setdefault(op, ("op", op.encode())), db, table,
                       ("position", position.encode())]
            # a table without a key (and without message_key_columns): a null key, spread over partitions
            key_bytes = encode_jsonb(key) if key else None
            if tombstones and op == "update" and record["before"]:  # the old key is gone (compaction drops it)
                old = (image_key(record, key_columns or part.key, part.key, old=True) if absent and "absent" in record
                       else {k: record["before"].get(k) for k in key_columns or part.key})
                if old and old != key:
                    self._produce(topic, None, dumpb(old), headers, position, name)
                    tombstoned += 1
            try:
                produce(topic, value, key_bytes, headers=headers)
                produced += 1
            except (BufferError, KafkaException):  # a full queue or a refused row: retried or handled there
                self._produce(topic, value, key_bytes, headers, position, name)
            if tombstones and key and op == "delete":
                self._produce(topic, None, key_bytes, headers, position, name)
                tombstoned += 1
        self.produced += produced
        return len(records) + tombstoned

    def _produce(self, topic: str, value: bytes | None, key: bytes | None, headers: list | None, position: str,
                 table: str, **extra: Any) -> None:
        """Produce one message (`extra`: `partition`, `timestamp`); a row over `message.max.bytes` fails
        the write or, with `on_oversize: dead_letter`, goes to the dead-letter topic instead."""
        while True:
            try:
                self.producer.produce(topic, value, key, headers=headers, **extra)
                self.produced += 1
                return
            except BufferError:  # the local queue is full: serve delivery reports, then retry
                self.producer.poll(0.05)
            except KafkaException as exc:
                if not exc.args or getattr(exc.args[0], "code", lambda: None)() != KafkaError.MSG_SIZE_TOO_LARGE:
                    raise DbusError(f"topic {topic}: cannot produce row at {position}: {kafka_reason(exc)}") \
                        from None
                size = message_size(value, key, headers)
                limit = self.limit
                if self.dead_letter and topic != self.options.dead_letter_topic and table != "checkpoint":
                    self._to_dead_letter(topic, value, key, headers, position, table, size, limit,
                                         kafka_reason(exc))
                    return
                raise DbusError(f"topic {topic}: cannot produce row at {position} of table {table}, key "
                                f"{key_text(key)}: {kafka_reason(exc)}; the message is {size} bytes, the limit "
                                f"{limit}: raise the sink's producer: message.max.bytes (and the topic's "
                                "max.message.bytes) or set on_oversize: dead_letter") from None

    def _to_dead_letter(self, topic: str, value: bytes | None, key: bytes | None, headers: list | None,
                        position: str, table: str, size: int, limit: int, reason: str) -> None:
        """The dead-letter record of an oversize row. It must fit under the same limit: the row's headers are
        kept when they fit, and the payload head is cut to what is left (down to nothing)."""
        o: KafkaOptions = self.options
        try:
            where: Any = json.loads(position)
        except ValueError:
            where = position
        record = {
            "pipeline": self.pipeline, "sink": self.name, "topic": topic, "table": table, "key": key_text(key),
            "position": where, "size": size, "limit": limit, "reason": reason,
            "payload_bytes": len(value or b""), "payload": "", "payload_truncated": True,
        }
        extra = [("dbus.reason", b"oversize"), ("dbus.topic", topic.encode())]
        room = limit - _DEAD_LETTER_MARGIN - message_size(dumpb(record), key, extra)
        if headers and message_size(None, None, headers) <= room:
            room -= message_size(None, None, headers)
            extra = list(headers) + extra
        head = (value or b"")[:max(0, min(o.dead_letter_payload_bytes, room * 3 // 4))]
        record["payload"] = base64.b64encode(head).decode()
        record["payload_truncated"] = len(head) < len(value or b"")
        self.dead_lettered += 1
        log.warning("[%s] %s: row at %s of table %s (%d bytes, limit %d) goes to dead-letter topic %s",
                    self.pipeline, self.where, position, table, size, limit, o.dead_letter_topic)
        self._produce(o.dead_letter_topic, dumpb(record), key, extra, position, table)

    def _flush(self) -> None:
        o: KafkaOptions = self.options
        deadline = time.monotonic() + o.delivery_timeout_ms / 1000 + o.timeout_s
        try:
            remaining = self.producer.flush(max(0.0, deadline - time.monotonic()))
            while remaining and time.monotonic() < deadline:
                remaining = self.producer.flush(max(0.0, deadline - time.monotonic()))
        except (KafkaException, SystemError) as exc:  # fatal producer errors, e.g. fenced by a newer instance
            raise DbusError(f"flush failed: {self._reason(exc)}") from None
        if remaining:
            raise DbusError(f"{remaining} messages not acknowledged within "
                            f"{o.delivery_timeout_ms / 1000 + o.timeout_s:.0f} s")

    def _check(self, expected: int) -> None:
        if self.errors:
            topic, position, reason = self.errors[0]
            raise DbusError(f"topic {topic}: delivery failed for row at {position}: {reason}")
        acked = self.acked
        if acked != expected:
            raise DbusError(f"{expected - acked} of {expected} messages not acknowledged")

    def _txn(self, what: str, call: Any) -> None:
        try:
            call()
        except (KafkaException, SystemError) as exc:
            raise DbusError(f"{what} failed: {self._reason(exc)}") from None

    def _on_error(self, err: Any) -> None:
        if err.fatal():
            self.fatal = f"{err.str()} ({err.name()})"
        log.warning("[%s] %s: %s", self.pipeline, self.where, err.str())

    def _reason(self, exc: BaseException) -> str:
        """confluent-kafka sometimes reports a fatal error (e.g. fenced) as a SystemError from flush: the
        error callback has the real reason then."""
        if isinstance(exc, SystemError) and not self.fatal and self.exactly_once:
            # the error callback may not have been served yet: a transactional call on the failed producer
            # raises its fatal error (e.g. fenced) with the reason (the write aborts the transaction anyway)
            try:
                self.producer.abort_transaction(self.options.timeout_s)
            except KafkaException as fatal:
                return kafka_reason(fatal)
            except Exception:  # noqa: BLE001 - only the reason is wanted here
                pass
        if isinstance(exc, SystemError) and self.fatal:
            return self.fatal
        return kafka_reason(exc)

    def _abort(self) -> None:
        try:
            self.producer.abort_transaction(self.options.timeout_s)
        except (KafkaException, SystemError) as exc:  # fenced or fatal: nothing was committed anyway
            log.warning("[%s] %s: abort_transaction: %s", self.pipeline, self.where, self._reason(exc))
            err = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
            if err is None or err.code() != KafkaError.INVALID_TXN_STATE:
                return
            # Apache Kafka 4 can answer the abort of a transaction whose partitions were not registered yet
            # (right after a commit, AddPartitionsToTxn still retried) with INVALID_TXN_STATE, fatal for the
            # producer though nobody fenced it: start a new one with the same transactional.id (its
            # init_transactions aborts whatever is still open)
            self.fatal = None
            self.producer = Producer(self._producer_config)
            self.producer.init_transactions(self.options.timeout_s)

    def close(self) -> None:
        if getattr(self, "heartbeat", None) is not None:
            self.heartbeat.stop(self.options.timeout_s)
        producer = getattr(self, "producer", None)
        if producer is not None:
            producer.flush(self.options.timeout_s)


#: bytes librdkafka adds to a message's key, value and headers when it checks `message.max.bytes` (record
#: framing), with room to spare: a dead-letter record is cut to fit under the limit minus this.
_DEAD_LETTER_MARGIN = 128
