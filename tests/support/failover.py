"""Two private MariaDB servers with GTID replication for the failover tests: a primary and its replica
(`log_slave_updates`, the replica's `binlog_checksum=NONE` so that the same transactions sit at other offsets
in its binlog), and the helpers that write to them and wait for the replica."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from dbus_ray.devstack import MariaDB
from tests.support.helpers import execute, scalar

DB = "dbus_test"


def rows_of(server: MariaDB, t: str) -> list[tuple[int, str]]:
    conn = server.root_connect(DB)
    try:
        with conn.cursor() as cur:
            cur.execute(f"SELECT id, v FROM {t} ORDER BY id")
            return [(int(i), str(v)) for i, v in cur.fetchall()]
    finally:
        conn.close()


def insert_txns(conn: Any, t: str, first: int, txns: int, per_txn: int, tag: str) -> int:
    """`txns` transactions of `per_txn` rows each, ids from `first`; the next free id."""
    i = first
    for _ in range(txns):
        execute(conn, "BEGIN")
        for _ in range(per_txn):
            execute(conn, f"INSERT INTO {t} VALUES ({i}, '{tag}-{i}')")
            i += 1
        execute(conn, "COMMIT")
    return i


def wait_replicated(primary: MariaDB, replica: MariaDB) -> None:
    p, r = primary.root_connect(), replica.root_connect()
    try:
        pos = scalar(p, "SELECT @@GLOBAL.gtid_binlog_pos")
        assert scalar(r, "SELECT MASTER_GTID_WAIT(%s, 60)", (pos,)) == 0, f"the replica did not reach {pos}"
    finally:
        p.close()
        r.close()


@pytest.fixture(name="pair")
def pair_fixture() -> Iterator[tuple[MariaDB, MariaDB]]:
    """A primary (server_id 1) and its GTID replica (server_id 2, no binlog checksums: other offsets)."""
    primary = MariaDB(server_id=1, extra_args=["--log-slave-updates"])
    replica = MariaDB(server_id=2, extra_args=["--log-slave-updates", "--binlog-checksum=NONE"])
    try:
        primary.start()
        replica.start()
        conn = replica.root_connect()
        try:
            execute(conn, f"CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={primary.port}, "
                          f"MASTER_USER='{primary.user}', MASTER_PASSWORD='{primary.password}', "
                          "MASTER_USE_GTID=slave_pos", "START SLAVE")
        finally:
            conn.close()
        yield primary, replica
    finally:
        replica.stop()
        primary.stop()
