"""Source `mysql`: reads a MySQL/MariaDB binlog as a replica and emits row changes.

Checkpoint (opaque to the bus, one per RowBatch, handed back to `open`):
`{"file": "binlog.000042", "offset": 1234, "skip": 3, "gtid": "0-1-77"}`. `offset` is always a
transaction boundary: the position of the GTID/BEGIN event of the transaction in progress when the
batch ended inside one (and `skip` counts the rows of that transaction already emitted), else the
position after the last transaction read (`skip` 0). So a resume never starts between a TABLE_MAP
and its ROWS event and neither loses nor duplicates a row. `gtid` is the GTID of that transaction
(or of the last one read), for information. Row positions: `offset` of the ROWS event, `index` of
the row among the transaction's emitted rows, `txid` the GTID or `file:offset` of the BEGIN.

Rows are decoded by `dbus_ray.binlog.types` (type mapping documented there) with the column names
the TABLE_MAP event carries (binlog_row_metadata=FULL), so rows written before an ALTER decode with
the old columns; without them, with the schema history (`dbus_ray.binlog.schema_history`, carried in the
checkpoint as `schema_history`), else information_schema with a column-count check.
Tables excluded by include/exclude are skipped before any decoding, and so are the
shadow tables of online schema change tools (`skip_osc_tables`, see OSC_RE): their cut-over rename is a
DDL row of the table itself. Columns an image leaves out (binlog_row_image MINIMAL/NOBLOB) are listed per
row in the optional `absent` column (`dbus_ray.model.ABSENT_TYPE`). A DecodeError names the binlog
position of its event.

Snapshot (`snapshot: initial | when_needed`, see `dbus_ray.binlog.snapshot`): the selected tables' rows
first, as `op: read` rows through the same `poll` batches, then the stream from the binlog position
that matches the snapshot. While it runs the checkpoint is `{"snapshot": {...}}`; the batch holding
its last row carries the binlog checkpoint of that position. With `snapshot_parallelism` >= 2 worker
actors read the chunks and the stream's checkpoints carry `fences` until it passed every chunk's
position; `backfill` (`dbus snapshot`) interleaves an on-demand snapshot with the stream. Unless
`snapshot: never`, binlog checkpoints carry `selected` (include/exclude): tables a later start's patterns
newly select are backfilled (`_snapshot_new_tables`).
"""

from __future__ import annotations

import logging
import re
import struct
import time
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

import pyarrow as pa
import pymysql

from dbus_ray.binlog import stream as bs
from dbus_ray.binlog.preflight import binlog_index, is_server_id_clash
from dbus_ray.binlog.schema_history import SchemaHistory
from dbus_ray.config import Invalid
from dbus_ray.errors import DbusError, DecodeError
from dbus_ray.model import ABSENT_TYPE, META_SCHEMA, RowBatch, TableRows
from dbus_ray.registry import Source, source
from dbus_ray.routing import TableMatcher

log = logging.getLogger("dbus.mysql")

HEARTBEAT_SECONDS = 0.25  # the server sends a heartbeat after this long without events
POLL_BUDGET_SECONDS = 0.05  # a poll holding rows returns after this long even when not full (latency)
RECONNECT_ATTEMPTS = 8
ER_MASTER_FATAL_READING_BINLOG = 1236

MARIADB_GTID_RE = re.compile(r"^\d+-\d+-\d+(,\s*\d+-\d+-\d+)*$")
MYSQL_GTID_RE = re.compile(r"^[0-9a-fA-F-]{36}(:\d+(-\d+)?)+(,\s*[0-9a-fA-F-]{36}(:\d+(-\d+)?)+)*$")
FILE_POS_RE = re.compile(r"^([^:\s]+):(\d+)$")


@dataclass
class MysqlDsn:
    user: str
    password: str
    host: str
    port: int


def parse_dsn(dsn: str) -> MysqlDsn:
    """`mysql://user:password@host:port` -> parts. Raises Invalid (key "dsn") naming what is wrong,
    never echoing the password."""
    parts = urlsplit(dsn)
    if parts.scheme not in ("mysql", "mariadb"):
        shown = parts.scheme or dsn.split(":", 1)[0]
        raise Invalid("dsn", f"bad DSN scheme {shown!r}: expected mysql://user:password@host:port")
    try:
        port = parts.port or 3306
    except ValueError:
        raise Invalid("dsn", "bad DSN port: expected mysql://user:password@host:port") from None
    if not parts.hostname:
        raise Invalid("dsn", "DSN has no host: expected mysql://user:password@host:port")
    if not parts.username:
        raise Invalid("dsn", "DSN has no user: expected mysql://user:password@host:port")
    return MysqlDsn(unquote(parts.username), unquote(parts.password or ""), parts.hostname, port)


def parse_start(start: str) -> tuple[str, Any]:
    """`latest` | `earliest` | `file:offset` | GTID set -> (kind, value)."""
    text = start.strip()
    if text in ("latest", "earliest"):
        return text, None
    m = FILE_POS_RE.match(text)
    if m and not MYSQL_GTID_RE.match(text):
        return "position", (m.group(1), int(m.group(2)))
    if MARIADB_GTID_RE.match(text) or MYSQL_GTID_RE.match(text):
        return "gtid", text
    raise Invalid(
        "start", f"bad start {start!r}: expected latest, earliest, binlog-file:offset or a GTID set"
    )


@dataclass
class MysqlOptions:
    dsn: str
    server_id: int | str = "auto"
    start: str = "latest"  # latest | earliest | file:offset | GTID set
    include: list[str] = field(default_factory=lambda: ["*.*"])
    exclude: list[str] = field(default_factory=list)
    ssl_ca: str | None = None
    ssl_cert: str | None = None
    ssl_key: str | None = None
    snapshot: Literal["never", "initial", "when_needed"] = "never"
    chunk_rows: int = 10_000  # rows per snapshot query (keyset page)
    max_rows_per_second: int | None = None  # snapshot read throttle
    snapshot_parallelism: int = 1  # snapshot worker actors reading chunks at once (1: the reader reads them)
    skip_osc_tables: bool = True  # leave out gh-ost / pt-online-schema-change shadow tables (see OSC_RE)
    schema_history: bool = False  # accept binlog_row_metadata MINIMAL (see dbus_ray.binlog.schema_history)

    def __post_init__(self) -> None:
        parse_dsn(self.dsn)
        if self.chunk_rows < 1:
            raise Invalid("chunk_rows", "must be at least 1")
        if self.snapshot_parallelism < 1:
            raise Invalid("snapshot_parallelism", "must be at least 1")
        if self.max_rows_per_second is not None and self.max_rows_per_second < 1:
            raise Invalid("max_rows_per_second", "must be at least 1 (or left out: no throttle)")
        if isinstance(self.server_id, str) and self.server_id != "auto":
            raise Invalid("server_id", f"expected an integer or 'auto', got {self.server_id!r}")
        if isinstance(self.server_id, int) and not 1 <= self.server_id < 2**32:
            raise Invalid("server_id", "must be between 1 and 4294967295")
        parse_start(self.start)
        from dbus_ray.routing import check_pattern

        for key in ("include", "exclude"):
            for i, pattern in enumerate(getattr(self, key)):
                reason = check_pattern(pattern)
                if reason:
                    raise Invalid(f"{key}[{i}]", reason)


# ------------------------------------------------------------------------------------------------ DDL

DDL_RE = re.compile(r"^\s*(?:/\*.*?\*/\s*)*(CREATE|ALTER|DROP|RENAME|TRUNCATE)\b\s*(.*)$", re.I | re.S)
NAME = r"(`(?:[^`]|``)+`|[\w$]+)(?:\s*\.\s*(`(?:[^`]|``)+`|[\w$]+))?"
OBJECT_RE = re.compile(
    r"^(?:(?:OR\s+REPLACE|TEMPORARY|ONLINE|OFFLINE|IGNORE|UNIQUE|FULLTEXT|SPATIAL)\s+)*"
    r"(TABLES?|DATABASE|SCHEMA|INDEX|VIEW)\b\s*(?:IF\s+(?:NOT\s+)?EXISTS\s+)?" + NAME,
    re.I | re.S,
)
ON_RE = re.compile(r"\bON\s+" + NAME, re.I | re.S)
RENAME_PAIR_RE = re.compile(NAME + r"\s+TO\s+" + NAME, re.I | re.S)
COMMENT_RE = re.compile(r"/\*(?!!).*?\*/", re.S)
#: Shadow tables of online schema change tools: gh-ost `_t_gho` (the new table), `_t_ghc` (its changelog),
#: `_t_del` (the old table after the cut-over, also `_t_<timestamp>_del`); pt-online-schema-change `_t_new`
#: and `_t_old`.
OSC_RE = re.compile(r"^_.+_(gho|ghc|del|new|old)$")


def _ident(text: str | None) -> str | None:
    if text is None:
        return None
    return text[1:-1].replace("``", "`") if text.startswith("`") else text


def ddl_target(sql: str, default_db: str) -> tuple[str, str] | None:
    """(db, table) a DDL statement changes (table "" for a database), None when it is not a DDL on a
    table or database."""
    m = DDL_RE.match(sql)
    if not m:
        return None
    verb, rest = m.group(1).upper(), COMMENT_RE.sub(" ", m.group(2)).lstrip()
    if verb == "TRUNCATE" and not re.match(r"TABLE\b", rest, re.I):
        rest = "TABLE " + rest
    obj = OBJECT_RE.match(rest)
    if not obj:
        return None
    kind = obj.group(1).upper()
    first, second = _ident(obj.group(2)), _ident(obj.group(3))
    if kind in ("DATABASE", "SCHEMA"):
        return first or default_db, ""
    if kind == "INDEX":
        on = ON_RE.search(rest)
        if not on:
            return None
        first, second = _ident(on.group(1)), _ident(on.group(2))
    if second is None:
        return default_db, first or ""
    return first or default_db, second


def renamed_tables(sql: str, default_db: str) -> list[tuple[str, str]]:
    """Every (db, table) a `RENAME TABLE a TO b, c TO d` names, in order; [] for other statements."""
    m = DDL_RE.match(sql)
    if not m or m.group(1).upper() != "RENAME":
        return []
    out: list[tuple[str, str]] = []
    for pair in RENAME_PAIR_RE.finditer(COMMENT_RE.sub(" ", m.group(2))):
        for first, second in ((pair.group(1), pair.group(2)), (pair.group(3), pair.group(4))):
            out.append((default_db, _ident(first) or "") if second is None else
                       (_ident(first) or default_db, _ident(second) or ""))
    return out


class DdlLayout:
    """The image of an `op: ddl` row: {"sql": statement}."""

    image_type = pa.struct([pa.field("sql", pa.string())])
    key: tuple[str, ...] = ()

    def __init__(self, db: str, table: str) -> None:
        self.db = db
        self.table = table

    def struct(self, columns: list[list[Any]] | None, n: int, mask: list[bool] | None = None) -> pa.StructArray:
        if columns is None:
            return pa.array([None] * n, self.image_type)
        sql = columns[0]
        if mask is not None:
            sql = [None if m else v for v, m in zip(sql, mask)]
        return pa.array([None if v is None else {"sql": v} for v in sql], self.image_type)


# ---------------------------------------------------------------------------------------------- source


@dataclass
class _Txn:
    file: str
    offset: int
    gtid: str | None
    began: bool  # inside BEGIN ... COMMIT (else ends after its one statement)
    skip: int = 0  # rows already emitted before a resume
    rows: int = 0  # rows of included tables seen so far

    @property
    def txid(self) -> str:
        return self.gtid or f"{self.file}:{self.offset}"


class _StreamLost(Exception):
    """The binlog connection dropped; python-mysql-replication would silently reconnect mid-transaction."""


class _Seg:
    """Pending rows of one ROWS event (or one DDL row): images as one value list per column (None: the
    event has no such image), and the position of its first row. Rows leave from the front."""

    __slots__ = ("layout", "op", "before", "after", "n", "file", "offset", "gtid", "index", "txid", "ts",
                 "tfile", "toffset", "absent")

    def __init__(self, layout: Any, op: str, before: list[list[Any]] | None, after: list[list[Any]] | None,
                 n: int, file: str, offset: int, gtid: str | None, index: int, txid: str, ts: float,
                 tfile: str, toffset: int, absent: dict[str, list[str]] | None = None) -> None:
        self.layout, self.op, self.before, self.after, self.n = layout, op, before, after, n
        self.file, self.offset, self.gtid, self.index, self.txid = file, offset, gtid, index, txid
        self.ts, self.tfile, self.toffset = ts, tfile, toffset
        self.absent = absent  # image -> columns the event's image leaves out (binlog_row_image MINIMAL/NOBLOB)

    def split(self, k: int) -> _Seg:
        """Remove the first `k` rows (k < n) and return them as a segment."""
        b, a = self.before, self.after
        head = _Seg(self.layout, self.op, None if b is None else [c[:k] for c in b],
                    None if a is None else [c[:k] for c in a], k, self.file, self.offset, self.gtid,
                    self.index, self.txid, self.ts, self.tfile, self.toffset, self.absent)
        self.before = None if b is None else [c[k:] for c in b]
        self.after = None if a is None else [c[k:] for c in a]
        self.n -= k
        self.index += k
        return head


@source("mysql")
class MysqlSource(Source):
    Options = MysqlOptions

    # ------------------------------------------------------------------ open / close
    @classmethod
    def parse_position(cls, text: str) -> dict[str, Any]:
        """`binlog.000042:1234` (the start of a transaction) -> a checkpoint."""
        file, _, offset = text.rpartition(":")
        if not file or not offset.isdigit():
            raise ValueError(f"bad binlog position {text!r}: expected FILE:OFFSET, e.g. binlog.000042:1234")
        return {"file": file, "offset": int(offset), "skip": 0, "gtid": None}

    def open(self, checkpoint: dict[str, Any] | None) -> None:
        from dbus_ray.binlog import preflight as pf

        o: MysqlOptions = self.options
        dsn = parse_dsn(o.dsn)
        ssl = {k: v for k, v in (("ca", o.ssl_ca), ("cert", o.ssl_cert), ("key", o.ssl_key)) if v}
        self.ep = pf.Endpoint(dsn.host, dsn.port, dsn.user, dsn.password, ssl or None)
        self.where = self.ep.where
        self.server_id = (
            o.server_id if isinstance(o.server_id, int) else pf.auto_server_id(self.pipeline, self.where)
        )
        self.identity = pf.replica_identity(self.pipeline)
        conn = pf.connect(self.ep)
        try:
            self.info = pf.preflight(conn, self.ep, schema_history=o.schema_history)
            logs = pf.binary_logs(conn, self.ep)
            others = pf.registered_replicas(conn, self.server_id)
        finally:
            conn.close()
        others = [r for r in others or [] if r[0] != self.identity]
        if others:  # a replica that is not this pipeline holds the id: connecting would throw it out
            raise pf.server_id_clash(self.ep, self.server_id, others, took_over=False)
        self.target = (pf.binlog_index(self.info.file), self.info.position)
        self.matcher = TableMatcher(o.include, o.exclude)
        # TABLE_MAP bytes (all but the table id) -> (db, table, Layout or None when excluded)
        self.map_cache: dict[bytes, tuple[str, str, Any]] = {}
        self.by_table_id: dict[int, tuple[str, str, Any]] = {}
        self.names_cache: dict[tuple[str, str], tuple[list[str], tuple[str, ...]]] = {}
        self.pending: list[_Seg] = []
        self.pending_rows = 0
        self._index_of: tuple[str, int] = ("", 0)
        self.stream: Any = None
        self.txn: _Txn | None = None
        self.resume: tuple[str, int, int] | None = None
        self.last_gtid: str | None = None
        self.idle = False
        self.reached = False
        self.last_ts = 0.0
        self.file = ""
        self.next_pos = 0
        self.snap: Any = None
        self.snap_progress: dict[str, Any] | None = None
        # column names per position when TABLE_MAP events carry none (binlog_row_metadata not FULL)
        self.history = SchemaHistory((checkpoint or {}).get("schema_history"))
        self.history_on = not self.info.has_row_metadata
        # the include/exclude the checkpoints record (the old ones until newly selected tables are snapshotted)
        self.selected: dict[str, list[str]] = {"include": list(o.include), "exclude": list(o.exclude)}
        self._selected_next: dict[str, list[str]] | None = None
        gtid_start: str | None = None
        if checkpoint and "snapshot" in checkpoint:  # stopped mid-snapshot: go on with it
            self._open_snapshot(checkpoint["snapshot"], logs)
            return
        if not checkpoint and o.snapshot == "initial":
            self._open_snapshot(None, logs)
            return
        if checkpoint:
            file, offset = str(checkpoint["file"]), int(checkpoint["offset"])
            skip = int(checkpoint.get("skip", 0))
            self.last_gtid = checkpoint.get("gtid")
            what = "checkpoint"
        else:
            kind, value = parse_start(o.start)
            skip = 0
            what = f"start {o.start}"
            if kind == "latest":
                file, offset = self.info.file, self.info.position
            elif kind == "earliest":
                if not logs:
                    raise DbusError(f"{self.where} has no binlog files (SHOW BINARY LOGS is empty)")
                file, offset = logs[0][0], 4
            elif kind == "position":
                file, offset = value
            else:
                file, offset, gtid_start = "", 0, value
        if not gtid_start:
            if o.snapshot == "when_needed" and file not in dict(logs):
                log.warning("[%s] binlog file %s (%s) is no longer on %s: snapshot (snapshot: when_needed)",
                            self.pipeline, file, what, self.where)
                self._open_snapshot(None, logs)
                return
            self._check_position(file, offset, logs, what)
        self.file, self.next_pos = file, offset
        self._start_stream(file, offset, skip, gtid_start)
        self._restore_fences(checkpoint)
        if checkpoint and self.snap is None:
            self._snapshot_new_tables(checkpoint.get("selected"))
        log.info(
            "[%s] mysql source at %s:%s (skip %s) on %s, server_id %s",
            self.pipeline,
            file,
            offset,
            skip,
            self.where,
            self.server_id,
        )

    def _open_snapshot(self, state: dict[str, Any] | None, logs: list[tuple[str, int]]) -> None:
        from dbus_ray.binlog.snapshot import Snapshot

        o: MysqlOptions = self.options
        if state is not None and state.get("file") and state["file"] not in dict(logs):
            log.warning("[%s] binlog file %s of the interrupted snapshot is no longer on %s: snapshot again from the "
                        "start", self.pipeline, state["file"], self.where)
            state = None
        if o.snapshot_parallelism > 1:
            from dbus_ray.actors.snapshot_worker import WorkerPool
            from dbus_ray.binlog.snapshot import ParallelSnapshot

            pool = WorkerPool(self.ep, self.pipeline, o.snapshot_parallelism)
            self.snap = ParallelSnapshot(self.ep, self.pipeline, self.matcher, pool, o.snapshot_parallelism,
                                         o.chunk_rows, o.max_rows_per_second, state)
        else:
            self.snap = Snapshot(self.ep, self.pipeline, self.matcher, o.chunk_rows, o.max_rows_per_second, state)
        try:
            self.snap.begin()
        except BaseException:
            self.snap.close()
            self.snap = None
            raise
        self.file, self.next_pos = self.snap.state["file"], self.snap.state["offset"]
        self.last_gtid = self.snap.state.get("gtid")

    def _poll_snapshot(self, max_rows: int, seq: int) -> RowBatch | None:
        if self.snap is None:  # a backfill was asked for (`dbus snapshot`)
            from dbus_ray.binlog.snapshot import Backfill

            o: MysqlOptions = self.options
            self.snap = Backfill(self.ep, self.pipeline, self.backfill_queue, o.chunk_rows, o.max_rows_per_second)
        snap = self.snap
        if snap.done:  # a parallel snapshot is read: the stream runs behind its fences
            return self._poll_fenced(max_rows, seq)
        parts = snap.read(max_rows)
        if snap.done:
            state = snap.state
            checkpoint: dict[str, Any] = self._extras({"file": state["file"], "offset": state["offset"], "skip": 0,
                                                       "gtid": state.get("gtid")})
            self.snap_progress = snap.progress()
            snap.close()
            self.snap = None
            if "fences" in state:
                from dbus_ray.binlog.snapshot import Fenced, Fences

                checkpoint["fences"] = state["fences"]
                self.snap = Fenced(Fences(state["fences"]), float(state.get("ts") or snap.ts), self.snap_progress)
            self._stream_after_snapshot(checkpoint["file"], checkpoint["offset"])
            log.info("[%s] snapshot done: %s", self.pipeline, self.snap_progress)
        else:
            checkpoint = {"snapshot": snap.checkpoint_state()}
        if not parts:
            return None
        return RowBatch(self.pipeline, seq, parts, checkpoint, snap.ts)

    def _poll_fenced(self, max_rows: int, seq: int) -> RowBatch | None:
        """The stream after a parallel snapshot or during a backfill, without the changes the chunks
        hold (Fences, KeyFences), until it passed every chunk's position; a backfill's next chunk is read
        after the stream's rows (so at a later position). The checkpoints carry a snapshot's fences."""
        fenced = self.snap
        self.snap, self._fenced_poll = None, True
        try:
            batch = self.poll(max_rows, seq)
        finally:
            self.snap, self._fenced_poll = fenced, False
        fences = fenced.fences
        parts = [] if batch is None else [p for p in (fences.keep(part) for part in batch.parts) if p is not None]
        room = max_rows - sum(p.num_rows for p in parts)
        if not fenced.finished and room > 0:
            parts += fenced.read(room)
        lifted = (fenced.finished and fences.passed(self.file, self.next_pos) and not self.pending
                  and self.txn is None)
        if lifted:
            self.snap = None
            self.snap_progress = fenced.progress()
            if self._selected_next is not None:  # the newly selected tables are snapshotted
                self.selected, self._selected_next = self._selected_next, None
            log.info("[%s] stream at %s:%s, past every snapshot chunk", self.pipeline, self.file, self.next_pos)
        if not parts:
            return None
        checkpoint = batch.checkpoint if batch is not None else self._checkpoint()
        if not lifted and fences.raw:
            checkpoint = {**checkpoint, "fences": fences.raw}
        return RowBatch(self.pipeline, seq, parts, checkpoint, batch.ts if batch is not None else time.time())

    backfill_queue: Any = None  # deque of (tables, where) asked for by `backfill`, read by the polling thread
    _fenced_poll = False

    def _backfill_due(self) -> bool:
        return bool(self.backfill_queue) and not self._fenced_poll

    def backfill(self, tables: list[str], where: str | None = None) -> dict[str, Any]:
        """Ask for an on-demand snapshot of `tables` (db.table) while the stream runs, of the rows `where`
        (SQL) selects; checked here (one-line DbusError), read by the polling thread (see Backfill)."""
        from collections import deque

        from dbus_ray.binlog.snapshot import backfill_tables

        found = backfill_tables(self.ep, self.matcher, list(tables), where)
        if self.backfill_queue is None:
            self.backfill_queue = deque()
        self.backfill_queue.append((found, where))
        log.info("[%s] backfill of %s asked for", self.pipeline, ", ".join(t.name for t in found))
        return {"tables": [t.name for t in found], "where": where, "rows_estimate": sum(t.rows_estimate for t in found)}

    def _snapshot_new_tables(self, before: dict[str, Any] | None) -> None:
        """Resuming with include/exclude that select tables the checkpoint's did not: snapshot those (a
        backfill, while the stream goes on from the checkpoint) unless `snapshot: never`. The checkpoints
        keep the old include/exclude until the backfill is done, so a restart before that snapshots again."""
        o: MysqlOptions = self.options
        if o.snapshot == "never" or not isinstance(before, dict) or before == self.selected:
            return
        was = TableMatcher(list(before.get("include") or []), list(before.get("exclude") or []))
        from dbus_ray.binlog import preflight as pf
        from dbus_ray.binlog.snapshot import list_tables

        conn = pf.connect(self.ep)
        try:
            new = [f"{db}.{t}" for db, t, _e, _n in list_tables(conn, self.matcher)
                   if not was(db, t) and not (o.skip_osc_tables and OSC_RE.match(t))]
        finally:
            conn.close()
        if not new:
            return
        log.info("[%s] include/exclude now select %s: snapshotting them while streaming", self.pipeline,
                 ", ".join(new))
        self.backfill(new)
        self.selected, self._selected_next = {"include": list(before.get("include") or []),
                                              "exclude": list(before.get("exclude") or [])}, self.selected

    def _restore_fences(self, checkpoint: dict[str, Any] | None) -> None:
        """Resuming from a checkpoint taken while the stream ran behind a parallel snapshot's fences."""
        if checkpoint and checkpoint.get("fences"):
            from dbus_ray.binlog.snapshot import Fenced, Fences

            self.snap = Fenced(Fences(checkpoint["fences"]), time.time())

    def _stream_after_snapshot(self, file: str, offset: int) -> None:
        """Start the binlog stream at the snapshot's position; caught up means up to where the server is now."""
        from dbus_ray.binlog import preflight as pf

        conn = pf.connect(self.ep)
        try:
            logs = pf.binary_logs(conn, self.ep)
            now = pf.master_status(conn, self.ep)
        finally:
            conn.close()
        self._check_position(file, offset, logs, "snapshot position")
        self.target = (binlog_index(now[0]), now[1])
        self.reached = False
        self.file, self.next_pos = file, offset
        self._start_stream(file, offset, 0)

    def snapshot_progress(self) -> dict[str, Any] | None:
        """The snapshot's progress (tables done/total, rows, rows/s, ...) while it runs and after; None when
        this source did not snapshot."""
        if self.snap is not None:
            return self.snap.progress()
        return self.snap_progress

    def _check_position(self, file: str, offset: int, logs: list[tuple[str, int]], what: str) -> None:
        sizes = dict(logs)
        if file not in sizes:
            oldest = logs[0][0] if logs else "none"
            raise DbusError(
                f"binlog file {file} ({what}) is no longer on {self.where} (purged? oldest is {oldest}): "
                "restart from `start: earliest` or a snapshot (the rows in between are lost) after removing "
                "the pipeline's checkpoint"
            )
        if offset < 4 or offset > sizes[file]:
            raise DbusError(
                f"binlog position {file}:{offset} ({what}) is beyond the end of {file} on {self.where}"
            )

    def _start_stream(self, file: str, offset: int, skip: int, gtid: str | None = None) -> None:
        from pymysqlreplication.event import (
            GtidEvent,
            HeartbeatLogEvent,
            MariadbGtidEvent,
            QueryEvent,
            RotateEvent,
            XidEvent,
        )
        from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

        opened = {"stream": 0}

        def wrapper(**kwargs: Any) -> pymysql.connections.Connection:
            if "db" in kwargs:
                kwargs["database"] = kwargs.pop("db")
            if kwargs.get("database") != "information_schema":
                opened["stream"] += 1
                if opened["stream"] > 1:
                    raise _StreamLost("binlog connection lost")
            return pymysql.connect(**kwargs)

        settings = self.ep.settings()
        settings["read_timeout"] = 10  # 40 heartbeats: a link gone silent (black hole, dead host) is dropped
        kwargs: dict[str, Any] = {}
        if gtid:
            kwargs = {"auto_position": gtid, "is_mariadb": self.info.mariadb}
        else:
            kwargs = {"log_file": file, "log_pos": offset, "resume_stream": True}
        self.stream = bs.FastBinLogStreamReader(
            connection_settings=settings,
            server_id=self.server_id,
            blocking=True,
            only_events=[
                RotateEvent,
                MariadbGtidEvent,
                GtidEvent,
                QueryEvent,
                XidEvent,
                WriteRowsEvent,
                UpdateRowsEvent,
                DeleteRowsEvent,
                HeartbeatLogEvent,
            ],
            slave_heartbeat=HEARTBEAT_SECONDS,
            report_slave=(self.identity, "", "", 0),
            enable_logging=False,
            pymysql_wrapper=wrapper,
            **kwargs,
        )
        self.txn = None
        self.by_table_id = {}
        self.resume = (file, offset, skip) if skip else None

    def _close_stream(self) -> None:
        if getattr(self, "stream", None) is not None:  # None, or not opened at all
            try:
                self.stream.close()
            except Exception:  # already broken
                pass
            self.stream = None

    def close(self) -> None:
        if getattr(self, "snap", None) is not None:
            self.snap.close()
        self._close_stream()

    # ------------------------------------------------------------------ reading
    def poll(self, max_rows: int, seq: int) -> RowBatch | None:
        if self.snap is not None or self._backfill_due():
            return self._poll_snapshot(max_rows, seq)
        HEARTBEAT_EVENT, RawEvent = bs.HEARTBEAT_EVENT, bs.RawEvent
        monotonic = time.monotonic
        deadline = monotonic() + POLL_BUDGET_SECONDS
        fetch, handle_raw = self._fetch, self._handle_raw
        while self.pending_rows < max_rows:
            if self.pending_rows and monotonic() > deadline:
                break
            event = fetch()
            if event is None:
                break
            if type(event) is RawEvent:
                if event.type == HEARTBEAT_EVENT:
                    self.idle = True
                    break
                self.idle = False
                handle_raw(event)
                continue
            if type(event).__name__ == "HeartbeatLogEvent":
                self.idle = True
                break
            self.idle = False
            self._handle(event)
        if not self.pending_rows:
            return None
        segs = self._take(max_rows)
        checkpoint = self._checkpoint()
        return RowBatch(self.pipeline, seq, self._runs(segs), checkpoint, max(s.ts for s in segs))

    def _take(self, max_rows: int) -> list[_Seg]:
        """The first `max_rows` pending rows (splitting a segment when needed)."""
        pending = self.pending
        got = 0
        i = 0
        while i < len(pending) and got + pending[i].n <= max_rows:
            got += pending[i].n
            i += 1
        out = pending[:i]
        rest = pending[i:]
        if got < max_rows and rest:
            out.append(rest[0].split(max_rows - got))
            got = max_rows
        self.pending = rest
        self.pending_rows -= got
        return out

    def _fetch(self) -> Any:
        attempt = 0
        while True:
            try:
                return self.stream.fetchone()
            except DbusError:
                raise
            except Exception as exc:
                code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
                if is_server_id_clash(exc):
                    raise self._server_id_clash() from None
                if code == ER_MASTER_FATAL_READING_BINLOG:
                    raise self._binlog_error(exc) from None
                if code in (1045, 1044):
                    from dbus_ray.binlog.preflight import connect_error

                    raise connect_error(self.ep, exc) from None
                attempt += 1
                if attempt > RECONNECT_ATTEMPTS:
                    why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                    raise DbusError(
                        f"lost the binlog connection to {self.where} and could not reconnect "
                        f"({RECONNECT_ATTEMPTS} attempts): {why}"
                    ) from None
                cp = self._checkpoint()
                self.pending = []
                self.pending_rows = 0
                self._close_stream()
                delay = min(0.2 * 2**attempt, 15.0)
                log.warning(
                    "[%s] binlog connection to %s lost (%s); reconnecting in %.1fs from %s",
                    self.pipeline,
                    self.where,
                    type(exc).__name__,
                    delay,
                    cp,
                )
                time.sleep(delay)
                self.file, self.next_pos = cp["file"], cp["offset"]
                self._start_stream(cp["file"], cp["offset"], cp["skip"])

    def _server_id_clash(self) -> DbusError:
        """Another replica connected with this reader's server_id and the server ended this connection:
        reconnecting would throw the other one out in turn, forever."""
        from dbus_ray.binlog import preflight as pf

        self._close_stream()
        others: list[tuple[str, int]] | None = None
        try:
            conn = pf.connect(self.ep)
            try:
                others = pf.registered_replicas(conn, self.server_id)
            finally:
                conn.close()
        except DbusError:
            pass
        return pf.server_id_clash(self.ep, self.server_id, others, took_over=True)

    def _binlog_error(self, exc: BaseException) -> DbusError:
        text = str(exc.args[1] if len(exc.args) > 1 else exc).splitlines()[0]
        if "find first log" in text or "purged" in text.lower():
            return DbusError(
                f"binlog file {self.file} is no longer on {self.where} (purged?): restart from "
                "`start: earliest` or a snapshot after removing the pipeline's checkpoint"
            )
        return DbusError(
            f"the server {self.where} refused to send the binlog at {self.file}:{self.next_pos}: {text}"
        )

    def _handle(self, ev: Any) -> None:
        name = type(ev).__name__
        pk = ev.packet
        end = pk.log_pos
        offset = end - pk.event_size if end else self.next_pos
        if ev.timestamp:
            self.last_ts = float(ev.timestamp)
        if name == "RotateEvent":
            self.file, self.next_pos = ev.next_binlog, ev.position
            if ev.timestamp:  # a real rotation: table ids may be reused from here on
                self.by_table_id = {}
            return
        if name == "MariadbGtidEvent":
            self._begin(offset, ev.gtid, began=not (ev.flags & 1))
        elif name == "GtidEvent":
            self._begin(offset, ev.gtid, began=False)
        elif name == "XidEvent":
            self._end()
        elif name == "QueryEvent":
            self._query(ev, offset)
        if end:
            self.next_pos = end
            if not self.reached and self.txn is None:
                self._check_reached(end)

    def _handle_raw(self, ev: Any) -> None:
        """A hot event the stream left unparsed (see dbus_ray.binlog.stream)."""
        t = ev.type
        if t == bs.TABLE_MAP_EVENT:
            self._table_map(ev)
            return
        end = ev.log_pos
        offset = end - ev.event_size if end else self.next_pos
        if ev.timestamp:
            self.last_ts = float(ev.timestamp)
        if t in bs.ROWS_OP:
            self._rows_raw(ev, offset)
        elif t == bs.MARIADB_GTID_EVENT:
            gtid, flags = bs.mariadb_gtid(ev)
            self._begin(offset, gtid, began=not (flags & 1))
        elif t == bs.XID_EVENT:
            self._end()
        elif t == bs.GTID_EVENT:
            self._begin(offset, bs.mysql_gtid(ev), began=False)
        elif t == bs.QUERY_EVENT:
            schema, sql = bs.query_parts(ev)
            self._statement(sql, schema, float(ev.timestamp), offset)
        if end:
            self.next_pos = end
            if not self.reached and self.txn is None:
                self._check_reached(end)

    def _check_reached(self, end: int) -> None:
        if self.file != self._index_of[0]:
            self._index_of = (self.file, binlog_index(self.file))
        self.reached = (self._index_of[1], end) >= self.target

    def _table_map(self, ev: Any) -> None:
        """Map the event's table id to a layout, parsing a definition only the first time it is seen."""
        table_id, key, db, table = bs.table_map_names(ev)
        entry = self.map_cache.get(key)
        if entry is None:
            layout = None
            if self.matcher(db, table) and not (self.options.skip_osc_tables and OSC_RE.match(table)):
                offset = ev.log_pos - ev.event_size if ev.log_pos else self.next_pos
                try:
                    table_map = self.stream.table_map_event(ev)
                    table_obj = table_map.get_table()
                    table_obj.null_bitmask = table_map.null_bitmask  # NOT NULL columns, for column metadata
                    layout = self._layout_of(table_obj, db, table, offset)
                except (DecodeError, ValueError, IndexError, KeyError, struct.error) as exc:
                    raise DecodeError(
                        f"binlog {self.file}:{offset}: cannot read the table map event of {db}.{table}: {exc}"
                    ) from None
            entry = self.map_cache[key] = (db, table, layout)
        self.by_table_id[table_id] = entry

    def _rows_raw(self, ev: Any, offset: int) -> None:
        table_id, _flags, _ncols, bitmap, bitmap2, pos = bs.rows_body(ev)
        entry = self.by_table_id.get(table_id)
        if entry is None or entry[2] is None:  # no TABLE_MAP seen for it, or an excluded table
            return
        layout = entry[2]
        txn = self.txn
        if txn is None:  # a rows event outside any transaction marker: treat it as its own transaction
            self._begin(offset, None, began=False)
            txn = self.txn
            assert txn is not None
        op = bs.ROWS_OP[ev.type]
        try:
            before, after = layout.read_rows(ev.data, op, bitmap, bitmap2, pos, ev.end)
        except DecodeError as exc:
            raise DecodeError(f"binlog {self.file}:{offset}: {exc}") from None
        n = len((after if after is not None else before)[0])  # type: ignore[index]
        absent: dict[str, list[str]] | None = None
        gone = layout.absent(bitmap)
        gone2 = layout.absent(bitmap2) if bitmap2 is not None else ()
        if gone or gone2:  # binlog_row_image MINIMAL or NOBLOB: columns not in the image are absent, not null
            absent = {}
            if gone:
                absent["after" if op == "insert" else "before"] = list(gone)
            if gone2:
                absent["after"] = list(gone2)
        first = txn.rows
        txn.rows += n
        start = max(0, txn.skip - first)
        if start < n:
            if start:
                before = None if before is None else [c[start:] for c in before]
                after = None if after is None else [c[start:] for c in after]
            self.pending.append(
                _Seg(layout, op, before, after, n - start, self.file, offset, txn.gtid, first + start,
                     txn.txid, float(ev.timestamp), txn.file, txn.offset, absent)
            )
            self.pending_rows += n - start
        if not txn.began:
            self._end()

    def _begin(self, offset: int, gtid: str | None, began: bool) -> None:
        self.txn = _Txn(self.file, offset, gtid, began)
        if self.resume and self.resume[:2] == (self.file, offset):
            self.txn.skip = self.resume[2]
            self.resume = None

    def _end(self) -> None:
        if self.txn is not None and self.txn.gtid:
            self.last_gtid = self.txn.gtid
        self.txn = None

    def _query(self, ev: Any, offset: int) -> None:
        sql = ev.query if isinstance(ev.query, str) else ev.query.decode("utf-8", "replace")
        schema = ev.schema.decode("utf-8", "replace") if isinstance(ev.schema, bytes) else str(ev.schema)
        self._statement(sql, schema, float(ev.timestamp), offset)

    def _statement(self, sql: str, schema: str, ts: float, offset: int) -> None:
        head = sql.lstrip()[:16].upper()
        if head.startswith("BEGIN") or head.startswith("XA START"):
            if self.txn is None:
                self._begin(offset, None, began=True)
            else:
                self.txn.began = True
            return
        if head.startswith("COMMIT") or head.startswith("ROLLBACK") or head.startswith("XA END"):
            self._end()
            return
        if self.txn is None:
            self._begin(offset, None, began=False)
        assert self.txn is not None
        target = ddl_target(sql, schema)
        if target is not None:
            named = [target, *renamed_tables(sql, schema)]
            for db, table in named:
                self.names_cache.pop((db, table), None)
                for key in [k for k, v in self.map_cache.items() if v[0] == db and (v[1] == table or not table)]:
                    del self.map_cache[key]
            if self.history_on or self.history:
                self._ddl_passed(named, offset)
            if self.options.skip_osc_tables:  # a DDL on shadow tables only is left out; a cut-over
                # rename (`t TO _t_del, _t_gho TO t`) is a DDL of `t`
                target = next((n for n in named if not n[1] or not OSC_RE.match(n[1])), None)
        if target is not None:
            db, table = target
            if self.matcher(db, table or "*"):
                txn = self.txn
                index = txn.rows
                txn.rows += 1
                if index >= txn.skip:
                    self.pending.append(
                        _Seg(DdlLayout(db, table), "ddl", None, [[sql]], 1, self.file, offset, txn.gtid, index,
                             txn.txid, ts, txn.file, txn.offset)
                    )
                    self.pending_rows += 1
        if not self.txn.began:
            self._end()

    def _layout_of(self, table_obj: Any, db: str, table: str, offset: int = 0) -> Any:
        """The layout of a table definition (a stock `Table` parsed from a TABLE_MAP event at `offset`)."""
        from dbus_ray.binlog.types import Layout, columns_of

        cols = table_obj.columns
        names: list[str] | None = None
        if all(c.name for c in cols):
            pk = table_obj.primary_key
            key = (pk,) if isinstance(pk, str) and pk else tuple(pk) if pk else ()
        else:
            names, key = self._names_at(db, table, len(cols), offset)
        return Layout(db, table, columns_of(table_obj, names), key)

    def _live(self, offset: int) -> bool:
        """At `offset` of the current file the stream is caught up with where the server was at open, so
        information_schema describes the tables as of here."""
        return self.reached or (binlog_index(self.file), offset) >= self.target

    def _names_at(self, db: str, table: str, n: int, offset: int) -> tuple[list[str], tuple[str, ...]]:
        """Column names and key of a table whose TABLE_MAP event (at `offset`, `n` columns) carries no names:
        the schema history's version valid there, else information_schema (recorded in the history when the
        stream is live), whose column count must match the event's."""
        version = self.history.at(db, table, self.file, offset)
        if version is not None and version.columns is not None and len(version.columns) == n:
            return list(version.columns), version.key
        names, key = self._schema_from_catalog(db, table)
        if len(names) != n:
            raise DbusError(
                f"binlog {self.file}:{offset}: table {db}.{table} has {n} columns in the binlog but {len(names)} "
                "in information_schema (altered since) and the schema history has no definition for this "
                "position: set binlog_row_metadata=FULL on the server, or restart the pipeline from a snapshot"
            )
        if self._live(offset):
            self.history.record(db, table, self.file, offset, names, key)
        return names, key

    def _ddl_passed(self, named: list[tuple[str, str]], offset: int) -> None:
        """A DDL statement (at `offset`) on the tables `named` passed: record their definitions from here on
        when live; when behind, mark the versions recorded before it as no longer known (unless the history
        has the definition that starts here)."""
        live = self._live(offset)
        for db, table in named:
            if not table or not self.matcher(db, table):
                continue
            if live:
                names, key = self._schema_from_catalog(db, table)
                self.history.record(db, table, self.file, offset, names or None, key)
            elif self.history.tables.get((db, table)) and not self.history.recorded_at(db, table, self.file, offset):
                self.history.record(db, table, self.file, offset, None)

    def _schema_from_catalog(self, db: str, table: str) -> tuple[list[str], tuple[str, ...]]:
        """Column names and primary key from information_schema (servers without binlog_row_metadata)."""
        hit = self.names_cache.get((db, table))
        if hit is None:
            from dbus_ray.binlog.preflight import connect

            conn = connect(self.ep)
            try:
                with conn.cursor() as cur:
                    cur.execute(
                        "SELECT COLUMN_NAME, COLUMN_KEY FROM information_schema.COLUMNS "
                        "WHERE TABLE_SCHEMA=%s AND TABLE_NAME=%s ORDER BY ORDINAL_POSITION",
                        (db, table),
                    )
                    rows = cur.fetchall()
            finally:
                conn.close()
            hit = ([r[0] for r in rows], tuple(r[0] for r in rows if r[1] == "PRI"))
            self.names_cache[(db, table)] = hit
        return hit

    # ------------------------------------------------------------------ batches and positions
    def _runs(self, segs: list[_Seg]) -> list[TableRows]:
        """Consecutive segments of one table definition -> one Arrow record batch each."""
        parts: list[TableRows] = []
        now = time.time()
        start = 0
        n = len(segs)
        while start < n:
            layout = segs[start].layout
            end = start + 1
            while end < n and segs[end].layout is layout:
                end += 1
            run = segs[start:end]
            k = sum(s.n for s in run)
            ops: list[str] = []
            files: list[str] = []
            offsets: list[int] = []
            gtids: list[str | None] = []
            indexes: list[int] = []
            txids: list[str] = []
            tss: list[float] = []
            for s in run:
                m = s.n
                if m == 1:
                    ops.append(s.op)
                    files.append(s.file)
                    offsets.append(s.offset)
                    gtids.append(s.gtid)
                    indexes.append(s.index)
                    txids.append(s.txid)
                    tss.append(s.ts)
                else:
                    ops += [s.op] * m
                    files += [s.file] * m
                    offsets += [s.offset] * m
                    gtids += [s.gtid] * m
                    indexes += range(s.index, s.index + m)
                    txids += [s.txid] * m
                    tss += [s.ts] * m
            before = self._images(layout, run, "before", k)
            after = self._images(layout, run, "after", k)
            arrays = [
                pa.array(ops, pa.string()),
                pa.array(files, pa.string()),
                pa.array(offsets, pa.int64()),
                pa.array(gtids, pa.string()),
                pa.array(indexes, pa.int32()),
                pa.array(txids, pa.string()),
                pa.array(tss, pa.float64()),
                pa.array([now] * k, pa.float64()),
                before,
                after,
            ]
            schema = META_SCHEMA.append(pa.field("before", before.type)).append(pa.field("after", after.type))
            if any(s.absent for s in run):  # only with binlog_row_image MINIMAL/NOBLOB
                absent: list[dict[str, list[str]] | None] = []
                for s in run:
                    absent += [s.absent] * s.n
                arrays.append(pa.array(absent, ABSENT_TYPE))
                schema = schema.append(pa.field("absent", ABSENT_TYPE))
            parts.append(
                TableRows(
                    layout.db, layout.table, layout.key, pa.RecordBatch.from_arrays(arrays, schema=schema)
                )
            )
            start = end
        return parts

    @staticmethod
    def _images(layout: Any, run: list[_Seg], which: str, k: int) -> pa.StructArray:
        """The `before` or `after` struct column of a run of segments."""
        images = [getattr(s, which) for s in run]
        if len(run) == 1:
            return layout.struct(images[0], k)
        if all(i is None for i in images):
            return layout.struct(None, k)
        cols: list[list[Any]] = [[] for _ in layout.types]
        mask: list[bool] | None = None
        if any(i is None for i in images):
            mask = []
            for s, image in zip(run, images):
                mask += [image is None] * s.n
        for s, image in zip(run, images):
            if image is None:
                nones = [None] * s.n
                for c in cols:
                    c += nones
            else:
                for c, sc in zip(cols, image):
                    c += sc
        return layout.struct(cols, k, mask)

    def _checkpoint(self) -> dict[str, Any]:
        """Where to resume so that every row handed out so far is skipped and no other."""
        if self.pending:
            seg = self.pending[0]
            return self._extras({"file": seg.tfile, "offset": seg.toffset, "skip": seg.index, "gtid": seg.gtid})
        txn = self.txn
        if txn is not None:
            return self._extras({"file": txn.file, "offset": txn.offset, "skip": txn.rows, "gtid": txn.gtid})
        if self.resume is not None:
            file, offset, skip = self.resume
            return self._extras({"file": file, "offset": offset, "skip": skip, "gtid": self.last_gtid})
        return self._extras({"file": self.file, "offset": self.next_pos, "skip": 0, "gtid": self.last_gtid})

    def _extras(self, checkpoint: dict[str, Any]) -> dict[str, Any]:
        """A binlog checkpoint with the include/exclude it was taken under (unless `snapshot: never`) and the
        schema history (pruned to what a resume from it needs) when there is one."""
        if self.options.snapshot != "never":
            checkpoint["selected"] = self.selected
        if self.history:
            checkpoint["schema_history"] = self.history.to_json(checkpoint["file"], checkpoint["offset"])
        return checkpoint

    def position(self) -> dict[str, Any] | None:
        """Between transactions with nothing pending: the position after the last commit read."""
        if self.snap is not None or self.pending or self.txn is not None:
            return None
        return self._checkpoint()

    def caught_up(self) -> bool:
        if self.snap is not None:
            return False
        return (self.reached or self.idle) and not self.pending

    def lag_seconds(self) -> float:
        if self.snap is not None:  # behind the binlog by the age of the snapshot
            return max(0.0, time.time() - float(self.snap.state.get("ts") or self.snap.ts))
        if self.pending:
            return max(0.0, time.time() - min(s.ts for s in self.pending))
        if self.idle or not self.last_ts:
            return 0.0
        return max(0.0, time.time() - self.last_ts)
