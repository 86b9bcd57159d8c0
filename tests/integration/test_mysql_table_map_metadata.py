"""TABLE_MAP optional metadata of the real MariaDB (binlog_row_metadata=FULL) read by the `mysql` source: ENUM
and SET members in a charset other than utf8mb4 (the TABLE_MAP carries the names in the column's charset) give the
values SELECT returns (python-mysql-replication alone decodes such names as UTF-8 and gives '' for them), and the
rows' key follows the primary key's order (SIMPLE_PRIMARY_KEY), not the columns'."""

from __future__ import annotations

from typing import Any

import pymysql
import pytest

from dbus_ray.mysql.source import MysqlOptions, MysqlSource
from tests.support.helpers import drain, execute, position

pytestmark = pytest.mark.integration

CHARSETS = ["latin1", "cp1251", "utf8mb4"]
MEMBERS = {"latin1": ("äö1", "x"), "cp1251": ("жё1", "x"), "utf8mb4": ("😀1", "x")}


def inserts(dsn: str, db: str, server_id: int, start: str) -> list[Any]:
    """The insert changes of database `db` a `mysql` source reads from `start` until caught up."""
    src = MysqlSource(db, MysqlOptions(dsn=dsn, server_id=server_id, start=start, include=[f"{db}.*"]))
    src.open(None)
    try:
        return [c for batch in drain(src) for c in batch.changes() if c.op == "insert"]
    finally:
        src.close()


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
    got = inserts(mariadb.dsn, "enumcs", 7311, start)
    for cs in CHARSETS:
        assert [c.after for c in got if c.table == f"t_{cs}"] == expected[cs], cs


def test_binlog_key_follows_the_primary_key_order(mariadb: Any, root: Any) -> None:
    """PRIMARY KEY (b, a) on columns (a, b, v): the binlog rows' key lists b then a, as the TABLE_MAP's
    SIMPLE_PRIMARY_KEY does (and a snapshot's information_schema order), not the columns' order."""
    start = position(root)
    execute(root, "DROP DATABASE IF EXISTS keyorder", "CREATE DATABASE keyorder",
            "CREATE TABLE keyorder.t (a INT, b VARCHAR(10), v INT, PRIMARY KEY (b, a))",
            "INSERT INTO keyorder.t VALUES (1, 'k', 10)")
    got = inserts(mariadb.dsn, "keyorder", 7312, start)
    assert [list(c.key.items()) for c in got] == [[("b", "k"), ("a", 1)]]


def test_primary_key_without_binlog_checksums() -> None:
    """A MariaDB with binlog_checksum=NONE: the primary key, the TABLE_MAP's last optional field here, still
    keys the rows (python-mysql-replication alone stops reading 4 bytes before the event's end, where a CRC would
    be, and drops it: the rows came without key)."""
    from dbus_ray.devstack import MariaDB

    server = MariaDB(extra_args=["--binlog-checksum=NONE"]).start()
    try:
        conn = server.root_connect()
        start = position(conn)
        execute(conn, "CREATE DATABASE nocrc", "CREATE TABLE nocrc.t (a INT, b INT, PRIMARY KEY (b))",
                "INSERT INTO nocrc.t VALUES (1, 2)")
        with conn.cursor() as cur:
            cur.execute("SELECT @@binlog_checksum")
            assert cur.fetchone()[0] == "NONE"
        conn.close()
        got = inserts(server.dsn, "nocrc", 7313, start)
    finally:
        server.stop()
    assert [(c.key, c.after) for c in got] == [({"b": 2}, {"a": 1, "b": 2})]
