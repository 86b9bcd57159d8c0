"""Source `mysql`: reads a MySQL/MariaDB binlog as a replica and emits row changes. This class only
coordinates (the package docstring lists the modules it uses): it runs the checks at open
(`connection`), then a snapshot (`snapshot.*`) or the binlog stream (`streaming`), and builds each batch's
checkpoint (`offset.BinlogOffset`, whose docstring describes the format).

Snapshot (`snapshot: initial | when_needed`): the selected tables' rows first, as `op: read` rows
through the same `poll` batches, then the stream from the binlog position that matches the snapshot.
While it runs the checkpoint is `{"snapshot": {...}}`; the batch holding its last row carries the binlog
checkpoint of that position. With `snapshot_parallelism` >= 2 worker actors read the chunks and the
stream's checkpoints carry `fences` until it passed every chunk's position; `backfill` (`dbus snapshot`)
interleaves an on-demand snapshot with the stream. Unless `snapshot: never`, binlog checkpoints carry
`selected` (include/exclude): tables a later start's patterns newly select are backfilled (`_snapshot_new_tables`).

Several hosts (`dsn` a list, primary first): `open` uses the first that answers, from the one in use; when the
stream loses its host and `reconnect_attempts` reconnects fail, it opens the next host (`_fail_over`) from the
checkpoint of the last row handed out: another server, so by GTID (`dbus_ray.mysql.history.resume_point`).
`host()` names the one in use (`dbus status`).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any

import pymysql

from dbus_ray.errors import DbusError
from dbus_ray.model import RowBatch
from dbus_ray.mysql import connection as cn
from dbus_ray.mysql import xa
from dbus_ray.mysql.ddl import OSC_RE
from dbus_ray.mysql.decode_pool import InOrder
from dbus_ray.mysql.gtid_set import GtidSet
from dbus_ray.mysql.history import resume_point, state_at
from dbus_ray.mysql.keys import MessageKeys
from dbus_ray.mysql.offset import BinlogOffset, binlog_index, is_snapshot
from dbus_ray.mysql.options import MysqlOptions, parse_dsns, parse_start
from dbus_ray.mysql.reconnect import BinlogLost
from dbus_ray.mysql.schema import TableSchema
from dbus_ray.mysql.snapshot.backfill import Backfill, backfill_tables
from dbus_ray.mysql.snapshot.catalog import list_tables
from dbus_ray.mysql.snapshot.key_order import Weigher
from dbus_ray.mysql.snapshot.parallel import Fenced, Fences, ParallelSnapshot
from dbus_ray.mysql.snapshot.serial import Snapshot
from dbus_ray.mysql.streaming import BinlogStream
from dbus_ray.parcel import Remote
from dbus_ray.registry import Source, source
from dbus_ray.routing import TableMatcher

log = logging.getLogger("dbus.mysql")


@source("mysql")
class MysqlSource(Source):
    Options = MysqlOptions

    def __init__(self, pipeline: str, options: MysqlOptions) -> None:
        super().__init__(pipeline, options)
        o = options
        ssl = {k: v for k, v in (("ca", o.ssl_ca), ("cert", o.ssl_cert), ("key", o.ssl_key)) if v}
        self.eps = [cn.Endpoint(d.host, d.port, d.user, d.password, ssl or None) for d in parse_dsns(o.dsn)]
        self.at = 0  # the index of the host in use in `eps`
        self.ep = self.eps[0]
        self.where = self.ep.where
        self.matcher = TableMatcher(o.include, o.exclude)
        self.keys = MessageKeys(pipeline, o.message_key_columns, o.key_change)
        self.server_id = o.server_id if isinstance(o.server_id, int) else 0  # `auto`: chosen at open
        self.identity = cn.replica_identity(pipeline)
        self.info: cn.ServerInfo | None = None
        self.schema: TableSchema | None = None
        self.stream: BinlogStream | None = None
        self.decoding: InOrder | None = None  # `decoders` >= 1: the batches decoder actors decode, in order
        self.snap: Any = None  # Snapshot / ParallelSnapshot / Backfill / Fenced while one applies
        self.snap_progress: dict[str, Any] | None = None
        # the include/exclude the checkpoints record (the old ones until newly selected tables are snapshotted)
        self.selected: dict[str, list[str]] = {"include": list(o.include), "exclude": list(o.exclude)}
        self._selected_next: dict[str, list[str]] | None = None
        self.backfill_queue: deque[tuple[list[Any], str | None]] = deque()  # asked for by `backfill`
        self._fenced_poll = False
        # the server's binlog position (file index, offset) at open: caught up once every row before it is out
        self.until: tuple[int, int] = (0, 0)

    @classmethod
    def parse_position(cls, text: str) -> dict[str, Any]:
        """`binlog.000042:1234` (the start of a transaction) -> a checkpoint."""
        return BinlogOffset.parse(text).to_dict()

    # ------------------------------------------------------------------ open / close
    def open(self, checkpoint: dict[str, Any] | None) -> None:
        """Open on the host in use, or (several hosts) on the first of the others that answers, in order."""
        n, first = len(self.eps), self.at
        failed: list[str] = []
        for k in range(n):
            self._use((first + k) % n)
            try:
                self._open(checkpoint)
                return
            except cn.Unreachable as exc:
                self.close()
                self.snap = None
                if n == 1:
                    raise
                failed.append(str(exc))
                if k + 1 < n:
                    log.warning("[%s] %s (host %d of %d) does not answer (%s): trying %s", self.pipeline, self.where,
                                self.at + 1, n, exc, self.eps[(self.at + 1) % n].where)
        raise DbusError(f"none of the {n} hosts of source.dsn answers: {'; '.join(failed)}")

    def _use(self, at: int) -> None:
        self.at, self.ep = at, self.eps[at]
        self.where = self.ep.where

    def host(self) -> str:
        n = len(self.eps)
        return self.where if n == 1 else f"{self.where} (host {self.at + 1} of {n})"

    def _fail_over(self, lost: BinlogLost) -> None:
        """The stream lost its host for good: open the next one (then the others, this one last) at the
        checkpoint of the last row handed out; another server's binlog, so by GTID."""
        assert self.stream is not None
        checkpoint = self.checkpoint()
        was = self.where
        self.close()
        self.info = self.schema = None
        log.warning("[%s] %s is lost (%s): moving to %s", self.pipeline, was, lost,
                    self.eps[(self.at + 1) % len(self.eps)].where)
        self.at = (self.at + 1) % len(self.eps)
        self.open(checkpoint)

    def _open(self, checkpoint: dict[str, Any] | None) -> None:
        o: MysqlOptions = self.options
        if o.server_id == "auto":
            self.server_id = cn.auto_server_id(self.pipeline, self.where)
        conn = cn.connect(self.ep)
        try:
            info = self.info = cn.preflight(conn, self.ep, schema_history=o.schema_history)
            logs = cn.binary_logs(conn, self.ep)
            others = cn.registered_replicas(conn, self.server_id)
        finally:
            conn.close()
        self.until = (binlog_index(info.file), info.position)
        others = [r for r in others or [] if r[0] != self.identity]
        if others:  # a replica that is not this pipeline holds the id: connecting would throw it out
            raise cn.server_id_clash(self.ep, self.server_id, others, took_over=False)
        self.schema = TableSchema(self.ep, self.matcher, o.skip_osc_tables, (checkpoint or {}).get("schema_history"),
                                  history_on=not info.has_row_metadata)
        if is_snapshot(checkpoint):  # stopped mid-snapshot: go on with it
            self._open_snapshot(checkpoint["snapshot"], logs)  # type: ignore[index]
            return
        if not checkpoint and o.snapshot == "initial":
            self._open_snapshot(None, logs)
            return
        gtid: str | None = None
        if checkpoint:  # checked against the server's history; on another server, by GTID
            start, gtid = resume_point(self.ep, info, BinlogOffset.from_dict(checkpoint), logs, self.pipeline)
            what = "checkpoint"
        else:
            kind, value = parse_start(o.start)
            what = f"start {o.start}"
            if kind == "latest":
                start = BinlogOffset(info.file, info.position)
            elif kind == "earliest":
                if not logs:
                    raise DbusError(f"{self.where} has no binlog files (SHOW BINARY LOGS is empty)")
                start = BinlogOffset(logs[0][0], 4)
            elif kind == "position":
                start = BinlogOffset(*value)
            else:
                start, gtid = BinlogOffset("", 0, gtid_pos=value), value
        if gtid is None:
            if o.snapshot == "when_needed" and start.file not in dict(logs):
                log.warning("[%s] binlog file %s (%s) is no longer on %s: snapshot (snapshot: when_needed)",
                            self.pipeline, start.file, what, self.where)
                self._open_snapshot(None, logs)
                return
            self._check_position(start.file, start.offset, logs, what)
            start = self._with_state(start, what)
            if not checkpoint:
                start = self._with_prepared(start, logs)
        self.stream = self._deferring(BinlogStream(
            self.pipeline, self.ep, info, self.server_id, self.identity, self.schema,
            start.with_(selected=None, schema_history=None, fences=None), self.until, gtid, o.reconnect_attempts))
        if checkpoint and gtid is not None:  # resuming by GTID: the server checks its history now
            try:
                self.stream.connect_now()
            except BaseException:
                self.close()
                raise
        if start.fences:  # taken while the stream ran behind a parallel snapshot's fences
            self.snap = Fenced(self._fences(start.fences), time.time())
        if checkpoint and self.snap is None:
            self._snapshot_new_tables(checkpoint.get("selected"))
        at = f"GTID state {gtid or '(empty)'}" if gtid is not None else f"{start.file}:{start.offset}"
        skip = f" (skip {start.skip} rows of {start.gtid or 'its transaction'})" if start.skip else ""
        log.info("[%s] mysql source at %s%s on %s, server_id %s", self.pipeline, at, skip, self.where, self.server_id)

    def _deferring(self, stream: BinlogStream) -> BinlogStream:
        """With `decoders` >= 1 the stream hands out whole transactions for decoder actors (started once)."""
        n = getattr(self.options, "decoders", 0)
        if n:
            if self.decode_pool is None:
                raise DbusError(f"source.decoders {n}: the decoder actors are started by the pipeline's reader "
                                "actor (set decode_pool)")
            if self.decoding is None:
                self.decoding = InOrder(self.decode_pool(self.pipeline, self.options, n), n)
            stream.defer = True
        return stream

    def close(self) -> None:
        if self.snap is not None:
            self.snap.close()
        if self.stream is not None:
            self.stream.close()
            self.stream = None
        if self.decoding is not None:  # (a fail-over opens a new pool: nothing is in flight then)
            self.decoding.close()
            self.decoding = None

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
            raise DbusError(f"binlog position {file}:{offset} ({what}) is beyond the end of {file} on {self.where}")

    def _with_state(self, start: BinlogOffset, what: str) -> BinlogOffset:
        """`start` with the server's identity and (MariaDB) the GTID state at its position; a position that is
        not an event boundary is refused."""
        assert self.info is not None
        if not self.info.mariadb:
            return self._with_executed(start.with_(server=self.info.server))
        if start.gtid_pos is not None and start.server == self.info.server:  # checked by resume_point
            return start
        conn = cn.connect(self.ep)
        try:
            state = state_at(conn, start.file, start.offset)
        finally:
            conn.close()
        if state is None:
            raise DbusError(f"binlog position {start.file}:{start.offset} ({what}) is not the start of an event on "
                            f"{self.where}: give the position of a transaction (SHOW BINLOG EVENTS)")
        return start.with_(gtid_pos=state, server=self.info.server)

    def _with_prepared(self, start: BinlogOffset, logs: list[tuple[str, int]]) -> BinlogOffset:
        """A stream starting without a checkpoint (MariaDB): with the XA transactions prepared before its start
        (`xa.prepared_before`), so that the rows of those committed after it are delivered."""
        assert self.info is not None
        if not self.info.mariadb:
            return start
        conn = cn.connect(self.ep)
        try:
            marks = xa.prepared_before(conn, logs, start.file, start.offset)
        except pymysql.MySQLError as exc:
            log.warning("[%s] cannot list the XA transactions prepared on %s (XA RECOVER: %s): one prepared before "
                        "%s:%s and committed later is not delivered", self.pipeline, self.where, exc, start.file,
                        start.offset)
            return start
        finally:
            conn.close()
        first = xa.earliest(marks)
        if first is None:
            return start
        log.info("[%s] XA transactions prepared before %s:%s: %s (their groups are read again from %s:%s)",
                 self.pipeline, start.file, start.offset, ", ".join(marks), first.file, first.offset)
        return start.with_(xa=xa.marks_to_json(marks))

    def _with_executed(self, start: BinlogOffset) -> BinlogOffset:
        """MySQL (gtid_mode=ON): `start` with the executed GTID set at its position when it is where the server
        writes next (SHOW BINARY LOG STATUS gives both at once); elsewhere the stream learns the set at the
        next file's PREVIOUS_GTIDS event (until then a checkpoint cannot resume by GTID on another server)."""
        assert self.info is not None
        if start.gtid_pos is not None or not self.info.gtid_mode_on:
            return start
        conn = cn.connect(self.ep)
        try:
            file, pos, executed = cn.binlog_status(conn, self.ep)
        finally:
            conn.close()
        if (file, pos) != (start.file, start.offset) or executed is None:
            return start
        try:
            return start.with_(gtid_pos=str(GtidSet.parse(executed)))
        except ValueError as exc:
            raise DbusError(f"{self.where}: Executed_Gtid_Set of SHOW BINARY LOG STATUS: {exc}") from None

    # ------------------------------------------------------------------ checkpoints and state
    def checkpoint(self, at: BinlogOffset | None = None) -> dict[str, Any]:
        """The binlog checkpoint of `at` (default: the stream's offset), with the include/exclude it was
        taken under (unless `snapshot: never`) and the schema history a resume from it needs."""
        if at is None:
            assert self.stream is not None
            at = self.stream.offset()
        assert self.schema is not None
        first = xa.earliest(xa.marks_from_json(at.xa))  # a resume reads prepared XA groups again from there
        since = (first.file, first.offset) if first is not None and first.key < at.key else (at.file, at.offset)
        return at.with_(
            selected=self.selected if self.options.snapshot != "never" else None,
            schema_history=self.schema.history_json(*since),
        ).to_dict()

    def position(self) -> dict[str, Any] | None:
        """Between transactions with nothing pending: the position after the last commit read."""
        if self.snap is not None or self.stream is None or not self.stream.between_transactions() or self.decoding:
            return None
        return self.checkpoint()

    def start_checkpoint(self) -> dict[str, Any] | None:
        """A snapshot begun at open: its state before any row (its binlog position, the floor of its fences),
        so that a resume after a crash before the first batch's checkpoint streams from that position and
        fences what it reads again at it (rows of the crashed run may have been delivered)."""
        if isinstance(self.snap, Snapshot) and not isinstance(self.snap, Backfill):
            return {"snapshot": self.snap.checkpoint_state()}
        return None

    def caught_up(self) -> bool:
        """Every row before the server's binlog position at open (after a snapshot: where the server was when
        the snapshot ended) is handed out (`until`), a snapshot included."""
        if self.snap is not None or self.stream is None or self.decoding:
            return False
        return self.stream.handed_out_to(self.until)

    def drained(self) -> bool:
        """The last poll ended because the server had sent nothing more (`BinlogStream.drained`)."""
        return self.snap is None and not self.decoding and self.stream is not None and self.stream.drained

    def lag_seconds(self) -> float:
        if self.snap is not None:  # behind the binlog by the age of the snapshot
            return max(0.0, time.time() - float(self.snap.state.get("ts") or self.snap.ts))
        oldest = self.decoding.oldest_ts() if self.decoding else None
        if oldest is not None:
            return max(0.0, time.time() - oldest)
        return 0.0 if self.stream is None else self.stream.lag_seconds()

    def snapshot_progress(self) -> dict[str, Any] | None:
        """The snapshot's progress (tables done/total, rows, rows/s, ...) while it runs and after; None when
        this source did not snapshot."""
        if self.snap is not None:
            return self.snap.progress()
        return self.snap_progress

    # ------------------------------------------------------------------ reading
    def poll(self, max_rows: int, seq: int) -> RowBatch | Remote | None:
        batch = self._poll(max_rows, seq)  # (a decoder actor keys the rows it decodes)
        return self.keys.apply(batch) if type(batch) is RowBatch else batch

    def _poll(self, max_rows: int, seq: int) -> RowBatch | Remote | None:
        decoding = self.decoding
        if self.snap is not None or (self.backfill_queue and not self._fenced_poll):
            if decoding:  # the batches read before it first
                return decoding.take(self.pipeline, seq)
            return self._poll_snapshot(max_rows, seq)
        assert self.stream is not None
        # fenced rows are looked at here: decoded by the stream
        self.stream.defer = decoding is not None and not self._fenced_poll
        try:
            if self.stream.defer:
                return decoding.poll(self.stream, max_rows, self.pipeline, seq, self.checkpoint)  # type: ignore
            got = self.stream.read(max_rows)
        except BinlogLost as exc:  # not a lookup that failed halfway through an event: a restart retries those
            if len(self.eps) == 1 or self._fenced_poll or self.backfill_queue:  # a restart resumes those
                raise
            self._fail_over(exc)
            return None
        if got is None:
            return None
        parts, ts = got
        return RowBatch(self.pipeline, seq, parts, self.checkpoint(), ts)

    def _poll_snapshot(self, max_rows: int, seq: int) -> RowBatch | None:
        if self.snap is None:  # a backfill was asked for (`dbus snapshot`)
            o: MysqlOptions = self.options
            self.snap = Backfill(self.ep, self.pipeline, self.backfill_queue, o.chunk_rows, o.max_rows_per_second)
        snap = self.snap
        if snap.done:  # a parallel snapshot is read: the stream runs behind its fences
            return self._poll_fenced(max_rows, seq)
        parts = snap.read(max_rows)
        if snap.done:
            state = snap.state
            at = self._stream_after_snapshot(BinlogOffset(state["file"], state["offset"], 0, state.get("gtid")))
            checkpoint = self.checkpoint(at)
            self.snap_progress = snap.progress()
            snap.close()
            self.snap = None
            if "fences" in state:
                checkpoint["fences"] = state["fences"]
                self.snap = Fenced(self._fences(state["fences"]), float(state.get("ts") or snap.ts),
                                   self.snap_progress)
            log.info("[%s] snapshot done: %s", self.pipeline, self.snap_progress)
        else:
            checkpoint = {"snapshot": snap.checkpoint_state()}
        if not parts:
            return None
        return RowBatch(self.pipeline, seq, parts, checkpoint, snap.ts)

    def _fences(self, raw: dict[str, Any]) -> Fences:
        """A parallel snapshot's fences; text keys are weighed by the server (`key_order.Weigher`)."""
        return Fences(raw, Weigher(lambda: cn.connect(self.ep)))

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
        stream = self.stream
        assert stream is not None
        fences = fenced.fences
        parts = [] if batch is None else [p for p in (fences.keep(part) for part in batch.parts) if p is not None]
        room = max_rows - sum(p.num_rows for p in parts)
        if not fenced.finished and room > 0:
            parts += fenced.read(room, (stream.file, stream.next_pos))
        # every row still to come (pending, of an open transaction, or not read yet) is at or after this position:
        # past every chunk's, no fence applies to them (under steady writes a poll may never end between commits)
        at = stream.offset()
        lifted = fenced.finished and fences.passed(at.file, at.offset)
        if lifted:
            self.snap = None
            self.snap_progress = fenced.progress()
            if self._selected_next is not None:  # the newly selected tables are snapshotted
                self.selected, self._selected_next = self._selected_next, None
            log.info("[%s] stream at %s:%s, past every snapshot chunk", self.pipeline, stream.file, stream.next_pos)
        if not parts:
            return None
        checkpoint = batch.checkpoint if batch is not None else self.checkpoint()
        if not lifted and fences.raw:
            checkpoint = {**checkpoint, "fences": fences.raw}
        return RowBatch(self.pipeline, seq, parts, checkpoint, batch.ts if batch is not None else time.time())

    # ------------------------------------------------------------------ snapshots
    def _open_snapshot(self, state: dict[str, Any] | None, logs: list[tuple[str, int]]) -> None:
        o: MysqlOptions = self.options
        if state is not None and state.get("file") and state["file"] not in dict(logs):
            log.warning("[%s] binlog file %s of the interrupted snapshot is no longer on %s: snapshot again from the "
                        "start", self.pipeline, state["file"], self.where)
            state = None
        if o.snapshot_parallelism > 1:
            if self.worker_pool is None:
                raise DbusError(f"source.snapshot_parallelism {o.snapshot_parallelism}: the parallel snapshot's "
                                "worker actors are started by the pipeline's reader actor (set worker_pool)")
            pool = self.worker_pool(self.ep, self.pipeline, o.snapshot_parallelism)
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

    def _stream_after_snapshot(self, at: BinlogOffset) -> BinlogOffset:
        """Start the binlog stream at the snapshot's position (returned with its GTID state); it reads with the
        server's current schema from where the server is now. Caught up is judged from there on: the rows the
        snapshot read are as of positions up to now (a resumed snapshot's, a parallel snapshot's chunks), so
        before the stream passed it the output is not yet the tables as of one moment."""
        conn = cn.connect(self.ep)
        try:
            logs = cn.binary_logs(conn, self.ep)
            now = cn.master_status(conn, self.ep)
        finally:
            conn.close()
        self._check_position(at.file, at.offset, logs, "snapshot position")
        at = self._with_prepared(self._with_state(at, "snapshot position"), logs)
        assert self.info is not None and self.schema is not None
        self.until = max(self.until, (binlog_index(now[0]), now[1]))
        self.stream = self._deferring(BinlogStream(self.pipeline, self.ep, self.info, self.server_id, self.identity,
                                                   self.schema, at, self.until, None, self.options.reconnect_attempts))
        return at

    def backfill(self, tables: list[str], where: str | None = None) -> dict[str, Any]:
        """Ask for an on-demand snapshot of `tables` (db.table) while the stream runs, of the rows `where`
        (SQL) selects; checked here (one-line DbusError), read by the polling thread (see Backfill)."""
        found = backfill_tables(self.ep, self.matcher, list(tables), where)
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
        conn = cn.connect(self.ep)
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
