"""Differential test of our binlog decoder (dbus_ray.mysql: compiled per-table layouts) against stock
python-mysql-replication, on the same binlog: every column type of the type-fidelity table
(TYPES_DDL/TYPE_ROWS of tests/support/mysql_types.py), in row-by-row inserts, one multi-row UPDATE (before
and after images) and one multi-row DELETE.

Our values are the Arrow values of the batches (`to_pylist()` of the `before`/`after` columns). The
stock library's values are normalized to our form where only the form differs:

| column type          | stock form                               | normalized to                       |
|----------------------|------------------------------------------|-------------------------------------|
| BIT(n)               | str of '0'/'1'                           | the big-endian bytes                |
| DATE / DATETIME      | date / naive datetime                    | `isoformat()`                       |
| TIMESTAMP            | naive datetime in UTC                    | `isoformat()` with `+00:00`         |
| zero/partial dates   | None (DATE/DATETIME), epoch (TIMESTAMP)  | our text as the server shows it     |
| BINARY(n)            | trailing zero bytes stripped             | zero-padded to our length           |
| empty binary strings | '' (str)                                 | b''                                 |
| SET                  | set of members                           | members joined by ',' (a, b, c order)|

Where the stock value is wrong (a different value, not a different form), `STOCK_DEFECTS` names the
cell and the value SELECT returns, which ours must equal (and stock must still differ from).
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest

from dbus_ray.mysql.source import MysqlOptions, MysqlSource
from tests.support.mysql_types import TYPE_ROWS, TYPES_DDL

pytestmark = pytest.mark.integration

DB = "dbus_test"



# (column, row id) -> the value SELECT returns, where stock python-mysql-replication 1.0.17 decodes a
# different value
STOCK_DEFECTS: dict[tuple[str, int], Any] = {
    ("tm2", 3): dt.timedelta(microseconds=-10_000),  # TIME(2) '-00:00:00.01': stock gives -0.99 s
    ("tm4", 1): -dt.timedelta(hours=12, microseconds=100),  # TIME(4) '-12:00:00.0001': stock -11:59:59.9999
    ("y", 3): 0,  # YEAR 0000: stock gives 1900
    ("st", 2): "",  # empty SET: stock gives None (as for NULL)
}

ZERO_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}( \d{2}:\d{2}:\d{2}(\.\d+)?)?$")


def column_types() -> dict[str, str]:
    """column name -> its SQL type (upper case) from TYPES_DDL."""
    body = TYPES_DDL.split("(", 1)[1]
    out = {}
    for m in re.finditer(r"(?:^|,)\s*(\w+)\s+([A-Z]+)", body, re.M):
        out[m.group(1)] = m.group(2)
    return out


def normalize(sql_type: str, stock: Any, ours: Any) -> Any:
    """The stock value in our form (see the module docstring)."""
    if stock is None:
        if sql_type in ("DATE", "DATETIME") and isinstance(ours, str) and ZERO_DATE_RE.match(ours):
            return ours  # stock cannot hold a zero or partial date
        return None
    if sql_type == "BIT":
        return int(stock, 2).to_bytes(len(ours) if isinstance(ours, bytes) else 8, "big")
    if sql_type == "TIMESTAMP":
        if stock == dt.datetime(1970, 1, 1) and isinstance(ours, str) and ours.startswith("0000-00-00"):
            return ours  # the zero TIMESTAMP: stock decodes it as the epoch
        return stock.replace(tzinfo=dt.UTC).isoformat()
    if sql_type in ("DATE", "DATETIME"):
        return stock.isoformat()
    if sql_type in ("BINARY", "VARBINARY", "BLOB", "LONGBLOB"):
        value = b"" if stock == "" else stock
        if sql_type == "BINARY" and isinstance(ours, bytes):
            value = value.ljust(len(ours), b"\0")
        return value
    if sql_type == "SET":
        return ",".join(sorted(stock))
    return stock


def read_stock(mariadb: Any, file: str, pos: int, table: str) -> list[tuple[str, dict | None, dict | None]]:
    from pymysqlreplication import BinLogStreamReader
    from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

    stream = BinLogStreamReader(
        connection_settings=mariadb.connection_settings(),
        server_id=7301,
        log_file=file,
        log_pos=pos,
        resume_stream=True,
        blocking=False,
        only_events=[WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent],
        only_tables=[table],
    )
    out: list[tuple[str, dict | None, dict | None]] = []
    try:
        for ev in stream:
            for row in ev.rows:
                if isinstance(ev, WriteRowsEvent):
                    out.append(("insert", None, row["values"]))
                elif isinstance(ev, UpdateRowsEvent):
                    out.append(("update", row["before_values"], row["after_values"]))
                else:
                    out.append(("delete", row["values"], None))
    finally:
        stream.close()
    return out


def read_ours(mariadb: Any, file: str, pos: int, table: str) -> list[tuple[str, dict | None, dict | None]]:
    src = MysqlSource("diff", MysqlOptions(dsn=mariadb.dsn, server_id=7302, start=f"{file}:{pos}",
                                           include=[f"{DB}.{table}"], key_change="update"))  # update as decoded
    src.open(None)
    out: list[tuple[str, dict | None, dict | None]] = []
    try:
        for _ in range(500):
            batch = src.poll(3, 1)  # small batches: runs split inside multi-row events too
            if batch is None:
                if src.caught_up():
                    break
                continue
            for part in batch.parts:
                ops = part.data.column("op").to_pylist()
                before = part.data.column("before").to_pylist()
                after = part.data.column("after").to_pylist()
                out += [(o, b, a) for o, b, a in zip(ops, before, after) if o != "ddl"]
        else:
            raise AssertionError("source never caught up")
    finally:
        src.close()
    return out


def test_decoded_values_equal_stock_library(mariadb: Any) -> None:
    table = "diff_types"
    conn = mariadb.root_connect(DB)
    try:
        with conn.cursor() as cur:
            cur.execute("SET time_zone = '+00:00'")
            cur.execute(f"DROP TABLE IF EXISTS {table}")
            cur.execute(TYPES_DDL.format(t=table))
            cur.execute("SHOW MASTER STATUS")
            file, pos = cur.fetchone()[:2]
            cur.execute("SET SESSION sql_mode = ''")
            for row in TYPE_ROWS:
                cur.execute(f"INSERT INTO {table} VALUES {row}")
            cur.execute(f"UPDATE {table} SET id = id + 100")  # one event: before and after images
            cur.execute(f"DELETE FROM {table}")
    finally:
        conn.close()

    stock = read_stock(mariadb, file, pos, table)
    ours = read_ours(mariadb, file, pos, table)
    n = len(TYPE_ROWS)
    assert [op for op, _, _ in ours] == ["insert"] * n + ["update"] * n + ["delete"] * n
    assert [op for op, _, _ in stock] == [op for op, _, _ in ours]
    types = column_types()
    assert set(types) == set(ours[0][2]), "every column of TYPES_DDL has a type here"

    compared = 0
    defects_seen = set()
    for (op, s_before, s_after), (_, o_before, o_after) in zip(stock, ours):
        for s_image, o_image in ((s_before, o_before), (s_after, o_after)):
            assert (s_image is None) == (o_image is None), op
            if s_image is None:
                continue
            assert set(s_image) == set(o_image)
            row_id = o_image["id"] % 100
            for col, ours_value in o_image.items():
                if (col, row_id) in STOCK_DEFECTS:
                    defect = STOCK_DEFECTS[(col, row_id)]
                    assert ours_value == defect, f"{op} row {row_id} column {col}: {ours_value!r}"
                    assert normalize(types[col], s_image[col], ours_value) != defect, f"stock fixed {col}?"
                    defects_seen.add((col, row_id))
                    continue
                expected = normalize(types[col], s_image[col], ours_value)
                assert ours_value == expected, (
                    f"{op} row {row_id} column {col} ({types[col]}): ours {ours_value!r} != stock {s_image[col]!r}"
                )
                compared += 1
    assert defects_seen == set(STOCK_DEFECTS)
    assert compared >= len(types) * n * 4 - len(STOCK_DEFECTS) * 4
