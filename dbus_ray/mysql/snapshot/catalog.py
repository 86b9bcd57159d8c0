"""The catalog side of the `mysql` source's snapshots: which tables to read and how (`SnapTable`: columns,
key, the keyset-paged queries), from information_schema; the consistent-snapshot connection and its
binlog position (`open_consistent`); chunk boundaries; key values in checkpoints (`pk_to_json`).

How (MariaDB): one connection runs `START TRANSACTION WITH CONSISTENT SNAPSHOT` (REPEATABLE READ) and
then `SHOW STATUS LIKE 'binlog_snapshot_%'`: the binlog file/position of exactly the transactions the
snapshot sees (no FLUSH TABLES WITH READ LOCK). Each table is read in key order with keyset pagination
(`WHERE key > last ORDER BY key LIMIT chunk_rows`) inside that transaction, so a chunk costs an index
range scan and memory stays at one chunk. The key is the primary key, else a unique index whose
columns are all NOT NULL; a table with neither is refused (one line naming it) before anything is read.

Values equal what the binlog decoder (`dbus_ray.mysql.decoder`) gives for the same row, with the same
Arrow types: the column definitions come from information_schema and go through the same
`column_reader` type mapping; SELECT values are brought into the decoder's form (DATE/DATETIME as ISO
text, TIMESTAMP as ISO text in UTC, zero dates as the server shows them, FLOAT read through
`CAST(... AS DOUBLE)` so the float32 is exact). Text in a charset other than UTF-8 is read as its stored
bytes (`CAST(... AS BINARY)`, CHAR's trailing spaces gone as in the binlog) and decoded by the binlog
decoder's strict decoder of the charset (`raw_codec`): the server's own conversion would send a byte with no
character in the charset as `?`, here it stops the snapshot with one line (`text_rows.undecodable`).
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
from dataclasses import dataclass, field, replace
from typing import Any

import pyarrow as pa
import pymysql

from dbus_ray.errors import DbusError
from dbus_ray.mysql import connection as pf
from dbus_ray.mysql import values as bt
from dbus_ray.mysql.charsets import decoder
from dbus_ray.mysql.column_meta import column_field
from dbus_ray.mysql.snapshot.key_order import key_kinds
from dbus_ray.mysql.snapshot.text_rows import iso_date, iso_utc, undecodable

#: Schemas never snapshotted (their tables are not user data, several have no key).
SYSTEM_SCHEMAS = ("mysql", "information_schema", "performance_schema", "sys")

_INT_TYPES = {"tinyint": bt.TINY, "smallint": bt.SHORT, "mediumint": bt.INT24, "int": bt.LONG,
              "integer": bt.LONG, "bigint": bt.LONGLONG}
_TEXT_TYPES = {"tinytext", "text", "mediumtext", "longtext"}
_BLOB_TYPES = {"tinyblob", "blob", "mediumblob", "longblob"}
_CHAR_TYPES = {"char", "varchar"} | _TEXT_TYPES  # decoded in their charset
_GEOMETRY_TYPES = {"geometry", "point", "linestring", "polygon", "multipoint", "multilinestring",
                   "multipolygon", "geometrycollection"}

#: Image of a marker row (`op: ddl`): {"snapshot": "start" | "end", "table": "db.t", "rows": n at end}.

def quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def quote_bound(name: str) -> str:
    """`quote` in a statement pymysql binds arguments into (`%` formatting): a `%` of the name doubled. The
    statements of `SnapTable` and `chunk_bounds` are such templates, bound even without arguments."""
    return quote(name).replace("%", "%%")


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
    try:  # binary strings and non-strings have neither (a text type always has one)
        charset = bt.codec_of(row["CHARACTER_SET_NAME"], row["COLLATION_NAME"]) \
            if row["CHARACTER_SET_NAME"] or row["COLLATION_NAME"] or data_type in _CHAR_TYPES else None
    except ValueError as exc:
        raise DbusError(f"table {where}: column {name}: {exc}") from None
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
        return bt.ColumnDef(name, bt.BLOB, charset=charset)
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


def _converter(col: bt.ColumnDef) -> Any:
    """SELECT value -> the binlog decoder's value (None: the same already)."""
    if col.type in (bt.DATE, bt.DATETIME2, bt.DATETIME):
        return iso_date
    if col.type in (bt.TIMESTAMP2, bt.TIMESTAMP):
        return iso_utc
    return None


def raw_codec(col: bt.ColumnDef) -> str | None:
    """The strict decoder (`charsets.codec_of`) of a text column the snapshot reads as its stored bytes: one
    whose charset is not UTF-8 (utf8mb3/utf8mb4 come as they are, through Arrow's UTF-8 validation); None
    for the rest."""
    return col.charset if col.charset not in (None, "binary", "utf-8") else None


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
    kinds: list[Any] | None = None  # how the key sorts (`key_order`); None: not split into ranges
    charsets: dict[str, str] = field(default_factory=dict)  # column -> its charset (for error lines)

    def __post_init__(self) -> None:
        self.types = [bt.column_reader(c)[1] for c in self.columns]
        self.fields = [column_field(c, t) for c, t in zip(self.columns, self.types)]
        self.image_type = pa.struct(self.fields)
        self.converters = [_converter(c) for c in self.columns]
        self.codecs = [raw_codec(c) for c in self.columns]  # read as stored bytes, decoded strictly
        names = [c.name for c in self.columns]
        self.page_at = [names.index(k) for k in self.page]
        q = quote_bound
        exprs = [f"CAST({q(c.name)} AS DOUBLE)" if c.type == bt.FLOAT else
                 f"CAST({q(c.name)} AS BINARY)" if codec else q(c.name) for c, codec in zip(self.columns, self.codecs)]
        self.select = f"SELECT {', '.join(exprs)} FROM {q(self.db)}.{q(self.table)}"
        self.page_select = ", ".join(f"CAST({q(k)} AS BINARY)" if self.codecs[i] else q(k)
                                     for k, i in zip(self.page, self.page_at))
        self.order = " ORDER BY " + ", ".join(q(k) for k in self.page)
        # keyset: (a > x) OR (a = x AND b > y) OR ...: a range scan on the key's index
        ors, args = [], []
        for i, k in enumerate(self.page):
            terms = [f"{q(p)} = %s" for p in self.page[:i]] + [f"{q(k)} > %s"]
            ors.append("(" + " AND ".join(terms) + ")")
            args.append(list(range(i + 1)))
        self.key_gt = " OR ".join(ors)  # key > (%s, ...)
        self.after_where = " WHERE " + self.key_gt
        self.splittable = self.kinds is not None
        self.arg_order = [j for a in args for j in a]

    @property
    def name(self) -> str:
        return f"{self.db}.{self.table}"

    def chunk_sql(self, last: tuple[Any, ...] | None, n: int, where: str | None = None) -> tuple[str, list[Any]]:
        """The first `n` rows after key `last` (None: from the start), of those `where` (SQL) selects. The
        statements of `chunk_sql` and `range_sql` are bound with their arguments (a list, maybe empty) by
        pymysql, whose `%` formatting reads any `%` in them: names and `where` have theirs doubled."""
        terms = [] if where is None else [f"({where.replace('%', '%%')})"]
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
        """The key of a row of `chunk_sql`/`range_sql` as pymysql gives it (`TextRows.row`), with text read
        as stored bytes decoded (DbusError when it cannot be)."""
        return self.decode_key(tuple(row[i] for i in self.page_at))

    def decode_key(self, values: tuple[Any, ...]) -> tuple[Any, ...]:
        """Key values (`page` order) with those read as stored bytes decoded strictly."""
        out = []
        for v, i in zip(values, self.page_at):
            codec = self.codecs[i]
            if codec is None or v is None:
                out.append(v)
                continue
            try:
                out.append(decoder(codec)(bytes(v)))
            except UnicodeDecodeError as exc:
                raise DbusError(undecodable(self, i, exc)) from None
        return tuple(out)

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
            "NUMERIC_SCALE, DATETIME_PRECISION, CHARACTER_OCTET_LENGTH, CHARACTER_MAXIMUM_LENGTH, IS_NULLABLE "
            "FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION",
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
    page, index = primary, "PRIMARY"
    if not page:
        candidates = [
            (any(p["SUB_PART"] for p in parts), len(parts), name)
            for name, parts in indexes.items()
            if all(not int(p["NON_UNIQUE"]) and not nullable.get(p["COLUMN_NAME"], True) for p in parts)
        ]
        if candidates:
            index = min(candidates)[2]
            page = tuple(p["COLUMN_NAME"] for p in indexes[index])
    if not page:
        raise DbusError(
            f"table {where} has no primary key or unique NOT NULL key, so the snapshot cannot read it in key "
            "order: add a primary key, or leave the table out (source.exclude)"
        )
    columns = [replace(column_def(c, where), nullable=c["IS_NULLABLE"] == "YES") for c in cols]
    kinds = key_kinds({c["COLUMN_NAME"]: c for c in cols}, page, any(p["SUB_PART"] for p in indexes[index]))
    charsets = {str(c["COLUMN_NAME"]): str(c["CHARACTER_SET_NAME"]) for c in cols if c["CHARACTER_SET_NAME"]}
    return SnapTable(db, table, columns, primary, page, engine, estimate, kinds, charsets)


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
    the chunks are (after, b0], (b0, b1], ..., (b_last, end). None (one chunk) unless the key's order is
    known here (`key_order`)."""
    if not t.splittable:
        return []
    keys = t.page_select
    bounds: list[tuple[Any, ...]] = []
    last = after
    with conn.cursor() as cur:
        while True:
            where, args = ("", []) if last is None else (t.after_where, [last[j] for j in t.arg_order])
            cur.execute(f"SELECT {keys} FROM {quote_bound(t.db)}.{quote_bound(t.table)}{where}{t.order} LIMIT 1 "
                        f"OFFSET {int(n) - 1}", args)
            row = cur.fetchone()
            if row is None:
                return bounds
            last = t.decode_key(tuple(row))
            bounds.append(last)
