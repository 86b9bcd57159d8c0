"""The history of rows in a server's binlog: `history(dsn, "shop.orders", key={"id": 7}, since=, until=)` and
`transaction(dsn, txid)`, read with the `mysql` source's own stream (`dbus_ray.debug.binlog`) into a pyarrow
Table (`HISTORY_SCHEMA`, one row per row change, in binlog order; `.to_pandas()` for a DataFrame). With
`files=` (a directory or glob of archived binlog files) the same is read from those files, as the
`binlog_files` source reads them, e.g. after the server purged them.

Memory stays bounded whatever the window: the stream hands out at most READ_ROWS rows at a time, each run is
filtered with Arrow compute and only the matching rows are kept (with the commit times of the newest
transactions, `binlog.COMMITS_KEPT`). A progress bar over the window's bytes shows when tqdm is installed and
the window is long (PROGRESS_BYTES), or when `progress=True`.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from dbus_ray.debug.binlog import Bound, WindowStream, endpoint, open_file_window, open_window, parse_bound
from dbus_ray.errors import DbusError
from dbus_ray.model import TableRows, dumps
from dbus_ray.mysql import connection as cn
from dbus_ray.mysql.offset import position_key
from dbus_ray.routing import TableMatcher

READ_ROWS = 5_000
PROGRESS_BYTES = 16 * 1024 * 1024

_TS = pa.timestamp("s", tz="UTC")
HISTORY_SCHEMA = pa.schema([
    ("db", pa.string()), ("table", pa.string()), ("op", pa.string()),
    ("key", pa.string()),  # JSON text
    ("before", pa.string()), ("after", pa.string()),  # JSON text (the documented row-change JSON values)
    ("gtid", pa.string()), ("txid", pa.string()),
    ("ts", _TS),  # the event's time (the statement's, as the server wrote it)
    ("commit_ts", _TS),  # the transaction's commit time (its XID/COMMIT event); null when it ends after the window
    ("file", pa.string()), ("offset", pa.int64()), ("index", pa.int32()),  # the row's binlog position
])


def _split_table(table: str) -> tuple[str, str]:
    db, dot, name = table.partition(".")
    if not dot or not db or not name or "*" in table:
        raise DbusError(f"table {table!r}: expected db.table, e.g. shop.orders")
    return db, name


def _key_mask(part: TableRows, key: dict[str, Any]) -> pa.Array:
    data = part.data
    mask = None
    for image in ("before", "after"):
        col = data.column(image)
        names = [f.name for f in col.type]
        cond = None
        for name, value in key.items():
            if name not in names:
                raise DbusError(f"key {key!r}: table {part.name} has no column {name!r} (columns: "
                                f"{', '.join(names)})")
            field = pc.struct_field(col, name)
            try:
                eq = pc.equal(field, pa.scalar(value).cast(field.type))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
                raise DbusError(f"key {key!r}: {name} of {part.name} is {field.type}: {exc}") from None
            cond = eq if cond is None else pc.and_(cond, eq)
        assert cond is not None
        cond = pc.fill_null(cond, False)
        mask = cond if mask is None else pc.or_(mask, cond)
    return mask


def _progress(enabled: bool | None, total: int, what: str) -> Any:
    if enabled is False or (enabled is None and total < PROGRESS_BYTES):
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="B", unit_scale=True, desc=what, leave=False)


def _ts(value: float | None) -> dt.datetime | None:
    return None if value is None else dt.datetime.fromtimestamp(value, dt.UTC)


def scan(dsn: str | None, table: str | None, key: dict[str, Any] | None, since: Any, until: Any, *,
         txid: str | None = None, one_transaction: bool = False, progress: bool | None = None,
         files: str | None = None) -> pa.Table:
    """The row changes of `table` (db.table; None: every table) in the window, those whose before or after image
    has every `key` column equal to its value (None: all), or those of transaction `txid`. With `files` (a
    directory or glob of archived binlog files) the window is read from those files instead of the server; `dsn`
    is then optional: the server whose information_schema names the columns of files without column names."""
    lo, hi = parse_bound(since, "since"), parse_bound(until, "until")
    if table is not None:
        matcher = TableMatcher(["{}.{}".format(*_split_table(table))], [])
    else:
        matcher = TableMatcher(["*.*"], ["mysql.*", "information_schema.*", "performance_schema.*", "sys.*"])
    if key is not None and (not isinstance(key, dict) or not key):
        raise DbusError(f"key {key!r}: expected a dict of key column -> value, e.g. {{'id': 7}}")
    if files is not None:
        catalog = endpoint(dsn) if dsn else None
        ep = catalog or cn.Endpoint(files, 0, "", "")
        win = open_file_window(files, catalog, lo)
    elif dsn is None:
        raise DbusError("give a mysql:// DSN of the server, or files= (archived binlog files)")
    else:
        ep = endpoint(dsn)
        win = open_window(ep, lo)
    stream = WindowStream(ep, win, matcher, lo, hi, one_transaction)
    bar = _progress(progress, win.total_bytes(), f"binlog {win.start.file}")
    rows: list[dict[str, Any]] = []
    waiting: dict[str, list[dict[str, Any]]] = defaultdict(list)  # txid -> rows whose commit is not read yet
    try:
        while not stream.done():
            got = stream.read(READ_ROWS)
            if bar is not None:
                bar.n = min(bar.total, win.done_bytes(stream.file, stream.next_pos))
                bar.refresh()
            if got is not None:
                for part in got[0]:
                    _collect(part, key, txid, lo, hi, stream, rows, waiting)
            for t in [t for t in waiting if t in stream.commits]:
                for row in waiting.pop(t):
                    row["commit_ts"] = _ts(stream.commits[t])
    finally:
        stream.close()
        if bar is not None:
            bar.close()
    return pa.Table.from_pylist(rows, schema=HISTORY_SCHEMA)


def _collect(part: TableRows, key: dict[str, Any] | None, txid: str | None, lo: Bound | None, hi: Bound | None,
             stream: WindowStream, rows: list[dict[str, Any]], waiting: dict[str, list[dict[str, Any]]]) -> None:
    data = part.data
    mask = None
    if key is not None:
        if data.num_rows and data.column("op")[0].as_py() == "ddl":  # a run of DDL rows: no key columns
            return
        mask = _key_mask(part, key)
    if txid is not None:
        cond = pc.equal(data.column("txid"), txid)
        mask = cond if mask is None else pc.and_(mask, cond)
    for bound, op in ((lo, pc.greater_equal), (hi, pc.less_equal)):
        if bound is not None and bound.kind == "time":
            cond = op(data.column("ts"), bound.ts)
            mask = cond if mask is None else pc.and_(mask, cond)
    if mask is not None:
        data = data.filter(pc.fill_null(mask, False))
    if not data.num_rows:
        return
    for rec in TableRows(part.db, part.table, part.key, data).records(""):
        pos = rec["pos"]
        if lo is not None and lo.kind == "gtid":  # only from the since GTID's transaction on
            if stream.since_at is None or position_key(pos["file"], pos["offset"]) < stream.since_at:
                continue
        t = rec["txid"]
        row = {"db": rec["db"], "table": rec["table"], "op": rec["op"], "key": dumps(rec["key"]),
               "before": None if rec["before"] is None else dumps(rec["before"]),
               "after": None if rec["after"] is None else dumps(rec["after"]),
               "gtid": pos["gtid"], "txid": t, "ts": _ts(rec["ts"]), "commit_ts": None, "file": pos["file"],
               "offset": pos["offset"], "index": pos["index"]}
        rows.append(row)
        if t in stream.commits:
            row["commit_ts"] = _ts(stream.commits[t])
        else:
            waiting[t].append(row)


def history(dsn: str | None, table: str, key: dict[str, Any] | None = None, since: Any = None, until: Any = None,
            progress: bool | None = None, files: str | None = None) -> pa.Table:
    """The changes of the rows of `table` keyed `key` between `since` and `until` (see `dbus_ray.debug.binlog`
    for the bounds; default: the earliest binlog file to where the server is now, or with `files` the first
    archived file to the end of the last)."""
    return scan(dsn, table, key, since, until, progress=progress, files=files)


def transaction(dsn: str | None, txid: str, progress: bool | None = None, files: str | None = None) -> pa.Table:
    """Every row change of one transaction: `txid` is its GTID, or the `file:offset` of its start (a row's
    `txid` column either way); with `files`, read from those archived binlog files."""
    bound = parse_bound(txid, "txid")
    assert bound is not None
    if bound.kind == "gtid":
        table = scan(dsn, None, None, bound, bound, txid=bound.gtid, progress=progress, files=files)
    elif bound.kind == "position":
        table = scan(dsn, None, None, bound, None, one_transaction=True, progress=progress, files=files)
    else:
        raise DbusError(f"txid {txid!r}: expected a GTID (0-1-55) or the FILE:OFFSET of the transaction's start")
    return table
