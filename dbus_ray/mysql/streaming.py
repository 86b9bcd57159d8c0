"""The binlog stream of the `mysql` source: events from the replica connection -> transactions -> pending
row segments -> batches, and the offset a resume starts from (`dbus_ray.mysql.offset`).

Transactions are followed by their markers (GTID, BEGIN, XID/COMMIT); a row's position is the `offset`
of its ROWS event, its `index` among the transaction's emitted rows and its `txid` (the GTID or
`file:offset` of the BEGIN). Tables excluded by include/exclude are skipped before any decoding, and so
are the shadow tables of online schema change tools (`skip_osc_tables`, see `dbus_ray.mysql.ddl.OSC_RE`):
their cut-over rename is a DDL row of the table itself. Columns an image leaves out (binlog_row_image
MINIMAL/NOBLOB) are listed per row in the optional `absent` column (`dbus_ray.model.ABSENT_TYPE`). A
DecodeError names the binlog position of its event. A dropped connection is resumed from the offset
(`dbus_ray.mysql.reconnect`). XA transactions (`dbus_ray.mysql.xa`): the rows of a prepared group are held
and delivered as rows of its XA COMMIT. With `defer` (`source.decoders` >= 1) whole transactions are handed
out as their raw rows events, for decoder actors (`dbus_ray.mysql.decode_pool`).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any

from dbus_ray.errors import DecodeError
from dbus_ray.model import TableRows
from dbus_ray.mysql import connection as cn
from dbus_ray.mysql import events as et
from dbus_ray.mysql import replica as rp
from dbus_ray.mysql import xa
from dbus_ray.mysql.batches import Segment, Txn, runs, take
from dbus_ray.mysql.ddl import OSC_RE, DdlLayout, ddl_target, dropped_tables, refuse_dml, renamed_tables
from dbus_ray.mysql.decode_pool import RAW_BATCH_BYTES, RAW_TXN_BYTES, RawRows, RawTxn, RawTxns, segments
from dbus_ray.mysql.gc_hold import gc_held
from dbus_ray.mysql.gtid_set import GtidSet
from dbus_ray.mysql.history import format_state, parse_state
from dbus_ray.mysql.offset import BinlogOffset, binlog_index
from dbus_ray.mysql.payload import inner_events
from dbus_ray.mysql.quick_txn import QuickTxns
from dbus_ray.mysql.reconnect import RECONNECT_ATTEMPTS, Reconnecting
from dbus_ray.mysql.row_images import row_images, unmapped
from dbus_ray.mysql.schema import TableSchema

log = logging.getLogger("dbus.mysql")

HEARTBEAT_SECONDS = 0.25  # the server sends a heartbeat after this long without events
POLL_BUDGET_SECONDS = 0.05  # a poll holding rows returns after this long even when not full (latency)
READ_TIMEOUT_SECONDS = 10  # 40 heartbeats: a link gone silent (black hole, dead host) is dropped


class BinlogStream(Reconnecting, xa.XaGroups, QuickTxns):
    """Reads the binlog from `start` (or, with `gtid`, from a GTID set: until the first transaction comes,
    the offset stays `start`, and its `skip` applies to the transaction `start.gtid`); `target` is the
    position (file index, offset) the server was at when the stream opened: at or past it, information_schema
    describes the tables as of the stream (`handed_out_to` tells whether a position is reached). On MariaDB it
    follows the GTID state (`gtid_pos` of the offsets) from `start.gtid_pos` or `gtid`."""

    def __init__(self, pipeline: str, ep: cn.Endpoint, info: cn.ServerInfo, server_id: int, identity: str,
                 schema: TableSchema, start: BinlogOffset, target: tuple[int, int], gtid: str | None = None,
                 reconnect_attempts: int = RECONNECT_ATTEMPTS, reader: Any = None) -> None:
        self.pipeline = pipeline
        # opens the events from a start offset instead of a replica connection (binlog files: `dbus_ray.mysql.files`)
        self.open_reader = reader
        self.reconnect_attempts = reconnect_attempts
        self.ep, self.where, self.info, self.server_id, self.identity = ep, ep.where, info, server_id, identity
        self.schema, self.target = schema, target
        self.pending: list[Segment] = []
        self.pending_rows = 0
        self.defer = False  # whole transactions go out raw, for decoder actors (`dbus_ray.mysql.decode_pool`)
        self.ready: list[RawTxn] = []  # raw transactions read, before any pending row
        self.ready_bytes = self.ready_events = 0
        self._index_of: tuple[str, int] = ("", 0)
        self.replica: rp.Replica | None = None
        self.txn: Txn | None = None
        self.resume: BinlogOffset | None = None  # where it started, until the stream reaches it
        self.resume_gtid: str | None = None  # connected by this GTID state
        self._skip_gtid: tuple[str, int] | None = None
        self.server = info.server
        self.gtid_state: dict[str, str] | GtidSet | None = None  # MariaDB {domain: gtid}, MySQL executed set
        self._file_start = False  # no transaction read since the start of a file (MySQL: PREVIOUS_GTIDS applies)
        self._state_text: str | None = None
        self.last_gtid = start.gtid
        self.idle = False
        # the last read ended because the server had sent nothing more (not on a full batch or its time budget)
        # and left no row pending: the reader then lets rows gather while earlier batches are delivered
        self.drained = False
        self.reached = False
        self._below: tuple[str, int] = ("", 0)  # (file, offset): before it, the target is not reached
        self.last_ts = 0.0
        self.file, self.next_pos = start.file, start.offset
        self.refused: et.RefusedEvent | None = None  # an event it cannot read, raised once the rows before it are out
        self._inner: deque[rp.RawEvent] = deque()  # the events of a transaction payload not handled yet
        self._inner_end = 0  # the position after that payload event
        self.prepared = xa.Prepared()
        self.recollect: xa.Recollect | None = None  # re-reading prepared XA groups before `resume`
        self._start(start, gtid)

    def _start(self, start: BinlogOffset, gtid: str | None = None) -> None:
        marks = xa.marks_from_json(start.xa)
        first = xa.earliest(marks) if gtid is None else None
        self.prepared = xa.Prepared(self.prepared.limit)
        self.recollect = None if first is None else xa.Recollect(marks, (start.file, start.offset))
        at = start if first is None else BinlogOffset(first.file, first.offset, gtid_pos=first.gtid_pos)
        if self.open_reader is not None:
            self.replica = self.open_reader(at)
        else:
            settings = self.ep.settings()
            settings["read_timeout"] = READ_TIMEOUT_SECONDS
            self.replica = rp.Replica(settings, self.server_id, self.identity, HEARTBEAT_SECONDS, at.file,
                                      at.offset, gtid, mariadb=self.info.mariadb,
                                      row_metadata=self.info.has_row_metadata)
        if first is not None:  # prepared XA transactions: their groups are read again first
            self.file, self.next_pos = first.file, first.offset
        self.txn = None
        self._inner.clear()
        self._inner_end = 0
        self.schema.by_table_id = {}
        self.resume_gtid = gtid
        self.resume = start if start.skip or gtid is not None or first is not None else None
        self._skip_gtid = (start.gtid, start.skip) if gtid is not None and start.skip and start.gtid else None
        state = gtid if gtid is not None else at.gtid_pos
        self.gtid_state = self._parse_state(state)
        self._file_start = gtid is None and at.offset == 4
        self._state_text = None

    def _parse_state(self, text: str | None) -> dict[str, str] | GtidSet | None:
        """A checkpoint's GTID state as the stream follows it: MariaDB {domain: gtid}; MySQL the executed GTID
        set (followed only with gtid_mode=ON: else transactions without GTIDs would be missing from it)."""
        if text is None:
            return None
        if self.info.mariadb:
            return parse_state(text)
        return GtidSet.parse(text) if self.info.gtid_mode_on else None

    def close(self) -> None:
        if self.replica is not None:
            self.replica.close()
            self.replica = None

    # ------------------------------------------------------------------ state
    def offset(self) -> BinlogOffset:
        """Where to resume so that every row handed out so far is skipped and no other."""
        if self.recollect is not None:
            assert self.resume is not None
            return self.resume
        if self.ready:
            t = self.ready[0]
            return BinlogOffset(t.file, t.offset, 0, t.gtid, gtid_pos=t.before, server=self.server,
                                xa=xa.marks_to_json(t.marks) if t.marks else None)
        if self.pending:
            seg = self.pending[0]
            return BinlogOffset(seg.tfile, seg.toffset, seg.index, seg.gtid, gtid_pos=seg.before_state,
                                server=self.server, xa=xa.marks_to_json(seg.xa) if seg.xa else None)
        txn = self.txn
        if txn is not None:
            return BinlogOffset(txn.file, txn.offset, txn.rows, txn.gtid, gtid_pos=txn.before, server=self.server,
                                xa=xa.marks_to_json(txn.marks) if txn.marks else None)
        if self.resume is not None:
            return self.resume
        marks = self.prepared.marks
        return BinlogOffset(self.file, self.next_pos, 0, self.last_gtid, gtid_pos=self._state(), server=self.server,
                            xa=xa.marks_to_json(marks) if marks else None)

    def _state(self) -> str | None:
        """The GTID state after the last transaction read (MariaDB), None when not followed."""
        state = self.gtid_state
        if state is None:
            return None
        if self._state_text is None:
            if isinstance(state, dict):  # one domain (the usual case): its GTID, without a sort per transaction
                self._state_text = next(iter(state.values())) if len(state) == 1 else format_state(state)
            else:
                self._state_text = str(state)
        return self._state_text

    def buffered(self) -> bool:
        """The server has sent more already: a `read` would not wait for it."""
        return bool(self._inner) or self.replica is None or self.replica.ready()

    def between_transactions(self) -> bool:
        """Nothing pending and no transaction open: the offset is the position after the last commit."""
        return not self.pending and not self.ready and self.txn is None

    def handed_out_to(self, target: tuple[int, int]) -> bool:
        """Every row before binlog position `target` (file index, offset) is handed out, or the server said it
        has nothing more: under steady writes too (the rows after `target` do not count)."""
        if self.refused is not None:
            return False
        if self.idle and not self.pending and not self.ready:
            return True
        at = self.offset()
        return bool(at.file) and (binlog_index(at.file), at.offset) >= target

    def lag_seconds(self) -> float:
        if self.ready:
            return max(0.0, time.time() - min(r.ts for r in self.ready[0].events))
        if self.pending:
            return max(0.0, time.time() - min(s.ts for s in self.pending))
        if self.idle or not self.last_ts:
            return 0.0
        return max(0.0, time.time() - self.last_ts)

    def _live(self, offset: int) -> bool:
        """At `offset` of the current file the stream is caught up with where the server was at open, so
        information_schema describes the tables as of here."""
        return self.reached or (self._file_index(), offset) >= self.target

    def _file_index(self) -> int:  # binlog_index(self.file), parsed once per file
        if self.file != self._index_of[0]:
            self._index_of = (self.file, binlog_index(self.file))
        return self._index_of[1]

    def _check_reached(self, end: int) -> None:  # asked after every transaction until reached
        if self._below[0] is not self.file or end >= self._below[1]:
            self.reached = (self._file_index(), end) >= self.target
            if not self.reached:  # not before this offset of this file
                self._below = (self.file, self.target[1] if self._file_index() == self.target[0] else 1 << 62)

    # ------------------------------------------------------------------ reading
    def read(self, max_rows: int) -> tuple[list[TableRows] | RawTxns, float] | None:
        """Up to `max_rows` rows as Arrow runs and the newest event time among them, or (`defer`) whole
        transactions not decoded yet; None when no row came within the poll budget (or a heartbeat said the
        server has nothing more)."""
        if self.refused is not None and not self.pending_rows and not self.ready:
            raise self.refused
        with gc_held():  # the pending rows are not re-scanned by the cyclic collector (dbus_ray.mysql.gc_hold)
            return self._read(max_rows)

    def _read(self, max_rows: int) -> tuple[list[TableRows] | RawTxns, float] | None:
        monotonic = time.monotonic
        deadline = monotonic() + POLL_BUDGET_SECONDS
        fetch, handle, heartbeats, mapped = self._fetch, self._event, et.HEARTBEATS, self.schema.mapped
        inner = self._inner
        # the events the replica framed already, taken here without a call: not while a payload's are handed out,
        # nor by a stream whose `_fetch` does more (a debug window's end); a reconnect replaces the replica
        framed = self.replica is not None and type(self)._fetch is BinlogStream._fetch
        ahead = self.replica.ahead if framed else ()
        quick = et.MARIADB_GTID_EVENT if framed and self.info.mariadb else None  # (`dbus_ray.mysql.quick_txn`)
        drained = self.drained = False
        while self.pending_rows < max_rows and self.ready_events < max_rows and self.ready_bytes < RAW_BATCH_BYTES \
                and self.refused is None:
            if (self.pending_rows or self.ready) and monotonic() > deadline:
                break
            event = ahead.popleft() if ahead and not inner else fetch()
            if event is None:
                drained = True
                break
            if event.type in heartbeats:
                self.idle = drained = True
                if self.recollect is not None:  # the server sent all it has: the checkpoint's position is passed
                    self._recollected()
                break
            self.idle = False
            try:
                t = event.type
                if t == quick and not inner and self._quick_txn(event, ahead):
                    pass  # a whole transaction of one rows event, with the three events after it
                elif t == quick and not inner and self.defer and self.pending_rows and len(ahead) >= 3:
                    ahead.appendleft(event)  # likely a decoder's: the next read, once the rows decoded here are out
                    break
                elif t != et.TABLE_MAP_EVENT or not mapped(event):  # a table map seen before: mapped
                    handle(event)  # (`_event`, then a payload's end: written out, a frame less per event)
                if self._inner_end and not self._inner and not event.log_pos:  # after a payload's last event
                    self._payload_done()
            except et.RefusedEvent as exc:
                if not self.pending_rows and not self.ready:
                    raise
                self.refused = exc  # the rows before it first: their checkpoint is still before it
            if (self.pending_rows or self.ready) and self.txn is None and \
                    not (inner or ahead or not self.replica or self.replica.ready()):
                drained = True
                break  # a commit, and the server has sent nothing more yet: the rows go now (latency)
        if self.ready and not self.defer:  # read for a decoder, wanted decoded now (a fenced poll): decoded here
            segs = segments(self.ready)
            self.pending[:0] = segs
            self.pending_rows += sum(s.n for s in segs)
            self.ready, self.ready_bytes, self.ready_events = [], 0, 0
        if self.ready:  # (before any pending row: a transaction is deferred only when none is pending)
            txns = RawTxns(self.ready)
            self.ready, self.ready_bytes, self.ready_events = [], 0, 0
            return txns, txns.ts
        if not self.pending_rows:
            return None
        segs, self.pending, got = take(self.pending, max_rows)  # (splitting a segment when needed)
        self.pending_rows -= got
        self.drained = drained and not self.pending_rows
        return runs(segs), max(s.ts for s in segs)

    def _handle(self, ev: rp.RawEvent) -> None:  # one event, as the read loop handles it (written out there)
        self._event(ev)
        if self._inner_end and not self._inner and not ev.log_pos:
            self._payload_done()

    # ------------------------------------------------------------------ events
    def _payload_done(self) -> None:
        """After the last event of a transaction payload, the position is the payload's end."""
        self.next_pos, self._inner_end = self._inner_end, 0
        if not self.reached and self.txn is None:
            self._check_reached(self.next_pos)

    def _event(self, ev: rp.RawEvent) -> None:
        """One event; its type decides (`dbus_ray.mysql.events`): decoded, ignored (no row change, the
        position stays), or refused (a one-line RefusedEvent, raised by `read` once the rows before it are
        handed out: the checkpoint stays before it)."""
        t = ev.type
        if t == et.TABLE_MAP_EVENT:  # the most frequent types first (a one-row transaction: 4-5 events)
            if not self.schema.mapped(ev):  # (the read loop maps a table map seen before itself)
                assert self.replica is not None
                offset = ev.log_pos - ev.event_size if ev.log_pos else self.next_pos
                self.schema.table_map(ev, self.replica, self.file, offset, self._live(offset))
            return
        end = ev.log_pos
        offset = end - ev.event_size if end else self.next_pos
        if t not in et.DECODED_TYPES:
            if t in et.IGNORED_TYPES:
                return
            raise et.refused(t, self.file, offset)
        if ev.timestamp:
            self.last_ts = float(ev.timestamp)
        if t in et.ROWS_OP:
            self._rows(ev, offset)
        elif t == et.XID_EVENT:
            self._end()
        elif t == et.MARIADB_GTID_EVENT:
            gtid, flags = rp.mariadb_gtid(ev)
            txn = self._begin(offset, gtid, began=not (flags & 1))
            if flags & xa.FL_PREPARED_XA:  # the group ends with XA PREPARE: its rows are held
                try:
                    self._collect(txn, xa.gtid_xid(ev.data[rp.HEADER : ev.end], flags))
                except ValueError as exc:
                    raise DecodeError(f"binlog {self.file}:{offset}: cannot read the GTID event: {exc}") from None
        elif t == et.XA_PREPARE_EVENT:
            self._prepare()
        elif t == et.TRANSACTION_PAYLOAD_EVENT:
            self._payload(ev, offset)
            return  # the position moves past it after its last inner event
        elif t == et.GTID_EVENT:
            self._begin(offset, rp.mysql_gtid(ev), began=False)
        elif t in et.QUERIES:
            try:
                schema, sql = rp.query_parts(ev)
            except ValueError as exc:
                raise DecodeError(f"binlog {self.file}:{offset}: cannot read the query event: {exc}") from None
            self._statement(sql, schema, float(ev.timestamp), offset)
        elif t == et.ROTATE_EVENT:
            self.file, self.next_pos = rp.rotate(ev)
            self._file_start = self.next_pos == 4
            if ev.timestamp:  # a real rotation: table ids may be reused from here on
                self.schema.by_table_id = {}
            return
        elif t == et.PREVIOUS_GTIDS_EVENT:  # MySQL: the executed set before this file, where none is known yet
            if self._file_start and self.gtid_state is None and not self.info.mariadb and self.info.gtid_mode_on:
                try:
                    self.gtid_state = GtidSet.decode(ev.data[: ev.end], rp.HEADER)
                except ValueError as exc:
                    raise DecodeError(f"binlog {self.file}:{offset}: cannot read PREVIOUS_GTIDS: {exc}") from None
                self._state_text = None
            return
        if end:
            self.next_pos = end
            if not self.reached and self.txn is None:
                self._check_reached(end)

    def _payload(self, ev: rp.RawEvent, offset: int) -> None:
        """A MySQL 8 compressed transaction: its inner events are fetched next, each at the payload's position
        (`next_pos` is `offset` until the last one is handled; `dbus_ray.mysql.payload`)."""
        try:
            inner = inner_events(ev)
        except ValueError as exc:
            raise DecodeError(f"binlog {self.file}:{offset}: cannot read the transaction payload: {exc}") from None
        self.next_pos = offset  # also after an ignored ANONYMOUS_GTID event: a BEGIN inside starts here
        if inner:
            self._inner.extend(inner)
            self._inner_end = ev.log_pos or offset + ev.event_size
        elif ev.log_pos:
            self.next_pos = ev.log_pos

    def _rows(self, ev: rp.RawEvent, offset: int) -> None:
        table_id, _flags, _ncols, bitmap, bitmap2, pos = rp.rows_body(ev)
        entry = self.schema.by_table_id.get(table_id) or unmapped(table_id, self.file, offset)
        if entry[2] is None:  # an excluded table (or MySQL's dummy rows event)
            return
        layout = entry[2]
        txn = self.txn
        if txn is None:  # a rows event outside any transaction marker: treat it as its own transaction
            txn = self._begin(offset, None, began=False)
        if self.recollect is not None and txn.segs is None:  # read before: only prepared XA groups count
            return
        if txn.raw is not None:  # for a decoder actor, with the rest of its transaction
            txn.raw.append(RawRows(layout, ev, pos, bitmap, bitmap2, self.file, offset))
            txn.raw_bytes += ev.end
            if txn.raw_bytes > RAW_TXN_BYTES:  # too large to hold: decoded here
                self._undefer(txn)
            if not txn.began:
                self._end()
            return
        images = row_images(ev, layout, self.file, offset, bitmap, bitmap2, pos)
        self._add(txn, layout, float(ev.timestamp), offset, images)
        if not txn.began and txn.segs is None:
            self._end()

    def _add(self, txn: Txn, layout: Any, ts: float, offset: int, images: tuple[Any, ...]) -> None:
        """The decoded images of the rows event at `offset` (event time `ts`): held (an XA group) or pending."""
        op, before, after, n, absent = images
        if txn.segs is not None:
            self.prepared.count(n, f"{self.file}:{offset}")
        if txn.segs is not None:  # held until its XA COMMIT
            txn.segs.append(Segment(layout, op, before, after, n, self.file, offset, None, 0, "",
                                    ts, "", 0, absent))
            return
        first = txn.rows
        txn.rows += n
        start = max(0, txn.skip - first)
        if start < n:
            if start:
                before = None if before is None else [c[start:] for c in before]
                after = None if after is None else [c[start:] for c in after]
            self.pending.append(
                Segment(layout, op, before, after, n - start, self.file, offset, txn.gtid, first + start,
                        txn.txid, ts, txn.file, txn.offset, absent, txn.before, txn.marks)
            )
            self.pending_rows += n - start

    def _undefer(self, txn: Txn) -> None:
        """Decode the rows events `txn` holds for a decoder here, and the rest of it as they come (a row that
        is not one of a whole transaction's is pending after them)."""
        raw, txn.raw = txn.raw, None
        for r in raw or ():
            self._add(txn, r.layout, r.ts, r.offset,
                      row_images(r, r.layout, r.file, r.offset, r.bitmap, r.bitmap2, r.pos))

    def _begin(self, offset: int, gtid: str | None, began: bool) -> Txn:
        if self.recollect is not None and self.recollect.done(self.file, offset):
            self._recollected()
        self._file_start = False
        txn = self.txn = Txn(self.file, offset, gtid, began, before=self._state(), marks=self.prepared.marks)
        resume = self.resume
        if resume is not None:
            if self.resume_gtid is not None:  # the first transaction by GTID: positions are this server's now
                self.resume = None
            elif resume.file == self.file and resume.offset == offset:
                txn.skip = resume.skip
                self.resume = None
        if self._skip_gtid is not None and gtid == self._skip_gtid[0]:
            txn.skip = self._skip_gtid[1]
            self._skip_gtid = None
        if self.defer and not txn.skip and not self.pending and self.recollect is None:
            txn.raw = []
        return txn

    def _end(self) -> None:
        txn = self.txn
        if txn is not None and txn.raw:
            self.ready.append(RawTxn(txn, txn.raw))
            self.ready_bytes += txn.raw_bytes
            self.ready_events += len(txn.raw)
        if txn is not None and txn.gtid:
            self._committed(txn.gtid)
        self.txn = None

    def _committed(self, gtid: str) -> None:
        """The transaction `gtid` is read to its end: the last GTID and the GTID state after it."""
        self.last_gtid = gtid
        state = self.gtid_state
        if isinstance(state, dict):
            state[gtid.split("-", 1)[0]] = gtid
            self._state_text = gtid if len(state) == 1 else None  # as `_state` shows one domain
        elif state is not None:
            state.add(gtid)
            self._state_text = None

    def _statement(self, sql: str, schema: str, ts: float, offset: int) -> None:
        head = sql.lstrip()[:16].upper()
        if head.startswith("XA"):
            stmt = xa.xa_statement(sql)
            if stmt is not None:
                self._xa(*stmt, offset, ts)
                return
        if head.startswith("BEGIN") or head.startswith("XA START"):
            if self.txn is None:
                self._begin(offset, None, began=True)
            else:
                self.txn.began = True
            return
        if head.startswith("COMMIT") or head.startswith("ROLLBACK") or head.startswith("XA END"):
            self._end()
            return
        target = ddl_target(sql, schema)
        if target is None:
            refuse_dml(sql, schema, self.schema.matcher, self.file, offset)  # (rows not in the binlog)
        txn = self.txn if self.txn is not None else self._begin(offset, None, began=False)
        if target is not None:
            named = [target, *renamed_tables(sql, schema), *dropped_tables(sql, schema)]
            self.schema.ddl(named, self.file, offset, self._live(offset))
            osc = self.schema.skip_osc_tables  # a DDL on shadow tables only is left out; a cut-over rename
            # (`t TO _t_del, _t_gho TO t`) is a DDL of `t`; the row names the first table the pipeline includes
            target = next((n for n in named if not (osc and n[1] and OSC_RE.match(n[1]))
                           and self.schema.matcher(n[0], n[1] or "*")), None)
        if target is not None:
            db, table = target
            self._undefer(txn)  # (its rows before the DDL's)
            index = txn.rows
            txn.rows += 1
            if index >= txn.skip and self.recollect is None:
                change = self.schema.change(sql, db, table)
                self.pending.append(
                    Segment(DdlLayout(db, table), "ddl", None, [[sql], [change]], 1, self.file, offset, txn.gtid,
                            index, txn.txid, ts, txn.file, txn.offset, None, txn.before, txn.marks)
                )
                self.pending_rows += 1
        if not txn.began:
            self._end()
