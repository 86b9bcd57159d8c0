"""Serializer `debezium`: row changes as Debezium's MySQL connector writes them (its change-event envelope,
key and value, through Kafka Connect's JsonConverter), so consumers of Debezium topics read ours unchanged.

Per row change (`op` insert/update/delete/read -> `c`/`u`/`d`/`r`; `ddl` rows are not row events: a
snapshot marker gives none, a DDL statement or a start marker's statements schema changes, see below):
- topic `<topic_prefix>.<db>.<table>`;
- key: the primary-key columns (or the sink's `key` columns) as a struct, null for a table without one;
- value: `before`, `after`, `source` (`version`, `connector`, `name`, `ts_ms`, `snapshot`, `db`, `sequence`,
  `ts_us`, `ts_ns`, `table`, `server_id`, `gtid`, `file`, `pos`, `row`, `thread`, `query`), `transaction`
  (null unless `provide_transaction_metadata`), `op`, `ts_ms`, `ts_us`, `ts_ns`;
- with `schemas_enable` (JsonConverter's `schemas.enable`, on by default as in Kafka Connect) key and value
  are `{"schema": ..., "payload": ...}`, else the payload alone;
- a delete is followed by a tombstone (same key, null value) unless `tombstones_on_delete` is off;
- with `provide_transaction_metadata`, Debezium's transaction topic `<topic_prefix>.transaction`: `BEGIN`
  before a transaction's first event, `END` (event counts per table) when the next begins or a batch ends
  at a transaction boundary (checkpoint `skip` 0); a DDL's transaction has a BEGIN only, as in Debezium;
- with `include_schema_changes` (default on, as Debezium's `include.schema.changes`), Debezium's schema change
  topic `<topic_prefix>`: one message per DDL statement (TRUNCATE excepted), built by `debezium_schema`, and
  in a snapshot the statements Debezium writes before its rows (charset, DROP/CREATE of the databases and
  tables, `dbus_ray.mysql.snapshot.schema_ddl`), from the tables' start markers, with `snapshot` "true";
- an update that changes the key is a delete of the old key and its tombstone (both with header
  `__debezium.newkey`), then a create of the new key (header `__debezium.oldkey`), as Debezium emits it;
  header values are keys in the message key's form. The mysql source's `key_change` does not change this:
  its `delete_insert` pair (a `delete` then an `insert` at one position, `dbus_ray.mysql.keys`) is read
  back as the one update it was, so both settings give Debezium's messages;
- a run whose images leave columns out (`absent`: binlog_row_image MINIMAL/NOBLOB; the envelope has no such
  field) is refused with one line before any of its messages is built (`serializers.require_full_images`).

Column values follow Debezium's MySQL mapping, driven by the column's MySQL type that the mysql source puts
in each image field's metadata (`dbus.mysql`, see `dbus_ray.mysql.column_meta`); a field without it is
mapped from its Arrow type. Options (Debezium's names with `_` for `.`): `decimal_handling_mode`,
`time_precision_mode`, `binary_handling_mode`, `bigint_unsigned_handling_mode`. The README's "Coming from
Debezium" lists what differs from Debezium's own output and why.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import pyarrow as pa

from dbus_ray import __version__
from dbus_ray.kafka.key_columns import check_key_columns
from dbus_ray.model import RowBatch, TableRows, dumpb
from dbus_ray.serializers import debezium_columns, debezium_schema, require_full_images
from dbus_ray.serializers.debezium_values import Column, Mapper, named, server_id

OPS = {"insert": "c", "update": "u", "delete": "d", "read": "r"}
#: Rows turned into messages at a time (the kafka sink's slice): the Python objects of one slice are alive at once.
SLICE_ROWS = 2048
#: TRUNCATE is a DDL row of the source but no schema change for Debezium (it is a `t` event, skipped by default).
TRUNCATE_RE = re.compile(r"\s*(?:/\*.*?\*/\s*)*TRUNCATE\b", re.I | re.S)
SNAPSHOT_VALUES = "true,first,first_in_data_collection,last_in_data_collection,last,false,incremental"


@dataclass
class DebeziumOptions:
    """The `debezium:` section of a kafka sink with `format: debezium`."""

    topic_prefix: str | None = None  # Debezium's topic.prefix (also source.name); default: the pipeline name
    connector: Literal["mysql", "mariadb"] = "mysql"  # source.connector
    schemas_enable: bool = True  # JsonConverter schemas.enable (key and value)
    tombstones_on_delete: bool = True
    decimal_handling_mode: Literal["precise", "string", "double"] = "precise"
    time_precision_mode: Literal["adaptive_time_microseconds", "connect"] = "adaptive_time_microseconds"
    binary_handling_mode: Literal["bytes", "base64", "base64-url-safe", "hex"] = "bytes"
    bigint_unsigned_handling_mode: Literal["long", "precise"] = "long"
    provide_transaction_metadata: bool = False
    # Debezium's include.schema.changes: each DDL statement, with the table's columns after it, to the topic
    # named `topic_prefix` (see serializers/debezium_schema.py)
    include_schema_changes: bool = True
    # Debezium's heartbeat.interval.ms: a message to __debezium-heartbeat.<topic_prefix> this often while the
    # sink runs, also when the source is idle (see serializers/debezium_heartbeat.py); 0 is off
    heartbeat_interval_ms: int = 0

    def __post_init__(self) -> None:
        from dbus_ray.config import Invalid

        if self.topic_prefix is not None and not re.fullmatch(r"[A-Za-z0-9._-]+", self.topic_prefix):
            raise Invalid("topic_prefix", f"{self.topic_prefix!r} must be letters, digits, '.', '_' or '-'")
        if self.heartbeat_interval_ms < 0:
            raise Invalid("heartbeat_interval_ms", f"{self.heartbeat_interval_ms} must be 0 (off) or more")


# ------------------------------------------------------------------------------------------ tables


@dataclass
class _Table:
    columns: list[Column]
    key: list[Column]
    key_schema_json: bytes  # the schemas as JSON, written once per table (`enveloped`); null for no key
    value_schema_json: bytes


def _source_schema(connector: str) -> dict[str, Any]:
    def f(type_: str, name: str, optional: bool = False) -> dict[str, Any]:
        return {"type": type_, "optional": optional, "field": name}

    snapshot = {**named("string", "io.debezium.data.Enum", 1, {"allowed": SNAPSHOT_VALUES}), "optional": True,
                "default": "false", "field": "snapshot"}
    return {"type": "struct", "fields": [
        f("string", "version"), f("string", "connector"), f("string", "name"), f("int64", "ts_ms"), snapshot,
        f("string", "db"), f("string", "sequence", True), f("int64", "ts_us", True), f("int64", "ts_ns", True),
        f("string", "table", True), f("int64", "server_id"), f("string", "gtid", True), f("string", "file"),
        f("int64", "pos"), f("int32", "row"), f("int64", "thread", True), f("string", "query", True),
    ], "optional": False, "name": f"io.debezium.connector.{connector}.Source", "version": 1, "field": "source"}


_TRANSACTION_SCHEMA = {"type": "struct", "fields": [
    {"type": "string", "optional": False, "field": "id"},
    {"type": "int64", "optional": False, "field": "total_order"},
    {"type": "int64", "optional": False, "field": "data_collection_order"},
], "optional": True, "name": "event.block", "version": 1, "field": "transaction"}


_TX_KEY_SCHEMA = {"type": "struct", "fields": [{"type": "string", "optional": False, "field": "id"}],
                  "optional": False, "name": "io.debezium.connector.common.TransactionMetadataKey", "version": 1}
_TX_VALUE_SCHEMA = {"type": "struct", "fields": [
    {"type": "string", "optional": False, "field": "status"},
    {"type": "string", "optional": False, "field": "id"},
    {"type": "int64", "optional": True, "field": "event_count"},
    {"type": "array", "items": {"type": "struct", "fields": [
        {"type": "string", "optional": False, "field": "data_collection"},
        {"type": "int64", "optional": False, "field": "event_count"}], "optional": True, "name": "event.collection",
        "version": 1},
     "optional": True, "field": "data_collections"},
    {"type": "int64", "optional": False, "field": "ts_ms"},
], "optional": False, "name": "io.debezium.connector.common.TransactionMetadataValue", "version": 1}
_TX_KEY_SCHEMA_JSON, _TX_VALUE_SCHEMA_JSON = dumpb(_TX_KEY_SCHEMA), dumpb(_TX_VALUE_SCHEMA)


def enveloped(schema_json: bytes, payload: Any) -> bytes:
    """JsonConverter's `{"schema": .., "payload": ..}` with the schema's JSON written beforehand: the same bytes
    as `dumpb` of that dict, without writing a table's schema again for every message."""
    return b'{"schema":' + schema_json + b',"payload":' + dumpb(payload) + b"}"


class DebeziumSerializer:
    name: ClassVar[str] = "debezium"
    per_row: ClassVar[bool] = False  # a row change may be 0 to 4 messages (see `messages`)
    content_type: ClassVar[str] = "application/json"

    def __init__(self, options: DebeziumOptions | None = None, key: list[str] | None = None, **kwargs: Any) -> None:
        self.o = options or DebeziumOptions(**kwargs)
        self.key_columns = key
        self.mapper = Mapper(self.o)
        self._tables: dict[tuple[Any, ...], _Table] = {}
        self._prefix = self.o.topic_prefix or ""  # set from the pipeline's name by `messages` when not given
        self._event: tuple[str, int] | None = None  # the binlog event of the last row, and its row count
        self._row = 0
        self._txn: tuple[str | None, dict[str, int]] = (None, {})  # transaction id, events per table ("": all)
        self._txn_ts = 0  # commit time (ms) of the transaction in `_txn`
        self._tx_out: list[tuple[bytes | None, bytes | None, list | None, str]] = []  # BEGIN/END not yet returned
        self._snapshot_started = False
        self._first_of: set[str] = set()  # tables whose next read row is the first of their snapshot

    # ------------------------------------------------------------------ schemas
    def table(self, rows: TableRows) -> _Table:
        image_type = rows.data.schema.field("after").type
        key_names = tuple(self.key_columns) if self.key_columns else rows.key
        # Arrow types compare without their metadata: the columns' MySQL types (and NOT NULL) are part of the key
        meta = tuple(tuple(sorted((f.metadata or {}).items())) for f in image_type) \
            if pa.types.is_struct(image_type) else ()
        cache_key = (rows.db, rows.table, image_type, meta, key_names)
        found = self._tables.get(cache_key)
        if found is not None:
            return found
        columns = [self.mapper.column(f) for f in image_type] if pa.types.is_struct(image_type) else []
        by_name = {c.name: c for c in columns}
        check_key_columns(self.key_columns, rows)  # the sink's key: all the table's columns, or an error
        key = [by_name[k] for k in key_names if k in by_name]
        prefix = f"{self._prefix}.{rows.db}.{rows.table}"

        def struct(cols: list[Column], name: str, optional: bool, nonnull: set[str]) -> dict[str, Any]:
            fields = [{**c.schema, "optional": not (c.not_null or c.name in nonnull), "field": c.name} for c in cols]
            return {"type": "struct", "fields": fields, "optional": optional, "name": name}

        keys = {c.name for c in key}
        key_schema = struct(key, f"{prefix}.Key", False, keys) if key else None
        image = struct(columns, f"{prefix}.Value", True, keys)
        value_schema = {"type": "struct", "fields": [
            {**image, "field": "before"}, {**image, "field": "after"}, _source_schema(self.o.connector),
            _TRANSACTION_SCHEMA, {"type": "string", "optional": False, "field": "op"},
            *({"type": "int64", "optional": True, "field": f} for f in ("ts_ms", "ts_us", "ts_ns")),
        ], "optional": False, "name": f"{prefix}.Envelope", "version": 2}
        found = _Table(columns, key, dumpb(key_schema), dumpb(value_schema))
        self._tables[cache_key] = found
        return found

    # ------------------------------------------------------------------ messages
    def topic(self, db: str, table: str) -> str:
        return f"{self._prefix}.{db}.{table}"

    def messages(self, rows: TableRows, pipeline: str, records: list[dict[str, Any]] | None = None,
                 last_read: tuple[int, str] | None = None) -> list[tuple[bytes | None, bytes | None, list | None, str]]:
        """`(key, value, headers, op)` of every message of a run of rows, in order (`op` is Debezium's,
        `tombstone`, or `BEGIN`/`END` for the transaction topic). `last_read`: the run's row that is the last of
        its table's snapshot and its `snapshot` value."""
        self._prefix = self.o.topic_prefix or pipeline
        require_full_images(rows, self.name)  # absent columns would be null in before/after, and in the key
        built = debezium_columns.messages(self, rows) if records is None and last_read is None else None
        if built is not None:  # a run of many rows, column by column (serializers/debezium_columns.py)
            return built  # type: ignore[return-value]
        if records is None:
            records = list(rows.records(pipeline))
        out: list[tuple[bytes | None, bytes | None, list | None, str]] = []
        if not records:
            return out
        if records[0]["op"] == "ddl":
            for r in records:
                marker = (r["after"] or {}).get("snapshot")
                if marker == "start":
                    self._first_of.add(r["after"]["table"])
                    if self.o.include_schema_changes and r["after"].get("ddl"):
                        out += self._snapshot_schema_changes(r, rows, r["after"]["ddl"])
                elif marker is None and self.o.provide_transaction_metadata and r["pos"]["gtid"]:
                    # as Debezium does: a DDL statement's transaction has a BEGIN and no END
                    out += self.end_transaction()
                    out.append(self._tx_message("BEGIN", r["pos"]["gtid"], int(r["ts"] * 1000), None))
                sql = (r["after"] or {}).get("sql")
                if marker is None and self.o.include_schema_changes and sql and not TRUNCATE_RE.match(sql):
                    out.append(self._schema_change(r, rows))
            return out
        t = self.table(rows)
        name = rows.name
        paired = False
        for i, r in enumerate(records):
            if paired:  # the insert half of a key change, sent with its delete half
                paired = False
                continue
            op = OPS.get(r["op"])
            if op is None:
                continue
            after_image = r["after"]
            if op == "d" and i + 1 < len(records) and key_change_halves(r, records[i + 1]):
                op, after_image, paired = "u", records[i + 1]["after"], True
            before = self._image(t, r["before"], op == "r")
            after = self._image(t, after_image, op == "r")
            snapshot = "false"
            if op == "r":
                snapshot = self.snapshot_mark(name)
                if last_read is not None and i == last_read[0]:
                    snapshot = last_read[1]
            pos = r["pos"]
            source = self._source(r, rows, snapshot, self.row_of((pos["file"], pos["offset"]), op == "r"))
            old_key = self._key(t, before)
            new_key = self._key(t, after)
            if op == "u" and t.key and old_key != new_key:
                newkey = [("__debezium.newkey", new_key)]
                txn = self._transaction(r, name)
                out += self._tx_out
                self._tx_out = []
                out.append((old_key, self._value(t, before, None, source, txn, "d"), newkey, "d"))
                if self.o.tombstones_on_delete:
                    out.append((old_key, None, newkey, "tombstone"))
                txn = self._transaction(r, name)
                out.append((new_key, self._value(t, None, after, source, txn, "c"),
                            [("__debezium.oldkey", old_key)], "c"))
                continue
            key = old_key if op == "d" else new_key
            txn = self._transaction(r, name)
            out += self._tx_out
            self._tx_out = []
            out.append((key, self._value(t, before, after, source, txn, op), None, op))
            if op == "d" and self.o.tombstones_on_delete:
                out.append((key, None, None, "tombstone"))
        return out

    def encode(self, rows: TableRows, pipeline: str, records: list[dict[str, Any]] | None = None) -> list[bytes]:
        """The values of the run's messages (tombstones left out); `messages` has keys and headers too."""
        return [v for _, v, _, _ in self.messages(rows, pipeline, records) if v is not None]

    def _image(self, t: _Table, image: dict[str, Any] | None, snapshot: bool) -> dict[str, Any] | None:
        if image is None:
            return None
        return {c.name: c.payload(image.get(c.name), snapshot) for c in t.columns}

    def snapshot_mark(self, name: str) -> str:
        """`source.snapshot` of a snapshot's next row of table `name`: "true", or for the first of its table
        "first" (of the whole snapshot) or "first_in_data_collection"."""
        if name not in self._first_of:
            return "true"
        self._first_of.discard(name)
        mark = "first_in_data_collection" if self._snapshot_started else "first"
        self._snapshot_started = True
        return mark

    def row_of(self, event: tuple[str, int], read: bool) -> int:
        """`source.row` of the next row change, at binlog event `event` (file, offset): its number among the
        event's row changes, counted on from the one before (0 for a snapshot's `read`)."""
        if event != self._event or read:
            self._event, self._row = event, 0
        else:
            self._row += 1
        return self._row

    def _key(self, t: _Table, image: dict[str, Any] | None) -> bytes | None:
        if not t.key or image is None:
            return None
        payload = {c.name: image.get(c.name) for c in t.key}
        if self.o.schemas_enable:
            return enveloped(t.key_schema_json, payload)
        return dumpb(payload)

    def _source(self, r: dict[str, Any], rows: TableRows, snapshot: str, row: int) -> dict[str, Any]:
        pos = r["pos"]
        gtid = pos["gtid"]
        ts_us = int(r["ts"] * 1_000_000)
        return {
            "version": f"dbus-ray-{__version__}", "connector": self.o.connector, "name": self._prefix,
            "ts_ms": ts_us // 1000, "snapshot": snapshot, "db": rows.db, "sequence": None, "ts_us": ts_us,
            "ts_ns": ts_us * 1000, "table": rows.table, "server_id": server_id(gtid), "gtid": gtid,
            "file": pos["file"], "pos": pos["offset"], "row": row, "thread": None, "query": None,
        }

    def _transaction(self, r: dict[str, Any], name: str) -> dict[str, Any] | None:
        """The `transaction` block of the next event of row `r`: its transaction's id (GTID), and the event's
        number in the transaction and among the transaction's events of its table (a key change is two)."""
        if not self.o.provide_transaction_metadata or r["op"] == "read":
            return None
        tid = r["pos"]["gtid"] or r["txid"]
        if self._txn[0] != tid:
            self._tx_out += self.end_transaction()
            self._txn = (tid, {})
            self._tx_out.append(self._tx_message("BEGIN", tid, int(r["ts"] * 1000), None))
        self._txn_ts = int(r["ts"] * 1000)
        counts = self._txn[1]
        counts[name] = counts.get(name, 0) + 1
        counts[""] = counts.get("", 0) + 1
        return {"id": tid, "total_order": counts[""], "data_collection_order": counts[name]}

    def _schema_change(self, r: dict[str, Any], rows: TableRows
                       ) -> tuple[bytes | None, bytes | None, list | None, str]:
        """The message of Debezium's schema change topic for the DDL row `r`."""
        source = self._source(r, rows, "false", self._row)  # `row`: the last row event's, which Debezium keeps
        source.update(table=rows.table or None)
        image = r["after"]
        return self._schema_message(source, rows.db, image["sql"],
                                    debezium_schema.table_changes(rows.db, rows.table, image.get("change")))

    def _snapshot_schema_changes(self, r: dict[str, Any], rows: TableRows, ddl: str
                                 ) -> list[tuple[bytes | None, bytes | None, list | None, str]]:
        """The schema change messages of a snapshot start marker's statements (`ddl`, see
        `dbus_ray.mysql.snapshot.schema_ddl`), as Debezium writes them before its snapshot's rows: `snapshot`
        "true", at the snapshot's binlog position, `row` 0, no GTID or server id."""
        out = []
        for db, table, sql, changes in debezium_schema.snapshot_statements(ddl):
            source = self._source(r, rows, "true", 0)
            source.update(db=db, table=table or None, server_id=0, gtid=None)
            out.append(self._schema_message(source, db, sql, changes))
        return out

    def _schema_message(self, source: dict[str, Any], db: str, ddl: str, changes: list[dict[str, Any]]
                        ) -> tuple[bytes | None, bytes | None, list | None, str]:
        key, value = debezium_schema.message(self.o.connector, self.o.schemas_enable, _source_schema(self.o.connector),
                                             source, db, ddl, changes)
        return key, value, None, "schema"

    def schema_topic(self) -> str:
        """Debezium's schema change topic: named after the topic prefix."""
        return self._prefix

    def transaction_topic(self) -> str:
        return f"{self._prefix}.transaction"

    def end_transaction(self) -> list[tuple[bytes | None, bytes | None, list | None, str]]:
        """The END message of the transaction whose events were returned last (none when there is none); called
        when the source says it committed (a batch ending at a transaction boundary) or the next one begins."""
        tid, counts = self._txn
        if tid is None or not self.o.provide_transaction_metadata:
            return []
        self._txn = (None, {})
        return [self._tx_message("END", tid, self._txn_ts, counts)]

    def _tx_message(self, status: str, tid: str, ts_ms: int, counts: dict[str, int] | None
                    ) -> tuple[bytes | None, bytes | None, list | None, str]:
        """A message of Debezium's transaction topic (`<topic_prefix>.transaction`), keyed by the id."""
        collections = None if counts is None else [
            {"data_collection": name, "event_count": n} for name, n in counts.items() if name]
        value = {"status": status, "id": tid, "event_count": None if counts is None else counts.get("", 0),
                 "data_collections": collections, "ts_ms": ts_ms}
        key = {"id": tid}
        if self.o.schemas_enable:
            return (enveloped(_TX_KEY_SCHEMA_JSON, key), enveloped(_TX_VALUE_SCHEMA_JSON, value), None, status)
        return dumpb(key), dumpb(value), None, status

    def _value(self, t: _Table, before: Any, after: Any, source: dict[str, Any], txn: Any, op: str) -> bytes:
        now = time.time_ns()
        payload = {"before": before, "after": after, "source": source, "transaction": txn, "op": op,
                   "ts_ms": now // 1_000_000, "ts_us": now // 1000, "ts_ns": now}
        if self.o.schemas_enable:
            return enveloped(t.value_schema_json, payload)
        return dumpb(payload)


def last_reads(batch: RowBatch) -> dict[int, tuple[int, str]]:
    """Part index -> (index of its row that is the last of its table's snapshot, `last_in_data_collection`
    or, for the snapshot's very last row, `last`), found by the table's end marker following in the same
    batch; the batch that ends the snapshot carries the stream's checkpoint (no `snapshot` state)."""
    out: dict[int, tuple[int, str]] = {}
    last_part: dict[str, int] = {}
    ends = isinstance(batch.checkpoint, dict) and "snapshot" not in batch.checkpoint
    final = None
    for i, part in enumerate(batch.parts):
        if not part.num_rows:
            continue
        ops = part.data.column("op")
        if ops[0].as_py() == "ddl":
            for image in part.data.column("after").to_pylist():
                if image and image.get("snapshot") == "end" and image.get("table") in last_part:
                    j = last_part.pop(image["table"])
                    out[j] = (batch.parts[j].num_rows - 1, "last_in_data_collection")
                    final = j
        elif ops[part.num_rows - 1].as_py() == "read":
            last_part[part.name] = i
    if ends and final is not None:
        out[final] = (out[final][0], "last")
    return out


def key_change_halves(first: dict[str, Any], second: dict[str, Any]) -> bool:
    """Whether two consecutive row changes are the halves of one key-changing update (a `delete` then an
    `insert` at the same position: no two row changes of a source share one otherwise)."""
    return (first["op"] == "delete" and second["op"] == "insert" and first["pos"] == second["pos"]
            and first["txid"] == second["txid"])


def _slices(rows: TableRows) -> list[tuple[int, int]]:
    """(start, length) of the slices a run is turned into messages by: SLICE_ROWS rows, one more where a
    slice would end between the halves of a key change."""
    n, out, start = rows.num_rows, [], 0
    cols = [rows.data.column(c) for c in ("op", *debezium_columns.HALVES_FIELDS)]
    while start < n:
        end = min(start + SLICE_ROWS, n)
        if end < n and [c[end - 1].as_py() for c in cols[1:]] == [c[end].as_py() for c in cols[1:]] \
                and (cols[0][end - 1].as_py(), cols[0][end].as_py()) == ("delete", "insert"):
            end += 1
        out.append((start, end - start))
        start = end
    return out


def produce_debezium(sink: Any, batch: RowBatch) -> int:
    """Produce a batch's messages with `sink`'s producer (a `KafkaSink` with `format: debezium`); returns
    how many went out (the sink counts them and its failed deliveries)."""
    serializer: DebeziumSerializer = sink.serializer
    last = last_reads(batch)
    n = 0
    for i, whole in enumerate(batch.parts):
        for start, length in _slices(whole):  # bounded memory: one slice's messages at a time
            part = TableRows(whole.db, whole.table, whole.key, whole.data.slice(start, length))
            last_read = last.get(i)
            if last_read is not None:
                inside = start <= last_read[0] < start + length
                last_read = (last_read[0] - start, last_read[1]) if inside else None
            n += _produce_part(sink, serializer, part, last_read)
    checkpoint = batch.checkpoint if isinstance(batch.checkpoint, dict) else {}
    if checkpoint.get("skip") == 0 and "snapshot" not in checkpoint:  # the batch ends where a transaction did
        for key, value, headers, _ in serializer.end_transaction():
            sink._produce(_side_topic(sink, serializer.transaction_topic()), value, key, headers,
                          '{"transaction":"END"}', "transaction")
            n += 1
    return n


def start_heartbeat(sink: Any) -> Any:
    """The heartbeat thread of a kafka sink with `format: debezium` (None when `heartbeat_interval_ms` is 0)."""
    from dbus_ray.serializers.debezium_heartbeat import Heartbeat

    o: DebeziumOptions = sink.serializer.o
    if not o.heartbeat_interval_ms:
        return None
    prefix = o.topic_prefix or sink.pipeline
    return Heartbeat(sink, prefix, o.heartbeat_interval_ms, o.schemas_enable).start()


def _produce_part(sink: Any, serializer: DebeziumSerializer, part: TableRows, last_read: tuple[int, str] | None
                  ) -> int:
    messages = serializer.messages(part, sink.pipeline, None, last_read)
    if not messages:
        return 0
    topic = sink.topics_of.get((part.db, part.table))
    if topic is None and any(op not in _SIDE_OPS for *_, op in messages):
        topic = serializer.topic(part.db, part.table)
        sink._ensure_topic(topic)
        sink._warm(topic)
        sink.topics_of[(part.db, part.table)] = topic
    where = f'{{"table":"{part.name}"}}'
    for key, value, headers, op in messages:
        to = _side_topic(sink, serializer.transaction_topic()) if op in ("BEGIN", "END") else topic
        if op == "schema":
            to = _side_topic(sink, serializer.schema_topic())
        sink._produce(to, value, key, headers, where, part.name)
    return len(messages)


_SIDE_OPS = ("BEGIN", "END", "schema")  # messages that go to a topic other than the table's


def _side_topic(sink: Any, topic: str) -> str:
    """A topic beside the tables' (transactions, schema changes), created and warmed on first use."""
    if topic not in sink.known_topics:
        sink._ensure_topic(topic)
        sink._warm(topic)
    return topic
