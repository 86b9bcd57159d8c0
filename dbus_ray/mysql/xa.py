"""XA transactions in the binlog stream of the `mysql` source: their rows are delivered when the transaction
commits, never while it is only prepared, and dropped when it is rolled back.

On MariaDB `XA PREPARE` writes the prepared group (a GTID event with the flag PREPARED_XA and the xid, the
rows, `XA END`, an XA_PREPARE_LOG_EVENT); the later `XA COMMIT` / `XA ROLLBACK` is a GTID group of its own
holding one Query event. MySQL writes `XA START` as a Query event of the prepared group instead.
`XA COMMIT ... ONE PHASE` is written as an ordinary transaction (MariaDB) or as a group that ends with it
(MySQL): its rows are delivered as those of any transaction.

The stream holds the rows of each prepared group (`Prepared`) until its resolution: at `XA COMMIT` they
become the rows of the commit's transaction (its position, GTID and time; the `skip` of a partly delivered
commit applies to them). The rows held are bounded (`MAX_PREPARED_ROWS`, over it the stream stops with
one line).

Checkpoint: besides the resume position, `xa` lists the xids still prepared at that position with where
each prepared group starts (`{xid: [file, offset, gtid, gtid_pos]}`, `marks_to_json`). A resume from such a
checkpoint reads from the earliest of those positions, collects only those groups (`Recollect`), delivers
nothing else, and goes on as usual from the checkpoint's position: a prepared transaction survives a
restart, and the checkpoint stays small. A stream that starts without a checkpoint does the same for the
transactions prepared before its start (`prepared_before`, MariaDB: XA RECOVER, then the binlog searched back).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from dbus_ray.errors import DbusError
from dbus_ray.mysql.batches import Segment
from dbus_ray.mysql.events import RefusedEvent
from dbus_ray.mysql.offset import position_key

#: rows of prepared XA transactions the stream holds at most (over it: one-line DbusError)
MAX_PREPARED_ROWS = 1_000_000

#: MariaDB GTID event flags: the group ends with XA PREPARE / is the XA COMMIT or ROLLBACK of one
FL_GROUP_COMMIT_ID = 0x02
FL_PREPARED_XA = 0x40
FL_COMPLETED_XA = 0x80

_XID_RE = re.compile(r"X'([0-9A-Fa-f]*)'\s*,\s*X'([0-9A-Fa-f]*)'\s*,\s*(-?\d+)")
_VERB_RE = re.compile(r"\s*XA\s+(START|BEGIN|END|PREPARE|COMMIT|ROLLBACK)\b(.*)$", re.IGNORECASE | re.DOTALL)


def format_xid(format_id: int, gtrid: bytes, bqual: bytes) -> str:
    """An xid as the server writes it in the binlog: `X'61',X'',1`."""
    return f"X'{gtrid.hex()}',X'{bqual.hex()}',{format_id}"


def gtid_xid(body: bytes, flags: int) -> str | None:
    """The xid a MariaDB GTID event carries after its flags (`body` starts at the event's post-header: seq_no 8,
    domain_id 4, flags2 1, [commit_id 8], formatID 4, gtrid_length 1, bqual_length 1, data); None when the
    flags say it has none."""
    if not flags & (FL_PREPARED_XA | FL_COMPLETED_XA):
        return None
    p = 13 + (8 if flags & FL_GROUP_COMMIT_ID else 0)
    format_id = int.from_bytes(body[p : p + 4], "little", signed=True)
    glen, blen = body[p + 4], body[p + 5]
    data = body[p + 6 : p + 6 + glen + blen]
    if len(data) != glen + blen:
        raise ValueError("the GTID event's xid is cut short")
    return format_xid(format_id, data[:glen], data[glen:])


def xa_statement(sql: str) -> tuple[str, str | None, bool] | None:
    """(verb, xid, one phase) of an XA statement as the server logs it (`XA COMMIT X'61',X'',1 ONE PHASE`);
    None for any other statement. The xid is None when the text does not hold one in the logged form."""
    m = _VERB_RE.match(sql)
    if m is None:
        return None
    verb, rest = m.group(1).upper(), m.group(2)
    x = _XID_RE.search(rest)
    xid = None if x is None else format_xid(int(x.group(3)), bytes.fromhex(x.group(1)), bytes.fromhex(x.group(2)))
    return ("START" if verb == "BEGIN" else verb), xid, "ONE PHASE" in rest.upper()


@dataclass(frozen=True, slots=True)
class Mark:
    """Where a prepared group starts: its GTID event (or first event), its GTID, the GTID state before it."""

    file: str
    offset: int
    gtid: str | None
    gtid_pos: str | None

    @property
    def key(self) -> tuple[int, int]:
        return position_key(self.file, self.offset)


Marks = dict[str, Mark]  # xid -> where its prepared group starts; never changed in place (shared by segments)


def marks_to_json(marks: Marks) -> dict[str, list[Any]]:
    return {xid: [m.file, m.offset, m.gtid, m.gtid_pos] for xid, m in marks.items()}


def marks_from_json(raw: Any) -> Marks:
    """The checkpoint's `xa` -> marks; ValueError naming the bad entry."""
    if not raw:
        return {}
    if not isinstance(raw, dict):
        raise ValueError(f"checkpoint key xa: expected an object of xid -> [file, offset, gtid, gtid_pos], got {raw!r}")
    out: Marks = {}
    for xid, v in raw.items():
        if not (isinstance(v, list) and len(v) == 4 and isinstance(v[0], str) and isinstance(v[1], int)):
            raise ValueError(f"checkpoint key xa.{xid}: expected [file, offset, gtid, gtid_pos], got {v!r}")
        out[str(xid)] = Mark(v[0], v[1], v[2], v[3])
    return out


_GTID_INFO_RE = re.compile(r"GTID (\d+-\d+-\d+)")


def prepared_before(conn: Any, logs: list[tuple[str, int]], file: str, offset: int) -> Marks:
    """MariaDB: the XA transactions prepared on the server now (XA RECOVER) whose prepared group is in its binlog
    before `file:offset`, with where each group starts (the binlog is searched back from there, file by file,
    only when some are prepared): a stream starting at `file:offset` collects them (`Recollect`) so that their
    XA COMMIT after it delivers their rows."""
    with conn.cursor() as cur:
        cur.execute("XA RECOVER")
        wanted = set()
        for format_id, glen, blen, data in cur.fetchall():
            raw = data if isinstance(data, bytes) else str(data).encode("utf-8", "surrogateescape")
            wanted.add(format_xid(int(format_id), raw[: int(glen)], raw[int(glen) : int(glen) + int(blen)]))
        names = [name for name, _size in logs]
        marks: Marks = {}
        if not wanted or file not in names:
            return marks
        for name in reversed(names[: names.index(file) + 1]):
            cur.execute("SHOW BINLOG EVENTS IN %s", (name,))
            found: dict[str, tuple[int, str | None]] = {}
            for row in cur.fetchall():
                pos, kind, info = int(row[1]), str(row[2]), str(row[5])
                if name == file and pos >= offset:
                    break
                if kind == "Gtid" and info.startswith("XA START"):
                    stmt = xa_statement(info.split(" GTID ")[0])
                    gtid = _GTID_INFO_RE.search(info)
                    if stmt is not None and stmt[1] in wanted and stmt[1] not in marks:
                        found[stmt[1]] = (pos, gtid.group(1) if gtid else None)  # the last one in the file
            for xid, (pos, gtid) in found.items():
                cur.execute("SELECT BINLOG_GTID_POS(%s, %s)", (name, pos))
                row = cur.fetchone()
                marks[xid] = Mark(name, pos, gtid, None if not row or row[0] is None else str(row[0]))
            if wanted <= marks.keys():
                break
    return marks


def earliest(marks: Marks) -> Mark | None:
    return min(marks.values(), key=lambda m: m.key) if marks else None


class Prepared:
    """The rows of the prepared XA transactions the stream has read (pending row segments per xid, in binlog
    order), and their marks (`marks`, replaced on each change so that a segment keeps those of its time)."""

    def __init__(self, limit: int | None = None) -> None:
        self.limit = MAX_PREPARED_ROWS if limit is None else limit
        self.held: dict[str, list[Any]] = {}
        self.marks: Marks = {}
        self.rows = 0

    def count(self, n: int, where: str) -> None:
        """`n` more rows of a prepared group are held; over the limit: one-line DbusError."""
        self.rows += n
        if self.rows > self.limit:
            raise DbusError(
                f"binlog {where}: prepared XA transactions hold more than {self.limit} rows "
                f"({len(self.held) + 1} prepared: {', '.join([*self.held][:3]) or 'the one being read'}): "
                "commit or roll them back (XA RECOVER lists them), or split them into smaller transactions"
            )

    def prepare(self, xid: str, mark: Mark, segments: list[Any]) -> None:
        self.held[xid] = segments
        self.marks = {**self.marks, xid: mark}

    def resolve(self, xid: str) -> list[Any] | None:
        """The rows of `xid` (commit) or None when its prepared group was not read; forgotten either way."""
        segments = self.held.pop(xid, None)
        if segments is not None:
            self.rows -= sum(s.n for s in segments)
        if xid in self.marks:
            self.marks = {k: v for k, v in self.marks.items() if k != xid}
        return segments


class Recollect:
    """A resume from a checkpoint with prepared xids: read from the earliest of their groups, collect only
    those groups (`wants`), deliver nothing until the checkpoint's position `until` (file, offset)."""

    def __init__(self, marks: Marks, until: tuple[str, int]) -> None:
        self.marks = marks
        self.positions = {(m.file, m.offset): xid for xid, m in marks.items()}
        self.until = position_key(*until)

    def wants(self, file: str, offset: int) -> str | None:
        """The xid of the prepared group at `file:offset` to collect, None when it is not one of them."""
        return self.positions.get((file, offset))

    def done(self, file: str, offset: int) -> bool:
        return position_key(file, offset) >= self.until


class XaGroups:
    """The XA part of `dbus_ray.mysql.streaming.BinlogStream` (its state: `prepared`, `recollect`, `txn`,
    `pending`, `resume`, ...): prepared groups held, delivered at XA COMMIT, dropped at XA ROLLBACK."""

    prepared: Prepared
    recollect: Recollect | None
    txn: Any
    pending: list[Segment]
    pending_rows: int
    resume: Any
    file: str
    pipeline: str
    where: str
    last_gtid: str | None
    gtid_state: Any
    _state_text: str | None

    def _begin(self, offset: int, gtid: str | None, began: bool) -> Any:
        raise NotImplementedError

    def _end(self) -> None:
        raise NotImplementedError

    def _parse_state(self, text: str | None) -> Any:
        raise NotImplementedError

    def _undefer(self, txn: Any) -> None:
        raise NotImplementedError

    def _collect(self, txn: Any, xid: str | None) -> None:
        """`txn` is an XA transaction's group: hold its rows (re-reading: only those of the groups wanted)."""
        txn.xid = xid
        self._undefer(txn)  # a group's rows are held here, not decoded elsewhere
        if xid is not None and (self.recollect is None or self.recollect.wants(txn.file, txn.offset) == xid):
            txn.segs = []

    def _prepare(self) -> None:
        """XA PREPARE: the group's rows are held until its XA COMMIT or ROLLBACK."""
        txn = self.txn
        if txn is not None and txn.xid is not None and txn.segs is not None:
            mark = self.recollect.marks[txn.xid] if self.recollect is not None else \
                Mark(txn.file, txn.offset, txn.gtid, txn.before)
            self.prepared.prepare(txn.xid, mark, txn.segs)
        self._end()

    def _xa(self, verb: str, xid: str | None, one_phase: bool, offset: int, ts: float) -> None:
        txn = self.txn
        if verb == "START":  # MySQL: the group's first statement
            txn = txn if txn is not None else self._begin(offset, None, began=True)
            txn.began = True
            self._collect(txn, xid)
        elif verb == "END":
            if txn is None or txn.xid is None:
                self._end()
        elif verb == "PREPARE":
            self._prepare()
        else:  # COMMIT or ROLLBACK, of the group itself (one phase) or of a prepared one (a group of its own)
            if txn is None:
                txn = self._begin(offset, None, began=False)
            if txn.xid is not None and txn.xid == xid and one_phase:
                segs = txn.segs
                if segs is not None:
                    self.prepared.rows -= sum(s.n for s in segs)
            else:
                segs = self.prepared.resolve(xid) if xid is not None else None
                if segs is None and self.recollect is None and verb == "COMMIT":
                    raise RefusedEvent(
                        f"binlog {self.file}:{offset}: XA COMMIT {xid} of a transaction prepared before the stream's "
                        "start whose rows it did not read (XA RECOVER did not list it, or its prepared group is no "
                        "longer in the binlog); the pipeline stops before it: start it again with a snapshot")
            if segs and verb == "COMMIT" and self.recollect is None:
                self._deliver(txn, segs, offset, ts)
            self._end()

    def _deliver(self, txn: Any, segs: list[Segment], offset: int, ts: float) -> None:
        """The rows of a committed XA transaction, as rows of its commit's transaction `txn` (position of the
        XA COMMIT statement, GTID, time; its `skip` applies)."""
        self._undefer(txn)
        for s in segs:
            first = txn.rows
            txn.rows += s.n
            start = max(0, txn.skip - first)
            if start >= s.n:
                continue
            if start:
                s.split(start)
            self.pending.append(Segment(s.layout, s.op, s.before, s.after, s.n, self.file, offset, txn.gtid,
                                        first + start, txn.txid, ts, txn.file, txn.offset, s.absent, txn.before,
                                        txn.marks))
            self.pending_rows += s.n

    def _recollected(self) -> None:
        """Past the checkpoint's position: every prepared group it lists is held again; go on as usual."""
        recollect, resume = self.recollect, self.resume
        assert recollect is not None and resume is not None
        self.recollect = None
        lost = [x for x in recollect.marks if x not in self.prepared.held]
        if lost:
            m = recollect.marks[lost[0]]
            raise DbusError(f"binlog {m.file}:{m.offset}: the prepared XA transaction {lost[0]} of the checkpoint is "
                            f"not there on {self.where} (the binlog changed): set a position with `dbus checkpoint "
                            "set` or snapshot")
        self.last_gtid = resume.gtid
        if self.gtid_state is not None and resume.gtid_pos is not None:
            self.gtid_state = self._parse_state(resume.gtid_pos)
            self._state_text = None
        if not resume.skip:
            self.resume = None
