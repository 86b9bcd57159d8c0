"""MariaDB column compression (`TEXT`/`BLOB`/`VARCHAR`/`VARBINARY ... COMPRESSED`, TABLE_MAP types 140/141):
the `mysql` source gives the values the server's own SELECT shows, from the binlog, from a binlog with
log_bin_compress=ON and from a snapshot. Values cover NULL, empty, one byte, values stored as they are
(under column_compression_threshold or not compressible) and compressed ones, with the zlib wrapper and
without (column_compression_zlib_wrap), 1- and 2-byte length prefixes."""

from __future__ import annotations

import random
import time
from typing import Any

import pymysql
import pytest

from dbus_ray.devstack import MariaDB
from dbus_ray.mysql.source import MysqlOptions, MysqlSource
from tests.support.helpers import drain, execute, position, table_name

pytestmark = pytest.mark.integration

COLUMNS = ("t TEXT COMPRESSED, b BLOB COMPRESSED, v VARCHAR(300) COMPRESSED, "
           "v1 VARCHAR(100) CHARACTER SET latin1 COMPRESSED, vb VARBINARY(200) COMPRESSED, "
           "tt TINYTEXT COMPRESSED, mb MEDIUMBLOB COMPRESSED, u LONGTEXT CHARACTER SET ucs2 COMPRESSED")


def rows(first_id: int) -> list[tuple[Any, ...]]:
    """(id, t, b, v, v1, vb, tt, mb, u) rows: NULL, empty, one character, short, long and compressible,
    long and not compressible."""
    rnd = random.Random(first_id)
    noise_text = "".join(chr(rnd.choice([rnd.randrange(0x21, 0x7F), rnd.randrange(0xA0, 0x2FF)])) for _ in range(290))
    noise = rnd.randbytes(190)
    out: list[tuple[Any, ...]] = [(first_id, *[None] * 8), (first_id + 1, *[""] * 2, *[""] * 6)]
    out.append((first_id + 2, "x", b"y", "z", "ä", b"\0", "w", b"\xff", "∆"))
    out.append((first_id + 3, "äöü €", b"\x00\x01", "kurz ∑", "café", b"ab", "Ab1 ø", b"\x80\x81", "π≈3"))
    long_text = "compress me " * 24
    out.append((first_id + 4, long_text * 40, long_text.encode() * 50, long_text[:290] + "ä",
                long_text[:99] + "é", long_text.encode()[:200], long_text[:200], long_text.encode() * 9000,
                "∆˚ø¨ " * 3000))
    latin = "".join(c for c in noise_text if c < "\u0100")[:100]
    out.append((first_id + 5, noise_text * 3, noise * 50, noise_text, latin, noise, noise_text[:60], noise * 700,
                noise_text * 30))
    return out


def select(conn: Any, table: str) -> dict[int, dict[str, Any]]:
    with conn.cursor(pymysql.cursors.DictCursor) as cur:
        cur.execute(f"SELECT * FROM {table}")
        return {row["id"]: row for row in cur.fetchall()}


def workload(server: MariaDB) -> tuple[str, str, list[dict[int, dict[str, Any]]]]:
    """(table, position before its rows, the table as SELECT shows it after the inserts, the update and the
    delete)."""
    table = table_name("colcomp")
    conn = server.root_connect("dbus_test")
    try:
        execute(conn, f"CREATE TABLE {table} (id INT PRIMARY KEY, {COLUMNS})")
        start = position(conn)
        insert = f"INSERT INTO {table} VALUES ({', '.join(['%s'] * 9)})"
        with conn.cursor() as cur:  # the defaults: no zlib wrapper, values under 100 bytes stored as they are
            cur.executemany(insert, rows(1))
        execute(conn, "SET SESSION column_compression_zlib_wrap = ON", "SET SESSION column_compression_threshold = 0")
        with conn.cursor() as cur:
            cur.executemany(insert, rows(11))
        states = [select(conn, table)]
        execute(conn, f"UPDATE {table} SET t = CONCAT(t, '!'), b = CONCAT(b, 'b'), v1 = 'neu' WHERE id % 2 = 0")
        states.append(select(conn, table))
        execute(conn, f"DELETE FROM {table} WHERE id IN (3, 15)")
        states.append(select(conn, table))
    finally:
        conn.close()
    assert len(states[0]) == 12 and states[0][5]["mb"] == rows(1)[4][7]  # the server holds the values
    return table, start, states


def changes(server: MariaDB, table: str, server_id: int, **options: Any) -> list[Any]:
    src = MysqlSource("colcomp", MysqlOptions(dsn=server.dsn, server_id=server_id, include=[f"dbus_test.{table}"],
                                              **options))
    src.open(None)
    try:
        return [c for b in drain(src) for c in b.changes()]
    finally:
        src.close()


def check_stream(got: list[Any], states: list[dict[int, dict[str, Any]]]) -> None:
    inserted, updated, deleted = states
    assert [(c.op, c.after) for c in got if c.op == "insert"] == [("insert", r) for r in inserted.values()]
    assert [(c.before, c.after) for c in got if c.op == "update"] == [
        (inserted[i], updated[i]) for i in sorted(inserted) if i % 2 == 0]
    assert [c.before for c in got if c.op == "delete"] == [updated[3], updated[15]]
    assert [c.op for c in got] == ["insert"] * 12 + ["update"] * 6 + ["delete"] * 2


def test_compressed_columns_from_the_binlog_equal_select(mariadb: MariaDB) -> None:
    table, start, states = workload(mariadb)
    began = time.monotonic()
    check_stream(changes(mariadb, table, 7501, start=start), states)
    print(f"binlog: 20 changes in {time.monotonic() - began:.1f} s")


def test_compressed_columns_from_a_compressed_binlog_equal_select(compressed: MariaDB) -> None:
    table, start, states = workload(compressed)
    check_stream(changes(compressed, table, 7502, start=start), states)


def test_compressed_columns_from_a_snapshot_equal_select(mariadb: MariaDB) -> None:
    table, _, states = workload(mariadb)
    got = [c for c in changes(mariadb, table, 7503, snapshot="initial") if c.op == "read"]
    assert {c.after["id"]: c.after for c in got} == states[2]
