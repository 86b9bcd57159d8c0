"""A window of a MySQL/MariaDB binlog, read with the `mysql` source's own stream (`dbus_ray.mysql.streaming`):
where it starts and ends (`Bound`: a position `file:offset`, a GTID or a time), and `WindowStream`, the
source's `BinlogStream` stopped at the window's end, which also notes each transaction's commit time. A window
over archived binlog files (`open_file_window`) reads them with `dbus_ray.mysql.files.FileReader`, as the
`binlog_files` source does: from the first file (or `since`) to the end of the last one; a GTID `since` starts
at the first file, a time at the newest file created at or before it.

Bounds:
- `file:offset` (the start of a transaction, as a row's `txid` or SHOW BINLOG EVENTS gives it): `since` is
  inclusive, `until` exclusive; the stream starts right there.
- a GTID (`0-1-55`, MySQL `uuid:55`): `since` from that transaction on, `until` up to and including it. On
  MariaDB the file holding it is found with `BINLOG_GTID_POS(file, 4)` (the GTID state at each file's start);
  on MySQL the window starts at the earliest file.
- a time (a `datetime`, naive = local time, or ISO 8601 text): rows whose event time is within it; the stream
  starts at the newest file created at or before `since` and stops at the first transaction that begins
  after `until`.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from dbus_ray.errors import DbusError
from dbus_ray.mysql import connection as cn
from dbus_ray.mysql import replica as rp
from dbus_ray.mysql.files import BinlogFiles, FileReader, end_of, file_header
from dbus_ray.mysql.history import state_at
from dbus_ray.mysql.offset import BinlogOffset, position_key
from dbus_ray.mysql.options import FILE_POS_RE, MYSQL_GTID_RE, parse_dsn
from dbus_ray.mysql.schema import TableSchema
from dbus_ray.mysql.streaming import BinlogStream

FORMAT_DESCRIPTION_EVENT = 15
#: commit times kept for transactions whose rows may still be handed out (bounded memory)
COMMITS_KEPT = 65_536
_MARIADB_GTID = re.compile(r"^(\d+)-(\d+)-(\d+)$")


@dataclass(frozen=True)
class Bound:
    """One end of a window: `kind` is `position` (file, offset), `gtid` or `time` (ts, epoch seconds)."""

    kind: str
    file: str = ""
    offset: int = 0
    gtid: str = ""
    ts: float = 0.0

    def __str__(self) -> str:
        if self.kind == "position":
            return f"{self.file}:{self.offset}"
        if self.kind == "gtid":
            return self.gtid
        return dt.datetime.fromtimestamp(self.ts, dt.UTC).isoformat()


def parse_bound(value: Any, what: str) -> Bound | None:
    """`None`, `file:offset`, a GTID, a datetime (or ISO 8601 text), or a row of a history table (dict or pandas
    Series: its transaction, by `txid`) -> a Bound; a one-line DbusError naming `what` otherwise."""
    if value is None or isinstance(value, Bound):
        return value
    if isinstance(value, dt.datetime):
        return Bound("time", ts=value.timestamp())
    if hasattr(value, "to_dict") and not isinstance(value, dict):  # a pandas Series: a row of a history table
        value = value.to_dict()
    if isinstance(value, dict) and value.get("txid"):  # a history row: from/to its transaction (its own offset
        return parse_bound(str(value["txid"]), what)  # is a ROWS event's, inside the transaction)
    if isinstance(value, dict) and "file" in value and "offset" in value:
        return Bound("position", file=str(value["file"]), offset=int(value["offset"]))
    if isinstance(value, str):
        text = value.strip()
        m = FILE_POS_RE.match(text)
        if m and not MYSQL_GTID_RE.match(text):
            return Bound("position", file=m.group(1), offset=int(m.group(2)))
        if _MARIADB_GTID.match(text) or re.match(r"^[0-9a-fA-F-]{36}:\d+$", text):
            return Bound("gtid", gtid=text)
        try:
            return Bound("time", ts=dt.datetime.fromisoformat(text).timestamp())
        except ValueError:
            pass
    raise DbusError(f"{what}: bad binlog bound {value!r}: expected FILE:OFFSET (binlog.000042:1234), a GTID "
                    "(0-1-55) or a datetime")


def endpoint(dsn: str) -> cn.Endpoint:
    d = parse_dsn(dsn)
    return cn.Endpoint(d.host, d.port, d.user, d.password)


@dataclass
class Window:
    """Where to start reading, where the server is now, and the binlog files in between (for progress)."""

    start: BinlogOffset
    now: tuple[str, int]
    logs: list[tuple[str, int]]
    info: cn.ServerInfo
    files: BinlogFiles | None = None  # read from these archived binlog files instead of the server
    catalog: cn.Endpoint | None = None  # with files: the server whose information_schema names columns, if any

    def total_bytes(self) -> int:
        files = [f for f, _ in self.logs if position_key(f, 0) >= position_key(self.start.file, 0)]
        sizes = dict(self.logs)
        return max(1, sum(sizes[f] for f in files) - self.start.offset)

    def done_bytes(self, file: str, offset: int) -> int:
        sizes = dict(self.logs)
        before = sum(sizes[f] for f, _ in self.logs
                     if position_key(self.start.file, 0) <= position_key(f, 0) < position_key(file, 0))
        return max(0, before + offset - self.start.offset)


def open_window(ep: cn.Endpoint, since: Bound | None) -> Window:
    """The server's state and where a window from `since` (None: the earliest binlog) starts."""
    conn = cn.connect(ep)
    try:
        info = cn.preflight(conn, ep)
        logs = cn.binary_logs(conn, ep)
        if not logs:
            raise DbusError(f"{ep.where} has no binlog files (SHOW BINARY LOGS is empty)")
        now = cn.master_status(conn, ep)
        start = BinlogOffset(logs[0][0], 4)
        if since is not None and since.kind == "position":
            sizes = dict(logs)
            if since.file not in sizes:
                raise DbusError(f"since {since}: binlog file {since.file} is not on {ep.where} (it has "
                                f"{logs[0][0]} .. {logs[-1][0]})")
            if info.mariadb and state_at(conn, since.file, since.offset) is None:
                raise DbusError(f"since {since}: not the start of an event on {ep.where}: give the position of a "
                                "transaction (a row's txid, or SHOW BINLOG EVENTS)")
            start = BinlogOffset(since.file, since.offset)
        elif since is not None and since.kind == "gtid" and info.mariadb:
            start = BinlogOffset(_file_of_gtid(conn, logs, since.gtid), 4)
        elif since is not None and since.kind == "time":
            start = BinlogOffset(_file_at_time(ep, info, logs, since.ts), 4)
    finally:
        conn.close()
    return Window(start, now, logs, info)


def open_file_window(pattern: str, catalog: cn.Endpoint | None, since: Bound | None) -> Window:
    """A window over archived binlog files (a directory or glob, as the `binlog_files` source reads them): from
    `since` (a position; a time: the newest file created at or before it; else the first file) to the end of the
    last file."""
    files = BinlogFiles(pattern)
    listing = files.listing()
    names = list(listing)
    headers = {n: file_header(listing[n]) for n in names}
    first = headers[names[0]]
    variables = {"server_id": str(first.server_id)} if first.mariadb else {}
    info = cn.ServerInfo(first.server_version, first.mariadb, "", 0, None, variables)
    start = BinlogOffset(names[0], 4)
    if since is not None and since.kind == "position":
        if since.file not in listing:
            raise DbusError(f"since {since}: binlog file {since.file} is not among the files {pattern} ({names[0]} .. "
                            f"{names[-1]})")
        start = BinlogOffset(since.file, since.offset)
    elif since is not None and since.kind == "time":
        older = [n for n in names if headers[n].created <= since.ts]
        start = BinlogOffset(older[-1] if older else names[0], 4)
    logs = [(n, os.path.getsize(listing[n])) for n in names]
    return Window(start, (names[-1], end_of(listing[names[-1]])), logs, info, files, catalog)


def _file_of_gtid(conn: Any, logs: list[tuple[str, int]], gtid: str) -> str:
    """The newest binlog file whose GTID state at its start is before `gtid` (MariaDB): the GTID is in it or later."""
    domain, _server, seq = (int(x) for x in gtid.split("-"))
    for file, _ in reversed(logs):
        state = state_at(conn, file, 4) or ""
        before = [int(g.rsplit("-", 1)[1]) for g in state.split(",") if g and int(g.split("-", 1)[0]) == domain]
        if not before or before[0] < seq:
            return file
    return logs[0][0]


def _file_at_time(ep: cn.Endpoint, info: cn.ServerInfo, logs: list[tuple[str, int]], ts: float) -> str:
    """The newest binlog file created at or before `ts` (its FORMAT_DESCRIPTION event's time); the oldest file
    when all are younger."""
    for file, _ in reversed(logs):
        created = file_created(ep, info, file)
        if created is not None and created <= ts:
            return file
    return logs[0][0]


def file_created(ep: cn.Endpoint, info: cn.ServerInfo, file: str) -> float | None:
    """When a binlog file was started: the time of its FORMAT_DESCRIPTION event, read from the file itself."""
    replica = rp.Replica(ep.settings(), random_server_id(), "dbus history", 1.0, file, 4, mariadb=info.mariadb)
    try:
        for _ in range(4):
            ev = replica.fetch()
            if ev is None:
                return None
            if ev.type == FORMAT_DESCRIPTION_EVENT:
                return float(ev.timestamp)
        return None
    finally:
        replica.close()


def random_server_id() -> int:
    """A replica server_id for a one-off read of the binlog, in the `server_id: auto` range."""
    return cn.AUTO_ID_BASE + random.randrange(cn.AUTO_ID_SPAN)


class WindowStream(BinlogStream):
    """The source's stream, ending at the window's end: `finished` once the position reaches `until` (between
    transactions), the `until` GTID's transaction ended, a transaction began after `until`'s time, or (with
    `one_transaction`) the first transaction ended. Notes each transaction's commit time (its XID/COMMIT
    event's time) in `commits` (the newest COMMITS_KEPT) and where the `since` GTID's transaction starts."""

    def __init__(self, ep: cn.Endpoint, win: Window, matcher: Any, since: Bound | None, until: Bound | None,
                 one_transaction: bool = False) -> None:
        now = position_key(*win.now)
        if win.files is None:
            schema = TableSchema(ep, matcher, False, None, history_on=not win.info.has_row_metadata)
            super().__init__("history", ep, win.info, random_server_id(), "dbus history", schema, win.start, now)
        else:  # archived binlog files, read as the binlog_files source reads them
            from dbus_ray.mysql.file_schema import FileSchema
            from dbus_ray.sources.binlog_files import NEVER

            files, catalog = win.files, win.catalog
            schema = FileSchema(files, catalog, matcher, False, None)
            super().__init__("history", ep, win.info, 0, "", schema, win.start, NEVER,
                             reader=lambda at: FileReader(files, at.file, at.offset, False, "since"))
        self.since, self.until = since, until
        self.until_key = position_key(until.file, until.offset) if until is not None and until.kind == "position" \
            else now
        self.one_transaction = one_transaction
        self.finished = False
        self.commits: OrderedDict[str, float] = OrderedDict()
        self.since_at: tuple[int, int] | None = None  # the since GTID's transaction start, once seen

    def _fetch(self) -> rp.RawEvent | None:
        if self.finished:
            return None
        if self.txn is None and position_key(self.file, self.next_pos) >= self.until_key:
            self.finished = True
            return None
        return super()._fetch()

    def _begin(self, offset: int, gtid: str | None, began: bool) -> Any:
        until = self.until
        if until is not None and until.kind == "time" and self.last_ts > until.ts:
            self.finished = True
        since = self.since
        if since is not None and since.kind == "gtid" and gtid == since.gtid:
            self.since_at = position_key(self.file, offset)
        return super()._begin(offset, gtid, began)

    def _end(self) -> None:
        txn = self.txn
        if txn is not None:
            self.commits[txn.txid] = self.last_ts
            if len(self.commits) > COMMITS_KEPT:
                self.commits.popitem(last=False)
            if self.one_transaction or (self.until is not None and self.until.kind == "gtid"
                                        and txn.gtid == self.until.gtid):
                self.finished = True
        super()._end()

    def done(self) -> bool:
        """Nothing more to read in the window (or the server has nothing more)."""
        return (self.finished or self.idle) and not self.pending
