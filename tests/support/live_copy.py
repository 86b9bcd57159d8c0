"""Reading a live copy (a Delta table of the delta sink) and comparing it with `SELECT * FROM` the MariaDB
table row for row, value for value, as the delta sink's type mapping (`dbus_ray.sinks.delta_types`) documents
each MariaDB value; shared by the delta sink's integration, chaos and benchmark code."""

from __future__ import annotations

import datetime as dt
import decimal
from pathlib import Path
from typing import Any

import numpy as np

DB = "dbus_test"


def delta_value(value: Any, column_type: str) -> Any:
    """A value `SELECT` gives (pymysql), as the documented mapping stores it in the Delta table."""
    if value is None:
        return None
    ctype = column_type.lower()
    if isinstance(value, dt.timedelta):  # TIME: microseconds
        return (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds
    if isinstance(value, dt.datetime):  # DATETIME/TIMESTAMP (session in UTC): ISO 8601, no zero fraction
        return value.isoformat() + ("+00:00" if ctype.startswith("timestamp") else "")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, bytearray):
        return bytes(value)
    if ctype.startswith("float"):  # FLOAT: the float32 the server keeps
        return float(np.float32(value))
    if isinstance(value, decimal.Decimal) and ctype.startswith("decimal"):
        precision = int(ctype.split("(")[1].split(",")[0]) if "(" in ctype else 10
        return format(value, "f") if precision > 38 else value
    if ctype == "year":
        return int(value)
    return value


def mariadb_rows(server: Any, table: str, db: str = DB,
                 mapped: Any = None) -> tuple[list[str], dict[Any, tuple[Any, ...]]]:
    """The columns and rows (by id) of `SELECT * FROM table` (UTC), each value as `mapped(value, column_type)`
    gives it (default: as the delta mapping stores it)."""
    mapped = mapped or delta_value
    conn = server.root_connect(db)
    try:
        with conn.cursor() as cur:
            cur.execute("SET time_zone = '+00:00'")
            cur.execute(f"SELECT column_name, column_type FROM information_schema.columns WHERE table_schema = "
                        f"'{db}' AND table_name = '{table}' ORDER BY ordinal_position")
            types = dict(cur.fetchall())
            cur.execute(f"SELECT * FROM {table} ORDER BY id")
            names = [c[0] for c in cur.description]
            rows = {row[0]: tuple(mapped(v, types[n]) for n, v in zip(names, row)) for row in cur.fetchall()}
    finally:
        conn.close()
    return names, rows


def delta_rows(table_dir: Path | str) -> tuple[list[str], dict[Any, tuple[Any, ...]]]:
    """The columns and rows (by id) of a Delta table, read as a reader would (pyarrow)."""
    from deltalake import DeltaTable

    table = DeltaTable(str(table_dir)).to_pyarrow_table()
    names = table.column_names
    return names, {row["id"]: tuple(row.values()) for row in table.to_pylist()}


def assert_delta_equal(server: Any, table_dir: Path | str, table: str, db: str = DB) -> int:
    """The Delta table equals `SELECT * FROM` the MariaDB table; returns the number of rows."""
    src_names, src = mariadb_rows(server, table, db)
    dst_names, dst = delta_rows(table_dir)
    assert src_names == dst_names, f"columns differ: {src_names} vs {dst_names}"
    assert src.keys() == dst.keys(), (f"keys only at the source {sorted(src.keys() - dst.keys())[:10]}, only in "
                                      f"the Delta table {sorted(dst.keys() - src.keys())[:10]}")
    for key, row in src.items():
        for name, want, got in zip(src_names, row, dst[key]):
            assert want == got, f"row {key} column {name}: MariaDB {want!r} != Delta {got!r}"
    return len(src)


def postgres_value(value: Any, column_type: str) -> Any:
    """A value `SELECT` gives (pymysql), as the postgres sink's documented mapping stores it
    (`dbus_ray.sinks.postgres_types`): dates as ISO text, TIME as an interval, the rest as it is."""
    if value is None or isinstance(value, dt.timedelta):
        return value
    if isinstance(value, decimal.Decimal):
        return value
    return delta_value(value, column_type)


def postgres_equal(server: Any, pg: Any, schema: str, table: str, db: str = DB) -> int:
    """The PostgreSQL copy equals `SELECT * FROM` the MariaDB table; returns the number of rows. REAL columns
    are compared as the float32 they hold."""
    names, src = mariadb_rows(server, table, db, postgres_value)
    with pg.connect() as pconn:
        cur = pconn.execute(f'SELECT * FROM "{schema}"."{table}" ORDER BY id')
        pg_names = [c.name for c in cur.description]
        real = {c.name for c in cur.description if c.type_code == 700}  # float4
        dst = {row[0]: tuple(float(np.float32(v)) if n in real and v is not None else v
                             for n, v in zip(pg_names, row)) for row in cur.fetchall()}
    assert names == pg_names, f"columns differ: {names} vs {pg_names}"
    assert src.keys() == dst.keys(), (f"keys only at the source {sorted(src.keys() - dst.keys())[:10]}, only in "
                                      f"PostgreSQL {sorted(dst.keys() - src.keys())[:10]}")
    for key, row in src.items():
        for name, want, got in zip(names, row, dst[key]):
            assert want == got, f"row {key} column {name}: MariaDB {want!r} != PostgreSQL {got!r}"
    return len(src)
