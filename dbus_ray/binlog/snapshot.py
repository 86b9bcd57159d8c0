"""Initial snapshot of the `mysql` source: the selected tables' current rows, read lock-free inside one
consistent-snapshot transaction, in key order and bounded chunks, as `op: read` rows; plus the binlog
position that matches the snapshot exactly, from which the stream continues.

How (MariaDB): one connection runs `START TRANSACTION WITH CONSISTENT SNAPSHOT` (REPEATABLE READ) and
then `SHOW STATUS LIKE 'binlog_snapshot_%'`: the binlog file/position of exactly the transactions the
snapshot sees (no FLUSH TABLES WITH READ LOCK). Each table is read in key order with keyset pagination
(`WHERE key > last ORDER BY key LIMIT chunk_rows`) inside that transaction, so a chunk costs an index
range scan and memory stays at one chunk. The key is the primary key, else a unique index whose
columns are all NOT NULL; a table with neither is refused (one line naming it) before anything is read.

Values equal what the binlog decoder (`dbus_ray.binlog.types`) gives for the same row, with the same
Arrow types: the column definitions come from information_schema and go through the same
`column_reader` type mapping; SELECT values are brought into the decoder's form (DATE/DATETIME as ISO
text, TIMESTAMP as ISO text in UTC, zero dates as the server shows them, FLOAT read through
`CAST(... AS DOUBLE)` so the float32 is exact).

State (the `snapshot` checkpoint of the source, JSON):
`{"file", "offset", "gtid", "ts", "tables_done": [...], "table": "db.t" | None, "last_pk": [...] | None,
"rows": n}`: `file`/`offset` is the binlog position of the FIRST snapshot attempt (where the stream
starts once every table is read), `table`/`last_pk` the table being read and the key of its last row
delivered (its start marker was delivered once `table` is set), `rows` the rows of that table
delivered so far. A resumed snapshot (new process, the transaction is gone) opens a NEW consistent
snapshot and continues after `last_pk` and with the tables not done; the stream still starts at the
first position (see the README, "Snapshots", for the resulting guarantee).

`ParallelSnapshot` (`snapshot_parallelism` >= 2) reads key-range chunks with worker actors, each in its
own consistent snapshot, and `Fences` make the stream that follows drop the changes a chunk already
holds; `Backfill` is the on-demand snapshot of chosen tables interleaved with the stream (`KeyFences`).
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import logging
import time
from bisect import bisect_left
from collections import deque
from dataclasses import dataclass, replace
from typing import Any

import pyarrow as pa
import pymysql

from dbus_ray.binlog import preflight as pf
from dbus_ray.binlog import types as bt
from dbus_ray.binlog.column_meta import column_field
from dbus_ray.errors import DbusError
from dbus_ray.model import META_SCHEMA, TableRows

log = logging.getLogger("dbus.mysql")

#: Schemas never snapshotted (their tables are not user data, several have no key).
SYSTEM_SCHEMAS = ("mysql", "information_schema", "performance_schema", "sys")
#: Reconnects (each under a new consistent snapshot) when the snapshot connection drops mid-read.
RECONNECT_ATTEMPTS = 3

_INT_TYPES = {"tinyint": bt.TINY, "smallint": bt.SHORT, "mediumint": bt.INT24, "int": bt.LONG,
              "integer": bt.LONG, "bigint": bt.LONGLONG}
_TEXT_TYPES = {"tinytext", "text", "mediumtext", "longtext"}
_BLOB_TYPES = {"tinyblob", "blob", "mediumblob", "longblob"}
_GEOMETRY_TYPES = {"geometry", "point", "linestring", "polygon", "multipoint", "multilinestring",
                   "multipolygon", "geometrycollection"}

#: Image of a marker row (`op: ddl`): {"snapshot": "start" | "end", "table": "db.t", "rows": n at end}.
MARKER_TYPE = pa.struct([pa.field("snapshot", pa.string()), pa.field("table", pa.string()),
                         pa.field("rows", pa.int64())])


def quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _enum_members(column_type: str) -> tuple[str, ...]:
    """`enum('a','b''c')` -> ('a', "b'c")."""
    body = column_type[column_type.index("(") + 1 : column_type.rindex(")")]
    out, i = [], 0
    while i < len(body):
        if body[i] != "'":
            i += 1
            continue
        j, text = i + 1, []
        while j < len(body):
            if body[j] == "'" and j + 1 < len(body) and body[j + 1] == "'":
                text.append("'")
                j += 2
            elif body[j] == "'":
                break
            else:
                text.append(body[j])
                j += 1
        out.append("".join(text))
        i = j + 1
    return tuple(out)


def column_def(row: dict[str, Any], where: str) -> bt.ColumnDef:
    """A ColumnDef (as a TABLE_MAP event would describe the column) from an information_schema.COLUMNS row."""
    name, data_type = row["COLUMN_NAME"], str(row["DATA_TYPE"]).lower()
    column_type = str(row["COLUMN_TYPE"]).lower()
    unsigned = "unsigned" in column_type
    charset = bt.codec_of(row["CHARACTER_SET_NAME"], row["COLLATION_NAME"])
    fsp = int(row["DATETIME_PRECISION"] or 0)
    if data_type in _INT_TYPES:
        return bt.ColumnDef(name, _INT_TYPES[data_type], unsigned=unsigned)
    if data_type in ("decimal", "numeric"):
        return bt.ColumnDef(name, bt.NEWDECIMAL, precision=int(row["NUMERIC_PRECISION"]),
                            scale=int(row["NUMERIC_SCALE"] or 0))
    if data_type == "float":
        return bt.ColumnDef(name, bt.FLOAT)
    if data_type in ("double", "real"):
        return bt.ColumnDef(name, bt.DOUBLE)
    if data_type == "bit":
        return bt.ColumnDef(name, bt.BIT, bits=int(row["NUMERIC_PRECISION"] or 1))
    if data_type == "date":
        return bt.ColumnDef(name, bt.DATE)
    if data_type == "datetime":
        return bt.ColumnDef(name, bt.DATETIME2, fsp=fsp)
    if data_type == "timestamp":
        return bt.ColumnDef(name, bt.TIMESTAMP2, fsp=fsp)
    if data_type == "time":
        return bt.ColumnDef(name, bt.TIME2, fsp=fsp)
    if data_type == "year":
        return bt.ColumnDef(name, bt.YEAR)
    length = int(row["CHARACTER_OCTET_LENGTH"] or 0)
    if data_type in ("char", "binary"):
        return bt.ColumnDef(name, bt.STRING, charset="binary" if data_type == "binary" else charset,
                            max_length=length)
    if data_type in ("varchar", "varbinary"):
        return bt.ColumnDef(name, bt.VARCHAR, charset="binary" if data_type == "varbinary" else charset,
                            max_length=length)
    if data_type in _TEXT_TYPES:
        return bt.ColumnDef(name, bt.BLOB, charset=charset or "utf-8")
    if data_type in _BLOB_TYPES:
        return bt.ColumnDef(name, bt.BLOB, charset="binary")
    if data_type == "json":  # MySQL; MariaDB's JSON is LONGTEXT
        return bt.ColumnDef(name, bt.JSON)
    if data_type in ("enum", "set"):
        kind = bt.ENUM if data_type == "enum" else bt.SET
        return bt.ColumnDef(name, kind, members=_enum_members(str(row["COLUMN_TYPE"])))
    if data_type in _GEOMETRY_TYPES:
        return bt.ColumnDef(name, bt.GEOMETRY)
    raise DbusError(f"snapshot of {where}: column {name} has type {data_type}, which the snapshot cannot read")


# --------------------------------------------------------------------------------- values and keys


def _iso_date(v: Any) -> Any:
    return v.isoformat() if isinstance(v, (dt.date, dt.datetime)) else v


def _iso_utc(v: Any) -> Any:
    return v.replace(tzinfo=dt.UTC).isoformat() if isinstance(v, dt.datetime) else v


def _converter(col: bt.ColumnDef) -> Any:
    """SELECT value -> the binlog decoder's value (None: the same already)."""
    if col.type in (bt.DATE, bt.DATETIME2, bt.DATETIME):
        return _iso_date
    if col.type in (bt.TIMESTAMP2, bt.TIMESTAMP):
        return _iso_utc
    return None


def pk_to_json(values: tuple[Any, ...]) -> list[Any]:
    """Key values as JSON (checkpoint): numbers and strings as they are, the rest tagged."""
    out: list[Any] = []
    for v in values:
        if v is None or isinstance(v, (bool, int, float, str)):
            out.append(v)
        elif isinstance(v, decimal.Decimal):
            out.append({"decimal": str(v)})
        elif isinstance(v, (bytes, bytearray)):
            out.append({"b64": base64.b64encode(bytes(v)).decode("ascii")})
        elif isinstance(v, dt.datetime):
            out.append({"datetime": v.isoformat()})
        elif isinstance(v, dt.date):
            out.append({"date": v.isoformat()})
        elif isinstance(v, dt.timedelta):
            out.append({"time_us": v // dt.timedelta(microseconds=1)})
        else:
            out.append({"text": str(v)})
    return out


def pk_from_json(values: list[Any]) -> tuple[Any, ...]:
    out: list[Any] = []
    for v in values:
        if not isinstance(v, dict):
            out.append(v)
        elif "decimal" in v:
            out.append(decimal.Decimal(v["decimal"]))
        elif "b64" in v:
            out.append(base64.b64decode(v["b64"]))
        elif "datetime" in v:
            out.append(dt.datetime.fromisoformat(v["datetime"]))
        elif "date" in v:
            out.append(dt.date.fromisoformat(v["date"]))
        elif "time_us" in v:
            out.append(dt.timedelta(microseconds=v["time_us"]))
        else:
            out.append(v["text"])
    return tuple(out)


# ----------------------------------------------------------------------------------------- tables


@dataclass
class SnapTable:
    """One table to read: its columns (in table order), the Arrow image type the binlog decoder gives
    it, the stream's key (its primary key, else ()) and the columns it is paged by."""

    db: str
    table: str
    columns: list[bt.ColumnDef]
    key: tuple[str, ...]
    page: tuple[str, ...]
    engine: str
    rows_estimate: int

    def __post_init__(self) -> None:
        self.types = [bt.column_reader(c)[1] for c in self.columns]
        self.fields = [column_field(c, t) for c, t in zip(self.columns, self.types)]
        self.image_type = pa.struct(self.fields)
        self.converters = [_converter(c) for c in self.columns]
        names = [c.name for c in self.columns]
        self.page_at = [names.index(k) for k in self.page]
        exprs = [f"CAST({quote(c.name)} AS DOUBLE)" if c.type == bt.FLOAT else quote(c.name) for c in self.columns]
        self.select = f"SELECT {', '.join(exprs)} FROM {quote(self.db)}.{quote(self.table)}"
        self.order = " ORDER BY " + ", ".join(quote(k) for k in self.page)
        # keyset: (a > x) OR (a = x AND b > y) OR ...: a range scan on the key's index
        ors, args = [], []
        for i, k in enumerate(self.page):
            terms = [f"{quote(p)} = %s" for p in self.page[:i]] + [f"{quote(k)} > %s"]
            ors.append("(" + " AND ".join(terms) + ")")
            args.append(list(range(i + 1)))
        self.key_gt = " OR ".join(ors)  # key > (%s, ...)
        self.after_where = " WHERE " + self.key_gt
        self.splittable = all(c.type in _INT_TYPES.values() for c in self.columns if c.name in self.page)
        self.arg_order = [j for a in args for j in a]

    @property
    def name(self) -> str:
        return f"{self.db}.{self.table}"

    def chunk_sql(self, last: tuple[Any, ...] | None, n: int, where: str | None = None) -> tuple[str, list[Any]]:
        """The first `n` rows after key `last` (None: from the start), of those `where` (SQL) selects."""
        terms = [] if where is None else [f"({where})"]
        args = [] if last is None else [last[j] for j in self.arg_order]
        if last is not None:
            terms.append(f"({self.key_gt})")
        cond = " WHERE " + " AND ".join(terms) if terms else ""
        return f"{self.select}{cond}{self.order} LIMIT {int(n)}", args

    def range_sql(self, lo: tuple[Any, ...] | None, hi: tuple[Any, ...] | None) -> tuple[str, list[Any]]:
        """All rows with lo < key <= hi (None: no bound), in key order."""
        terms, args = [], []
        if lo is not None:
            terms.append(f"({self.key_gt})")
            args += [lo[j] for j in self.arg_order]
        if hi is not None:
            terms.append(f"NOT ({self.key_gt})")
            args += [hi[j] for j in self.arg_order]
        where = " WHERE " + " AND ".join(terms) if terms else ""
        return f"{self.select}{where}{self.order}", args

    def page_key(self, row: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(row[i] for i in self.page_at)

    def image(self, rows: list[tuple[Any, ...]]) -> pa.StructArray:
        cols = list(zip(*rows)) if rows else [() for _ in self.columns]
        children = []
        for values, convert, typ in zip(cols, self.converters, self.types):
            if convert is not None:
                values = [convert(v) for v in values]
            children.append(pa.array(values, typ))
        return pa.StructArray.from_arrays(children, fields=self.fields)

    def no_image(self, n: int) -> pa.StructArray:
        return pa.StructArray.from_arrays(
            [pa.nulls(n, t) for t in self.types], fields=self.fields, mask=pa.array([True] * n, pa.bool_())
        )


def list_tables(conn: pymysql.connections.Connection, matcher: Any) -> list[tuple[str, str, str, int]]:
    """(db, table, engine, estimated rows) of the base tables `matcher` selects, system schemas left out."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT TABLE_SCHEMA, TABLE_NAME, IFNULL(ENGINE, ''), IFNULL(TABLE_ROWS, 0) FROM information_schema.TABLES "
            "WHERE TABLE_TYPE = 'BASE TABLE' AND TABLE_SCHEMA NOT IN %s ORDER BY TABLE_SCHEMA, TABLE_NAME",
            (SYSTEM_SCHEMAS,),
        )
        rows = cur.fetchall()
    return [(str(db), str(t), str(e), int(n)) for db, t, e, n in rows if matcher(str(db), str(t))]


def describe(conn: pymysql.connections.Connection, db: str, table: str, engine: str, estimate: int) -> SnapTable:
    """The table's columns and keys; DbusError (one line naming the table) when it has no usable key."""
    where = f"{db}.{table}"
    with conn.cursor(pymysql.cursors.DictCursor) as cur:
        cur.execute(
            "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, CHARACTER_SET_NAME, COLLATION_NAME, NUMERIC_PRECISION, "
            "NUMERIC_SCALE, DATETIME_PRECISION, CHARACTER_OCTET_LENGTH, IS_NULLABLE FROM information_schema.COLUMNS "
            "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION",
            (db, table),
        )
        cols = cur.fetchall()
        cur.execute(
            "SELECT INDEX_NAME, COLUMN_NAME, NON_UNIQUE, SUB_PART FROM information_schema.STATISTICS "
            "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s ORDER BY INDEX_NAME, SEQ_IN_INDEX",
            (db, table),
        )
        stats = cur.fetchall()
    nullable = {c["COLUMN_NAME"]: c["IS_NULLABLE"] == "YES" for c in cols}
    indexes: dict[str, list[dict[str, Any]]] = {}
    for s in stats:
        indexes.setdefault(s["INDEX_NAME"], []).append(s)
    primary = tuple(s["COLUMN_NAME"] for s in indexes.get("PRIMARY", []))
    page = primary
    if not page:
        candidates = [
            (any(p["SUB_PART"] for p in parts), len(parts), name)
            for name, parts in indexes.items()
            if all(not int(p["NON_UNIQUE"]) and not nullable.get(p["COLUMN_NAME"], True) for p in parts)
        ]
        if candidates:
            page = tuple(p["COLUMN_NAME"] for p in indexes[min(candidates)[2]])
    if not page:
        raise DbusError(
            f"table {where} has no primary key or unique NOT NULL key, so the snapshot cannot read it in key "
            "order: add a primary key, or leave the table out (source.exclude)"
        )
    columns = [replace(column_def(c, where), nullable=c["IS_NULLABLE"] == "YES") for c in cols]
    return SnapTable(db, table, columns, primary, page, engine, estimate)


# ---------------------------------------------------------------------------------------- snapshot


def open_consistent(ep: pf.Endpoint) -> tuple[pymysql.connections.Connection, str, int]:
    """A connection inside `START TRANSACTION WITH CONSISTENT SNAPSHOT` and the binlog position (file,
    offset) of exactly the transactions it sees."""
    conn = pf.connect(ep, read_timeout=3600, write_timeout=3600)
    try:
        with conn.cursor() as cur:
            cur.execute("SET SESSION time_zone = '+00:00'")
            cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT")
            cur.execute("SHOW STATUS LIKE 'binlog_snapshot_%'")
            status = {str(k).lower(): v for k, v in cur.fetchall()}
    except BaseException:
        conn.close()
        raise
    if not status.get("binlog_snapshot_file"):
        conn.close()
        raise DbusError(
            f"{ep.where} does not report binlog_snapshot_file (a MariaDB status variable): the snapshot "
            "needs MariaDB with log_bin; use `snapshot: never` on MySQL"
        )
    return conn, str(status["binlog_snapshot_file"]), int(status["binlog_snapshot_position"])


def chunk_bounds(conn: pymysql.connections.Connection, t: SnapTable, after: tuple[Any, ...] | None,
                 n: int) -> list[tuple[Any, ...]]:
    """The upper keys of the chunks of about `n` rows after `after` (every n-th key, an index-only scan);
    the chunks are (after, b0], (b0, b1], ..., (b_last, end). None (one chunk) unless the key is integers."""
    if not t.splittable:
        return []
    keys = ", ".join(quote(k) for k in t.page)
    bounds: list[tuple[Any, ...]] = []
    last = after
    with conn.cursor() as cur:
        while True:
            where, args = ("", []) if last is None else (t.after_where, [last[j] for j in t.arg_order])
            cur.execute(f"SELECT {keys} FROM {quote(t.db)}.{quote(t.table)}{where}{t.order} LIMIT 1 "
                        f"OFFSET {int(n) - 1}", args)
            row = cur.fetchone()
            if row is None:
                return bounds
            last = tuple(row)
            bounds.append(last)


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
        self.queue: list[SnapTable] = []
        self.buf: list[tuple[Any, ...]] = []
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
        rows: list[tuple[Any, ...]] = []
        while got < max_rows and not self.done:
            if self.buf_at >= len(self.buf):
                if self.state["table"] is None:
                    self._flush(parts, rows)
                    if self._start_table(parts) is None:
                        break
                    self.buf, self.buf_at, self.exhausted = [], 0, False
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
            take = self.buf[self.buf_at : self.buf_at + k]
            self.buf_at += k
            rows += take
            got += k
            self.rows_read += k
            self.state["rows"] += k
            self.state["last_pk"] = pk_to_json(self.queue[0].page_key(take[-1]))
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
                with self.conn.cursor() as cur:
                    cur.execute(sql, args)
                    self.buf = list(cur.fetchall())
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

    def _flush(self, parts: list[TableRows], rows: list[tuple[Any, ...]]) -> None:
        """Rows taken from the current table -> one run."""
        if not rows:
            return
        t = self.queue[0]
        n = len(rows)
        first = self.state["rows"] - n
        parts.append(self._run(t, "read", t.key, t.no_image(n), t.image(rows), n, first))
        rows.clear()

    def _marker(self, t: SnapTable, what: str, rows: int | None) -> TableRows:
        after = pa.array([{"snapshot": what, "table": t.name, "rows": rows}], MARKER_TYPE)
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


# ------------------------------------------------------------------------------- parallel snapshot


class WorkerLost(Exception):
    """A snapshot worker died (its chunks are read again by its replacement)."""


def _at(file: str, offset: int) -> tuple[int, int]:
    return pf.binlog_index(file), offset


class Fences:
    """Which stream rows a parallel snapshot already holds. Chunk (lo, hi] of table T was read in a
    consistent snapshot at binlog position P, so its rows hold every change of a key in (lo, hi] written
    before P: the stream (which starts at the first snapshot's position, before every P) drops those
    and keeps the changes at P or after. Each key is then read once with its value at P and followed by
    exactly the changes after P. `raw` (JSON, in the checkpoint): {table: {"key": [page columns], "at":
    [[hi, file, offset], ...]}}, the ranges in key order, each from the previous hi, the last hi None."""

    def __init__(self, raw: dict[str, Any]) -> None:
        self.raw = raw
        self.tables: dict[str, tuple[list[str], list[tuple[Any, ...]], list[tuple[int, int]]]] = {}
        self.until = (0, 0)
        for name, f in raw.items():
            his = [tuple(pk_from_json(h)) for h, _, _ in f["at"] if h is not None]
            ats = [_at(file, offset) for _, file, offset in f["at"]]
            self.tables[name] = (list(f["key"]), his, ats)
            self.until = max([self.until, *ats])

    def passed(self, file: str, offset: int) -> bool:
        """The stream is at or after every chunk's position: no row to drop any more."""
        return bool(file) and _at(file, offset) >= self.until

    def keep(self, part: TableRows) -> TableRows | None:
        fence = self.tables.get(f"{part.db}.{part.table}")
        if fence is None:
            return part
        cols, his, ats = fence
        data = part.data
        ops = data.column("op").to_pylist()
        files = data.column("file").to_pylist()
        offsets = data.column("offset").to_pylist()
        keys: dict[str, list[tuple[Any, ...]]] = {}
        for side in ("before", "after"):
            image = data.column(side)
            names = {image.type.field(i).name for i in range(image.type.num_fields)}
            if all(c in names for c in cols):
                keys[side] = list(zip(*(image.field(c).to_pylist() for c in cols)))
        mask = []
        for i, op in enumerate(ops):
            side = "after" if op == "insert" else "before"  # an update is placed by the key it changes
            if op not in ("insert", "update", "delete") or side not in keys or None in keys[side][i]:
                mask.append(True)
                continue
            j = bisect_left(his, keys[side][i])
            mask.append(j >= len(ats) or _at(files[i], offsets[i]) >= ats[j])
        if all(mask):
            return part
        if not any(mask):
            return None
        return TableRows(part.db, part.table, part.key, data.filter(pa.array(mask, pa.bool_())))


class Fenced:
    """The stream after a parallel snapshot while its fences apply (stands in for the snapshot)."""

    done = True
    finished = True

    def __init__(self, fences: Fences, ts: float, progress: dict[str, Any] | None = None) -> None:
        self.fences = fences
        self.state = {"ts": ts}
        self.ts = ts
        self._progress = progress

    def progress(self) -> dict[str, Any] | None:
        return self._progress

    def close(self) -> None:
        pass


class ParallelSnapshot(Snapshot):
    """`snapshot_parallelism` >= 2: the tables are read in key-range chunks by a pool of worker actors
    (`pool`: `read(i, table, lo, hi)` -> a reference, `result(ref)` -> (image, file, offset) or WorkerLost,
    `replace(i)`, `close()`), each inside its own consistent snapshot; the stream that follows drops the
    changes the chunks already hold (see Fences). Chunks are emitted in key order, one table after the
    other, with the same markers as the serial snapshot. The state adds `fences`; `last_pk` is the key
    the emitted rows end at (a chunk's upper key once it is done), so a resumed snapshot re-splits the
    table after it. Tables whose key is not all integers are read as one chunk and checkpointed only
    at their end."""

    def __init__(self, ep: pf.Endpoint, pipeline: str, matcher: Any, pool: Any, parallelism: int,
                 chunk_rows: int = 10_000, max_rows_per_second: int | None = None,
                 state: dict[str, Any] | None = None) -> None:
        super().__init__(ep, pipeline, matcher, chunk_rows, max_rows_per_second, state)
        self.pool = pool
        self.parallelism = parallelism
        self.state.setdefault("fences", {})
        self.safe: dict[str, Any] = dict(self.state)  # the state as of the last row a resume can follow
        self.todo: deque[tuple[Any, Any]] = deque()  # chunks (lo, hi) of the current table not yet asked for
        self.asked: deque[list[Any]] = deque()  # [lo, hi, worker, ref] in key order
        self.cur: tuple[pa.StructArray, tuple[str, int], Any] | None = None  # image, position, hi
        self.taken = 0
        self.restarts = 0
        self.load = [0] * parallelism

    def begin(self) -> None:
        super().begin()  # the first consistent snapshot gives where the stream starts
        self.close_transaction()
        self.conn = pf.connect(self.ep)  # for chunk boundaries
        current = self.state["table"]
        if current is not None:
            t = self.queue[0]
            self._plan(t, None if self.state["last_pk"] is None else pk_from_json(self.state["last_pk"]))

    def close_transaction(self) -> None:
        super().close()

    def close(self) -> None:
        super().close()
        self.pool.close()

    def checkpoint_state(self) -> dict[str, Any]:
        return dict(self.safe)

    def fences(self) -> Fences:
        return Fences(self.state["fences"])

    def _plan(self, t: SnapTable, after: tuple[Any, ...] | None) -> None:
        assert self.conn is not None
        bounds: list[Any] = chunk_bounds(self.conn, t, after, self.chunk_rows)
        edges = [after, *bounds, None]
        self.todo = deque(zip(edges[:-1], edges[1:]))
        self.asked.clear()
        self.cur, self.taken = None, 0

    def _ask(self, t: SnapTable) -> None:
        """Keep two chunks per worker asked for."""
        while self.todo and len(self.asked) < 2 * self.parallelism:
            lo, hi = self.todo.popleft()
            i = self.load.index(min(self.load))
            self.load[i] += 1
            self.asked.append([lo, hi, i, self.pool.read(i, t, lo, hi)])

    def _next_chunk(self, t: SnapTable) -> bool:
        """The next chunk of `t` in key order into `self.cur`; False when the table is read."""
        self._ask(t)
        if not self.asked:
            return False
        for attempt in range(RECONNECT_ATTEMPTS + 1):
            lo, hi, i, ref = self.asked[0]
            try:
                image, file, offset = self.pool.result(ref)
                break
            except WorkerLost as exc:
                if attempt == RECONNECT_ATTEMPTS:
                    raise DbusError(f"snapshot of {t.name}: worker {i} lost {attempt + 1} times ({exc})") from None
                self.restarts += 1
                log.warning("[%s] snapshot worker %d lost (%s): reading its chunks again", self.pipeline, i, exc)
                self.pool.replace(i)
                for entry in self.asked:
                    if entry[2] == i:
                        entry[3] = self.pool.read(i, t, entry[0], entry[1])
        self.asked.popleft()
        self.load[i] -= 1
        self.chunks += 1
        self.cur, self.taken = (image, (file, offset), hi), 0
        self._ask(t)
        return True

    def _fence(self, t: SnapTable, hi: Any, at: tuple[str, int]) -> None:
        """The emitted rows of `t` now reach `hi` (JSON key, None: the end), read at `at`."""
        fences = dict(self.state["fences"])
        f = fences.get(t.name) or {"key": list(t.page), "at": []}
        entries = list(f["at"])
        if entries and (entries[-1][1], entries[-1][2]) == at:
            entries[-1] = [hi, *at]
        else:
            entries.append([hi, *at])
        fences[t.name] = {"key": f["key"], "at": entries}
        self.state["fences"] = fences

    def read(self, max_rows: int) -> list[TableRows]:
        parts: list[TableRows] = []
        got = 0
        while got < max_rows and not self.done:
            if self.state["table"] is None:
                t = self._start_table(parts)
                if t is None:
                    break
                self._plan(t, None)
                got += 1
                self.safe = dict(self.state)
                continue
            t = self.queue[0]
            if self.cur is None and not self._next_chunk(t):  # not reached: the last chunk ends the table
                raise DbusError(f"snapshot of {t.name}: no chunk left before the table's end")
            assert self.cur is not None
            image, at, hi = self.cur
            k = min(max_rows - got, len(image) - self.taken)
            if self.rate and k > 0:
                k = min(k, self._budget())
                if k <= 0:
                    if not got:
                        time.sleep(min(0.05, 1.0 / self.rate))
                    break
            if k > 0:
                first = self.state["rows"]
                parts.append(self._run(t, "read", t.key, t.no_image(k), image.slice(self.taken, k), k, first, at))
                self.taken += k
                got += k
                self.rows_read += k
                self.state["rows"] += k
            if self.taken >= len(image):  # the chunk is done: its range is covered up to its upper key
                self.cur = None
                if hi is None:  # the last one: the table is read (its end marker goes with its last rows)
                    self._fence(t, None, at)
                    self._end_table(t, parts)
                    got += 1
                else:
                    self.state["last_pk"] = pk_to_json(hi)
                    self._fence(t, self.state["last_pk"], at)
                if t.splittable or hi is None:
                    self.safe = dict(self.state)
            elif t.splittable:
                row = image.slice(self.taken - 1, 1)
                key = tuple(row.field(c)[0].as_py() for c in t.page)
                self.state["last_pk"] = pk_to_json(key)
                self._fence(t, self.state["last_pk"], at)
                self.safe = dict(self.state)
        return parts

    def progress(self) -> dict[str, Any]:
        out = super().progress()
        out.update(parallelism=self.parallelism, worker_restarts=self.restarts)
        return out


# -------------------------------------------------------------------------------------- backfill


class KeyFences:
    """Fences of a backfill: the keys a chunk emitted (as the binlog decoder gives them) and the position
    it was read at; the stream drops a change of such a key written before that position (the read row
    holds it). Entries go once the stream passed them."""

    def __init__(self) -> None:
        self.raw = None  # not checkpointed: a backfill ends with its pipeline
        self.entries: dict[str, list[tuple[list[str], set[tuple[Any, ...]], tuple[int, int]]]] = {}

    def add(self, table: str, cols: list[str], keys: set[tuple[Any, ...]], at: tuple[str, int]) -> None:
        if keys:
            self.entries.setdefault(table, []).append((cols, keys, _at(*at)))

    def passed(self, file: str, offset: int) -> bool:
        if not file:
            return not self.entries
        now = _at(file, offset)
        for table in list(self.entries):
            self.entries[table] = [e for e in self.entries[table] if e[2] > now]
            if not self.entries[table]:
                del self.entries[table]
        return not self.entries

    def keep(self, part: TableRows) -> TableRows | None:
        entries = self.entries.get(f"{part.db}.{part.table}")
        if not entries:
            return part
        data = part.data
        ops = data.column("op").to_pylist()
        ats = [_at(f, o) for f, o in zip(data.column("file").to_pylist(), data.column("offset").to_pylist())]
        mask = [True] * len(ops)
        for cols, keys, at in entries:
            images = {}
            for side in ("before", "after"):
                image = data.column(side)
                names = {image.type.field(i).name for i in range(image.type.num_fields)}
                if all(c in names for c in cols):
                    images[side] = list(zip(*(image.field(c).to_pylist() for c in cols)))
            for i, op in enumerate(ops):
                side = "after" if op == "insert" else "before"
                if op in ("insert", "update", "delete") and side in images and ats[i] < at \
                        and images[side][i] in keys:
                    mask[i] = False
        if all(mask):
            return part
        if not any(mask):
            return None
        return TableRows(part.db, part.table, part.key, data.filter(pa.array(mask, pa.bool_())))


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

    def read(self, max_rows: int) -> list[TableRows]:
        """The next table's start marker, or one chunk (and the end marker after the table's last)."""
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
        with self.conn.cursor() as cur:
            cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT")
            cur.execute("SHOW STATUS LIKE 'binlog_snapshot_%'")
            status = {str(k).lower(): v for k, v in cur.fetchall()}
            cur.execute(sql, args)
            rows = list(cur.fetchall())
            cur.execute("COMMIT")
        at = (str(status["binlog_snapshot_file"]), int(status["binlog_snapshot_position"]))
        self.chunks += 1
        parts: list[TableRows] = []
        if rows:
            image = t.image(rows)
            self.last = t.page_key(rows[-1])
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
