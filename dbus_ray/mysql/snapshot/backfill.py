"""The backfill of the `mysql` source (`dbus snapshot`, and tables newly selected on a restart): an
on-demand snapshot of chosen tables interleaved with the running stream (`Backfill`), whose `KeyFences`
drop the stream's changes a read chunk already holds; `backfill_tables` checks a request.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any

import pymysql

from dbus_ray.errors import DbusError
from dbus_ray.model import TableRows
from dbus_ray.mysql import connection as pf
from dbus_ray.mysql.offset import position_key
from dbus_ray.mysql.snapshot.catalog import SnapTable, describe, list_tables
from dbus_ray.mysql.snapshot.parallel import keep_halves
from dbus_ray.mysql.snapshot.serial import Snapshot
from dbus_ray.mysql.snapshot.text_rows import TextRows, fetch

log = logging.getLogger("dbus.mysql")

#: The longest a backfill chunk waits for the server's consistent snapshot to reach what the stream has read.
SNAPSHOT_BEHIND_STREAM_S = 10.0

class KeyFences:
    """Fences of a backfill: the keys a chunk emitted (as the binlog decoder gives them) and the position
    it was read at; the stream drops a change of such a key written before that position (the read row
    holds it). Entries go once the stream passed them."""

    def __init__(self) -> None:
        self.raw = None  # not checkpointed: a backfill ends with its pipeline
        self.entries: dict[str, list[tuple[list[str], set[tuple[Any, ...]], tuple[int, int]]]] = {}

    def add(self, table: str, cols: list[str], keys: set[tuple[Any, ...]], at: tuple[str, int]) -> None:
        if keys:
            self.entries.setdefault(table, []).append((cols, keys, position_key(*at)))

    def passed(self, file: str, offset: int) -> bool:
        if not file:
            return not self.entries
        now = position_key(file, offset)
        for table in list(self.entries):
            self.entries[table] = [e for e in self.entries[table] if e[2] > now]
            if not self.entries[table]:
                del self.entries[table]
        return not self.entries

    def keep(self, part: TableRows) -> TableRows | None:
        """`part` without the halves of its changes an emitted read holds: the removal of a before key, the
        row of an after key, each dropped when a chunk read after the change emitted that key (an update
        with one half held goes out as its other half, a `delete` or an `insert`, as after a parallel
        snapshot: `dbus_ray.mysql.snapshot.parallel`)."""
        entries = self.entries.get(f"{part.db}.{part.table}")
        if not entries:
            return part
        data = part.data
        ops = data.column("op").to_pylist()
        ats = [position_key(f, o) for f, o in zip(data.column("file").to_pylist(), data.column("offset").to_pylist())]
        held = {"before": [False] * len(ops), "after": [False] * len(ops)}
        for cols, keys, at in entries:
            images = {}
            for side in ("before", "after"):
                image = data.column(side)
                names = {image.type.field(i).name for i in range(image.type.num_fields)}
                if all(c in names for c in cols):
                    images[side] = list(zip(*(image.field(c).to_pylist() for c in cols)))
            for i, op in enumerate(ops):
                if op not in ("insert", "update", "delete") or ats[i] >= at:
                    continue
                for side in ("before", "after"):
                    key = images[side][i] if side in images else None
                    if side == "after" and op == "update" and (key is None or None in key) and "before" in images:
                        key = images["before"][i]  # a MINIMAL after image without the (unchanged) key
                    if key is not None and key in keys:
                        held[side][i] = True
        return keep_halves(part, ops, held["before"], held["after"])


class Backfill(Snapshot):
    """An on-demand snapshot of chosen tables while the pipeline streams (`dbus snapshot`). The source
    interleaves it with the stream: after each poll of the stream, one chunk, read in a consistent
    snapshot opened then (at or after where the stream is), emitted as `op: read` rows between the
    table's start and end markers; the stream then drops the changes of the emitted keys written
    before that chunk's position (KeyFences), so each key's read is followed by exactly the changes
    after it. Requests (tables, where) come from `requests`, a deque other threads append to."""

    done = True  # (the stream runs)

    def __init__(self, ep: pf.Endpoint, pipeline: str, requests: deque, chunk_rows: int = 10_000,
                 max_rows_per_second: int | None = None) -> None:
        super().__init__(ep, pipeline, lambda db, t: True, chunk_rows, max_rows_per_second, {})
        self.done = True
        self.requests = requests
        self.fences = KeyFences()
        self.where: str | None = None
        self.last: tuple[Any, ...] | None = None
        self.t0 = time.monotonic()
        self.ts = time.time()

    @property
    def finished(self) -> bool:
        return not self.queue and not self.requests

    def read(self, max_rows: int, streamed: tuple[str, int] = ("", 0)) -> list[TableRows]:
        """The next table's start marker, or one chunk (and the end marker after the table's last). `streamed`:
        the position the stream has read the binlog to; the chunk's snapshot is taken at or after it."""
        if not self.queue:
            if not self.requests:
                return []
            tables, self.where = self.requests.popleft()
            self.queue = list(tables)
            self.tables += tables
            self.state.update(table=None, rows=0)
        t = self.queue[0]
        if self.state["table"] is None:
            self.state.update(table=t.name, rows=0)
            self.last = None
            log.info("[%s] backfill of %s%s", self.pipeline, t.name, f" where {self.where}" if self.where else "")
            return [self._marker(t, "start", None)]
        self.state["ts"] = time.time()  # (the pipeline's lag is the stream's)
        n = max(1, min(self.chunk_rows, max_rows))
        if self.rate:
            n = min(n, self._budget())
            if n <= 0:
                time.sleep(min(0.05, 1.0 / self.rate))
                return []
        if self.conn is None:
            self.conn = pf.connect(self.ep, read_timeout=3600, write_timeout=3600)
            with self.conn.cursor() as cur:
                cur.execute("SET SESSION time_zone = '+00:00'")
                cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        sql, args = t.chunk_sql(self.last, n, self.where)
        rows, at = self._read_chunk(t, sql, args, streamed)
        self.chunks += 1
        parts: list[TableRows] = []
        if rows:
            image = rows.image(t)
            self.last = t.page_key(rows.row(len(rows) - 1))
            keys = set(zip(*(image.field(c).to_pylist() for c in t.page)))
            self.fences.add(t.name, list(t.page), keys, at)
            parts.append(self._run(t, "read", t.key, t.no_image(len(rows)), image, len(rows), self.state["rows"], at))
            self.state["rows"] += len(rows)
            self.rows_read += len(rows)
        if len(rows) < n:
            parts.append(self._marker(t, "end", self.state["rows"]))
            self.state["tables_done"] = [*self.state["tables_done"], t.name]
            self.state.update(table=None, rows=0)
            self.queue.pop(0)
            if self.finished:
                self.t_done = time.monotonic()
                self.close()
        return parts

    def _read_chunk(self, t: SnapTable, sql: str, args: list[Any],
                    streamed: tuple[str, int]) -> tuple[TextRows, tuple[str, int]]:
        """The chunk's rows in a consistent snapshot and its binlog position, taken at or after `streamed`. A
        transaction is written to the binlog before the engine commits it: the stream may have handed out a
        change the snapshot does not see yet, and a read emitted after that change would set its row back
        (the fences drop only changes before the read). Such a snapshot is let go and taken again."""
        assert self.conn is not None
        deadline = time.monotonic() + SNAPSHOT_BEHIND_STREAM_S
        while True:
            with self.conn.cursor() as cur:
                cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT")
                cur.execute("SHOW STATUS LIKE 'binlog_snapshot_%'")
                status = {str(k).lower(): v for k, v in cur.fetchall()}
                at = (str(status["binlog_snapshot_file"]), int(status["binlog_snapshot_position"]))
                behind = bool(streamed[0]) and position_key(*at) < position_key(*streamed)
                if not behind:
                    rows = fetch(self.conn, sql, args)
                cur.execute("COMMIT")
            if not behind:
                return rows, at
            if time.monotonic() > deadline:
                raise DbusError(
                    f"backfill of {t.name}: the server's consistent snapshot stays at {at[0]}:{at[1]}, behind the "
                    f"binlog the stream has read ({streamed[0]}:{streamed[1]}), for {SNAPSHOT_BEHIND_STREAM_S:.0f} s"
                )
            time.sleep(0.005)

    def progress(self) -> dict[str, Any]:
        out = super().progress()
        rate = out["rows_per_second"]
        left = max(0, out["rows_estimate"] - self.rows_read)
        out.update(state="done" if self.finished else "running", kind="backfill", where=self.where,
                   eta_seconds=0.0 if self.finished else round(left / rate, 1) if rate else None)
        return out


def backfill_tables(ep: pf.Endpoint, matcher: Any, names: list[str], where: str | None) -> list[SnapTable]:
    """The tables a backfill request names (`db.table`, selected by the pipeline), each checked: it
    exists, has a key, and `where` is valid SQL on it; DbusError (one line) otherwise."""
    if not names:
        raise DbusError("backfill: name at least one table (db.table)")
    conn = pf.connect(ep)
    try:
        found = {f"{db}.{t}": (db, t, e, n) for db, t, e, n in list_tables(conn, lambda db, t: True)}
        tables = []
        for name in names:
            if name not in found:
                raise DbusError(f"backfill: no table {name} (expected db.table of an existing table)")
            db, t, e, n = found[name]
            if not matcher(db, t):
                raise DbusError(f"backfill: table {name} is not selected by the pipeline (source.include/exclude)")
            table = describe(conn, db, t, e, n)
            if where is not None:
                sql, args = table.chunk_sql(None, 0, where)
                try:
                    with conn.cursor() as cur:
                        cur.execute(sql, args)
                except pymysql.err.MySQLError as exc:
                    raise DbusError(f"backfill of {name}: bad --where {where!r}: {exc.args[-1]}") from None
            tables.append(table)
        return tables
    finally:
        conn.close()
