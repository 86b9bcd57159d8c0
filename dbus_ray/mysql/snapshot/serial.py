"""The serial snapshot of the `mysql` source (`Snapshot`): the selected tables' current rows, read
lock-free inside one consistent-snapshot transaction, in key order and bounded chunks (see
`dbus_ray.mysql.snapshot.catalog`), as `op: read` rows between a start and an end marker row per table;
plus the binlog position that matches the snapshot exactly, from which the stream continues.

State (the `snapshot` checkpoint of the source, JSON):
`{"file", "offset", "gtid", "ts", "tables_done": [...], "table": "db.t" | None, "last_pk": [...] | None,
"rows": n}`: `file`/`offset` is the binlog position of the FIRST snapshot attempt (where the stream
starts once every table is read), `table`/`last_pk` the table being read and the key of its last row
delivered (its start marker was delivered once `table` is set), `rows` the rows of that table
delivered so far. A resumed snapshot (new process, the transaction is gone) opens a NEW consistent
snapshot and continues after `last_pk` and with the tables not done; the stream still starts at the
first position (see the README, "Snapshots", for the resulting guarantee). The parallel snapshot's state
adds `fences` and `floor` (`dbus_ray.mysql.snapshot.parallel`).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pyarrow as pa
import pymysql

from dbus_ray.errors import DbusError
from dbus_ray.model import META_SCHEMA, TableRows
from dbus_ray.mysql import connection as pf
from dbus_ray.mysql.snapshot.catalog import SnapTable, describe, list_tables, open_consistent, pk_from_json, pk_to_json
from dbus_ray.mysql.snapshot.schema_ddl import snapshot_ddl
from dbus_ray.mysql.snapshot.text_rows import TextRows, fetch

log = logging.getLogger("dbus.mysql")

#: Reconnects (each under a new consistent snapshot) when the snapshot connection drops mid-read.
RECONNECT_ATTEMPTS = 3
#: Image of a marker row (`op: ddl`): {"snapshot": "start" | "end", "table": "db.t", "rows": n at end,
#: "ddl": the statements describing the table's schema on a start marker (`schema_ddl`), else null}.
MARKER_TYPE = pa.struct([pa.field("snapshot", pa.string()), pa.field("table", pa.string()),
                         pa.field("rows", pa.int64()), pa.field("ddl", pa.string())])

class Snapshot:
    """Reads the selected tables' rows for the `mysql` source (see the module docstring)."""

    def __init__(
        self,
        ep: pf.Endpoint,
        pipeline: str,
        matcher: Any,
        chunk_rows: int = 10_000,
        max_rows_per_second: int | None = None,
        state: dict[str, Any] | None = None,
    ) -> None:
        self.ep = ep
        self.pipeline = pipeline
        self.matcher = matcher
        self.chunk_rows = chunk_rows
        self.rate = max_rows_per_second
        self.resumed = state is not None
        self.state: dict[str, Any] = dict(state) if state else {}
        self.state.setdefault("tables_done", [])
        self.state.setdefault("table", None)
        self.state.setdefault("last_pk", None)
        self.state.setdefault("rows", 0)
        self.conn: pymysql.connections.Connection | None = None
        self.tables: list[SnapTable] = []
        self.schema_ddl: dict[str, str] = {}  # table -> its start marker's `ddl` (see `schema_ddl`)
        self.queue: list[SnapTable] = []
        self.buf = TextRows([], [])  # the fetched chunk, and its image
        self.buf_image: pa.StructArray | None = None
        self.buf_at = 0
        self.exhausted = False  # the current table's last chunk was short: no rows after the buffer
        self.done = False
        self.rows_read = 0  # rows (not markers) read by this instance
        self.chunks = 0  # chunk queries run by this instance
        self.t0 = 0.0
        self.t_done = 0.0
        # this attempt's consistent snapshot (read rows carry it); state["file"/"offset"] is the first one
        self.file = ""
        self.offset = 0
        self.ts = 0.0

    # ------------------------------------------------------------------ begin / close
    def begin(self) -> None:
        """Check every table, then open the consistent snapshot and note its binlog position."""
        conn = pf.connect(self.ep)
        try:
            found = list_tables(conn, self.matcher)
            self.tables = [describe(conn, *t) for t in found]
            self.schema_ddl = snapshot_ddl(conn, [(t.db, t.table) for t in self.tables])
        finally:
            conn.close()
        others = sorted({t.engine for t in self.tables} - {"InnoDB", ""})
        if others:
            log.warning("[%s] snapshot: tables with engine %s are not transactional: their rows are read as they are "
                        "at read time, not at the snapshot", self.pipeline, ", ".join(others))
        done = set(self.state["tables_done"])
        self.queue = [t for t in self.tables if t.name not in done]
        current = self.state["table"]
        if current is not None and not any(t.name == current for t in self.queue):  # dropped meanwhile
            self.state["table"], self.state["last_pk"], self.state["rows"] = None, None, 0
        elif current is not None:  # continue with it first
            self.queue.sort(key=lambda t: t.name != current)
        self._open_transaction()
        if "file" not in self.state:
            self.state.update(file=self.file, offset=self.offset, gtid=self._gtid_at(self.file, self.offset),
                              ts=self.ts)
        self.t0 = time.monotonic()
        log.info(
            "[%s] snapshot %s of %d tables (%d done before) at %s:%s, streaming from %s:%s afterwards",
            self.pipeline, "resumed" if self.resumed else "started", len(self.tables), len(done),
            self.file, self.offset, self.state["file"], self.state["offset"],
        )

    def _open_transaction(self) -> None:
        self.conn, self.file, self.offset = open_consistent(self.ep)
        self.ts = time.time()

    def _gtid_at(self, file: str, offset: int) -> str | None:
        assert self.conn is not None
        try:
            with self.conn.cursor() as cur:
                cur.execute("SELECT BINLOG_GTID_POS(%s, %s)", (file, offset))
                row = cur.fetchone()
            return str(row[0]) if row and row[0] else None
        except pymysql.err.MySQLError:
            return None

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()  # ends (rolls back) the snapshot transaction
            except Exception:  # noqa: BLE001 - already broken
                pass
            self.conn = None

    def checkpoint_state(self) -> dict[str, Any]:
        """The state to resume from after the rows read so far."""
        return dict(self.state)

    # ------------------------------------------------------------------ reading
    def _start_table(self, parts: list[TableRows]) -> SnapTable | None:
        """The next queued table, its start marker appended to `parts`; None (and done) when none is left."""
        if not self.queue:
            self.done = True
            self.t_done = time.monotonic()
            return None
        t = self.queue[0]
        self.state.update(table=t.name, last_pk=None, rows=0)
        parts.append(self._marker(t, "start", None))
        return t

    def _end_table(self, t: SnapTable, parts: list[TableRows]) -> None:
        """`t` is read: its end marker appended to `parts`; the last end marker ends the snapshot (its batch
        carries the position)."""
        parts.append(self._marker(t, "end", self.state["rows"]))
        self.state["tables_done"] = [*self.state["tables_done"], t.name]
        self.state.update(table=None, last_pk=None, rows=0)
        self.queue.pop(0)
        if not self.queue:
            self.done = True
            self.t_done = time.monotonic()

    def read(self, max_rows: int) -> list[TableRows]:
        """The next runs of at most `max_rows` rows (markers included); `self.state` is then the state after
        them, `self.done` True once every table is read (the last end marker is in these runs)."""
        parts: list[TableRows] = []
        got = 0
        rows: list[pa.StructArray] = []
        while got < max_rows and not self.done:
            if self.buf_at >= len(self.buf):
                if self.state["table"] is None:
                    self._flush(parts, rows)
                    if self._start_table(parts) is None:
                        break
                    self.buf, self.buf_image, self.buf_at, self.exhausted = TextRows([], []), None, 0, False
                    got += 1
                    continue
                t = self.queue[0]
                if not self.exhausted:
                    self._fetch(t)
                if self.buf_at >= len(self.buf):  # the table is read
                    self._flush(parts, rows)
                    self._end_table(t, parts)
                    got += 1
                    continue
            k = min(max_rows - got, len(self.buf) - self.buf_at)
            if self.rate:
                k = min(k, self._budget())
                if k <= 0:
                    if not got:
                        time.sleep(min(0.05, 1.0 / self.rate))
                    break
            assert self.buf_image is not None
            rows.append(self.buf_image.slice(self.buf_at, k))
            self.buf_at += k
            last = self.buf.row(self.buf_at - 1)
            got += k
            self.rows_read += k
            self.state["rows"] += k
            self.state["last_pk"] = pk_to_json(self.queue[0].page_key(last))
        self._flush(parts, rows)
        return parts

    def _budget(self) -> int:
        assert self.rate
        burst = min(self.rate, self.chunk_rows) // 10 + 1
        return int((time.monotonic() - self.t0) * self.rate) + burst - self.rows_read

    def _fetch(self, t: SnapTable) -> None:
        last = None if self.state["last_pk"] is None else pk_from_json(self.state["last_pk"])
        n = self.chunk_rows if not self.rate else max(1, min(self.chunk_rows, self.rate))
        sql, args = t.chunk_sql(last, n)
        for attempt in range(RECONNECT_ATTEMPTS + 1):
            try:
                assert self.conn is not None
                self.buf = fetch(self.conn, sql, args)
                self.buf_image = self.buf.image(t)
                self.chunks += 1
                break
            except pymysql.err.OperationalError as exc:
                code = exc.args[0] if exc.args else None
                if code not in (2006, 2013, 2003) or attempt == RECONNECT_ATTEMPTS:
                    raise DbusError(f"snapshot of {t.name} failed on {self.ep.where}: {exc.args[-1]}") from None
                log.warning("[%s] snapshot connection to %s lost (%s); reading on under a new consistent snapshot "
                            "(rows changed meanwhile may repeat)", self.pipeline, self.ep.where, exc.args[-1])
                self.close()
                time.sleep(0.5 * 2**attempt)
                self._open_transaction()
        self.buf_at = 0
        self.exhausted = len(self.buf) < n

    def _flush(self, parts: list[TableRows], rows: list[pa.StructArray]) -> None:
        """Rows taken from the current table -> one run."""
        if not rows:
            return
        t = self.queue[0]
        image = rows[0] if len(rows) == 1 else pa.concat_arrays(rows)
        n = len(image)
        first = self.state["rows"] - n
        parts.append(self._run(t, "read", t.key, t.no_image(n), image, n, first))
        rows.clear()

    def _marker(self, t: SnapTable, what: str, rows: int | None) -> TableRows:
        ddl = self.schema_ddl.get(t.name) if what == "start" else None
        after = pa.array([{"snapshot": what, "table": t.name, "rows": rows, "ddl": ddl}], MARKER_TYPE)
        before = pa.nulls(1, MARKER_TYPE)
        return self._run(t, "ddl", (), before, after, 1, 0)

    def _run(self, t: SnapTable, op: str, key: tuple[str, ...], before: pa.Array, after: pa.Array, n: int,
             first: int, at: tuple[str, int] | None = None) -> TableRows:
        file, offset = at or (self.file, self.offset)
        arrays = [
            pa.array([op] * n, pa.string()),
            pa.array([file] * n, pa.string()),
            pa.array([offset] * n, pa.int64()),
            pa.nulls(n, pa.string()),
            pa.array(range(first, first + n), pa.int32()),
            pa.array([f"snapshot:{file}:{offset}"] * n, pa.string()),
            pa.array([self.ts] * n, pa.float64()),
            pa.array([time.time()] * n, pa.float64()),
            before,
            after,
        ]
        schema = META_SCHEMA.append(pa.field("before", before.type)).append(pa.field("after", after.type))
        return TableRows(t.db, t.table, key, pa.RecordBatch.from_arrays(arrays, schema=schema))

    # ------------------------------------------------------------------ progress
    def progress(self) -> dict[str, Any]:
        end = self.t_done or time.monotonic()
        elapsed = max(end - self.t0, 1e-9) if self.t0 else 0.0
        rate = self.rows_read / elapsed if elapsed else 0.0
        estimate = sum(t.rows_estimate for t in self.tables)
        eta = 0.0 if self.done else round(max(0, estimate - self.rows_read) / rate, 1) if rate else None
        return {
            "state": "done" if self.done else "running",
            "tables_total": len(self.tables),
            "tables_done": len(self.state["tables_done"]),
            "table": self.state["table"],
            "table_rows": self.state["rows"],
            "chunks": self.chunks,
            "rows": self.rows_read,
            "rows_estimate": estimate,
            "rows_per_second": round(rate, 1),
            "eta_seconds": eta,
            "elapsed_seconds": round(elapsed, 3),
            "position": f"{self.file}:{self.offset}",
            "stream_from": f"{self.state.get('file')}:{self.state.get('offset')}",
        }
