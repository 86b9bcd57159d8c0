"""ENUM and SET members in a charset other than utf8mb4, read from the binlog of the real MariaDB
(binlog_row_metadata=FULL: the TABLE_MAP carries the member names in the column's charset): the rows equal what
SELECT returns (python-mysql-replication alone decodes such names as UTF-8 and gives '' for them)."""

from __future__ import annotations

from typing import Any

import pymysql
import pytest

from dbus_ray.mysql.source import MysqlOptions, MysqlSource
from tests.support.helpers import drain, execute, position

pytestmark = pytest.mark.integration

CHARSETS = ["latin1", "cp1251", "utf8mb4"]
MEMBERS = {"latin1": ("äö1", "x"), "cp1251": ("жё1", "x"), "utf8mb4": ("😀1", "x")}


def test_enum_and_set_members_equal_select(mariadb: Any, root: Any) -> None:
    start = position(root)
    execute(root, "DROP DATABASE IF EXISTS enumcs", "CREATE DATABASE enumcs")
    for cs in CHARSETS:
        a, b = MEMBERS[cs]
        execute(root, f"CREATE TABLE enumcs.t_{cs} (id INT PRIMARY KEY, e ENUM('{a}','{b}') CHARACTER SET {cs}, "
                      f"s SET('{a}','{b}') CHARACTER SET {cs}) DEFAULT CHARSET={cs}",
                f"INSERT INTO enumcs.t_{cs} VALUES (1, '{a}', '{a},{b}'), (2, '{b}', ''), (3, NULL, '{a}')")
    expected = {}
    with root.cursor(pymysql.cursors.DictCursor) as cur:
        for cs in CHARSETS:
            cur.execute(f"SELECT * FROM enumcs.t_{cs} ORDER BY id")
            expected[cs] = cur.fetchall()
    assert expected["latin1"][0] == {"id": 1, "e": "äö1", "s": "äö1,x"}  # the client shows the names
    src = MysqlSource("enumcs", MysqlOptions(dsn=mariadb.dsn, server_id=7311, start=start, include=["enumcs.*"]))
    src.open(None)
    try:
        got = [c for batch in drain(src) for c in batch.changes() if c.op == "insert"]
    finally:
        src.close()
    for cs in CHARSETS:
        assert [c.after for c in got if c.table == f"t_{cs}"] == expected[cs], cs
