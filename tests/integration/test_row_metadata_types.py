"""Signedness and character sets of the `mysql` source's columns when TABLE_MAP events carry no column names,
against a real MariaDB: with binlog_row_metadata=MINIMAL the event still carries them (SIGNEDNESS,
DEFAULT_CHARSET / COLUMN_CHARSET), with NO_LOG they come from information_schema where it describes the rows,
and a row whose column types nothing describes is refused with one line (never decoded as signed / UTF-8).
The oracle is the server: each value is compared with its own `CAST(col AS CHAR)` / `HEX(col)`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dbus_ray.checkpoints import FileCheckpointStore
from dbus_ray.devstack import MariaDB
from dbus_ray.errors import DbusError
from dbus_ray.mysql.source import MysqlOptions, MysqlSource
from tests.support.helpers import drain, execute, position, table_name

pytestmark = pytest.mark.integration

DB = "dbus_test"

COLUMNS = (
    "id INT PRIMARY KEY, u32 INT UNSIGNED, u64 BIGINT UNSIGNED, u8 TINYINT UNSIGNED, s32 INT, "
    "vb VARBINARY(16), b4 BINARY(4), l1 VARCHAR(16) CHARACTER SET latin1, u8mb4 VARCHAR(16) CHARACTER SET utf8mb4, "
    "bl BLOB"
)
INTS = ("u32", "u64", "u8", "s32")
BINARY = ("vb", "b4", "bl")
TEXT = ("l1", "u8mb4")
ROWS = (
    # the extremes: a signed read gives -1 / -1 / -1; non-UTF-8 bytes
    "(1, 4294967295, 18446744073709551615, 255, -1, UNHEX('00FF01'), UNHEX('00FF'), 'é', 'é€😀', UNHEX('00FF80'))",
    # a signed read gives negatives; the bytes are valid UTF-8, so a UTF-8 read would not even fail: 'Ã©' in
    # latin1 is C3 A9, UTF-8 'é'
    "(2, 2147483648, 9223372036854775808, 128, -2147483648, UNHEX('C3A9'), UNHEX('C3A9C3A9'), 'Ã©', 'x', "
    "UNHEX('C3A9'))",
    "(3, 0, 0, 0, 2147483647, '', UNHEX(''), '', '', '')",
    "(4, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)",
)


@pytest.fixture(scope="module")
def server() -> Iterator[MariaDB]:
    """This module's own MariaDB (its tests switch binlog_row_metadata; the session's stays FULL)."""
    server = MariaDB().start()
    try:
        yield server
    finally:
        server.stop()


def metadata(server: MariaDB, level: str) -> None:
    conn = server.root_connect()
    try:
        execute(conn, f"SET GLOBAL binlog_row_metadata = '{level}'")
    finally:
        conn.close()


@pytest.fixture()
def db(server: MariaDB) -> Iterator[Any]:
    conn = server.root_connect(DB, autocommit=True)
    yield conn
    conn.close()


def source(server: MariaDB, t: str, start: str = "latest") -> MysqlSource:
    return MysqlSource("row-metadata-test", MysqlOptions(dsn=server.dsn, server_id=7411, start=start,
                                                         include=[f"{DB}.{t}"], schema_history=True))


def oracle(db: Any, t: str) -> dict[int, dict[str, Any]]:
    """Each row as the server shows it: integers and text by CAST(col AS CHAR), bytes by HEX(col)."""
    casts = ", ".join(f"CAST({c} AS CHAR)" for c in INTS + TEXT)
    hexes = ", ".join(f"HEX({c})" for c in BINARY)
    with db.cursor() as cur:
        cur.execute(f"SELECT id, {casts}, {hexes} FROM {t} ORDER BY id")
        rows = cur.fetchall()
    out = {}
    for row in rows:
        ints = [None if v is None else int(v) for v in row[1 : 1 + len(INTS)]]
        text = list(row[1 + len(INTS) : 1 + len(INTS) + len(TEXT)])
        raw = [None if v is None else bytes.fromhex(v) for v in row[1 + len(INTS) + len(TEXT) :]]
        out[row[0]] = dict(zip(INTS + TEXT + BINARY, ints + text + raw))
    return out


def decoded(src: MysqlSource, checkpoint: dict[str, Any] | None = None) -> dict[int, dict[str, Any]]:
    src.open(checkpoint)
    try:
        changes = [c for b in drain(src) for c in b.changes() if c.op == "insert"]
    finally:
        src.close()
    return {c.after["id"]: {k: v for k, v in c.after.items() if k != "id"} for c in changes}


def write_rows(db: Any, t: str) -> str:
    execute(db, f"CREATE TABLE {t} ({COLUMNS})")
    start = position(db)
    execute(db, *(f"INSERT INTO {t} VALUES {row}" for row in ROWS))
    return start


def assert_exact(got: dict[int, dict[str, Any]], want: dict[int, dict[str, Any]]) -> None:
    assert sorted(got) == sorted(want)
    for i, row in want.items():
        for col, value in row.items():
            assert got[i][col] == value and type(got[i][col]) is type(value), (i, col, got[i][col], value)


@pytest.mark.parametrize("level", ["MINIMAL", "NO_LOG"])
def test_values_are_the_servers(server: MariaDB, db: Any, level: str) -> None:
    """MINIMAL: signedness and charsets from the event's optional metadata; NO_LOG: from information_schema
    (no DDL on the table after the rows)."""
    metadata(server, level)
    try:
        t = table_name(f"rowmeta_{level.lower()}")
        start = write_rows(db, t)
    finally:
        metadata(server, "MINIMAL")
    want = oracle(db, t)
    assert want[1]["u64"] == 18446744073709551615 and want[2]["l1"] == "Ã©"  # the server's own text
    assert_exact(decoded(source(server, t, start)), want)


def test_no_log_after_a_later_ddl_is_refused(server: MariaDB, db: Any) -> None:
    """NO_LOG, read from before an ALTER: information_schema (the table after it) does not describe the rows,
    so the source refuses them with one line."""
    metadata(server, "NO_LOG")
    try:
        t = table_name("rowmeta_ddl")
        start = write_rows(db, t)
        execute(db, f"ALTER TABLE {t} ADD COLUMN extra INT")
    finally:
        metadata(server, "MINIMAL")
    src = source(server, t, start)
    src.open(None)
    try:
        with pytest.raises(DbusError) as err:
            drain(src)
    finally:
        src.close()
    assert "\n" not in str(err.value)
    assert f"{DB}.{t}" in str(err.value)


def test_no_log_with_the_schema_history(server: MariaDB, db: Any, tmp_path: Path) -> None:
    """NO_LOG, resumed from a checkpoint whose schema history names the columns: the column types come from
    information_schema while it still describes the rows; after a later DDL (the history holds names only)
    the rows are refused with one line naming the table, the column, the position and the fix."""
    metadata(server, "NO_LOG")
    try:
        t = table_name("rowmeta_hist")
        execute(db, f"CREATE TABLE {t} ({COLUMNS})")
        src = source(server, t)
        src.open(None)
        store = FileCheckpointStore(tmp_path)
        try:
            execute(db, f"INSERT INTO {t} VALUES {ROWS[2]}")  # read live: the history records the names
            for _ in range(50):
                batch = src.poll(100, 1)
                if batch is not None and batch.num_rows:
                    break
            store.save(src.checkpoint())
        finally:
            src.close()
        checkpoint = store.load()
        assert checkpoint is not None and checkpoint.get("schema_history"), checkpoint
        execute(db, *(f"INSERT INTO {t} VALUES {row}" for row in (ROWS[0], ROWS[1], ROWS[3])))
    finally:
        metadata(server, "MINIMAL")
    want = oracle(db, t)
    del want[3]
    assert_exact(decoded(source(server, t), checkpoint), want)

    metadata(server, "NO_LOG")
    try:
        execute(db, f"ALTER TABLE {t} ADD COLUMN extra INT")  # information_schema no longer describes the rows
    finally:
        metadata(server, "MINIMAL")
    src = source(server, t)
    src.open(checkpoint)
    try:
        with pytest.raises(DbusError) as err:
            drain(src)
    finally:
        src.close()
    message = str(err.value)
    assert message == (
        f"binlog {checkpoint['file']}:{message.split(':')[1]}: the TABLE_MAP event of {DB}.{t} does not carry the "
        "signedness of column id (binlog_row_metadata=NO_LOG, or a server without it) and information_schema does "
        "not describe the table at this position (it has 11 columns now, not 10): set binlog_row_metadata=FULL or "
        "MINIMAL on the server, or restart the pipeline from a snapshot")
