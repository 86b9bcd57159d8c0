"""A backfill chunk is read in a consistent snapshot at or after the binlog the stream has read: a transaction
is in the binlog (and may be handed out by the stream) before the engine commits it, so a snapshot taken in
between does not see it, and its read, emitted after that change, would set the row back. Such a snapshot is
let go and taken again (a fake connection stands in for the server)."""

from __future__ import annotations

from collections import deque
from typing import Any

import pytest

from dbus_ray.errors import DbusError
from dbus_ray.mysql.snapshot import backfill
from dbus_ray.mysql.snapshot.backfill import Backfill


class Cursor:
    def __init__(self, conn: Conn) -> None:
        self.conn = conn
        self.result: list[tuple[Any, ...]] = []

    def __enter__(self) -> Cursor:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass

    def execute(self, sql: str, args: Any = None) -> None:
        self.conn.log.append(sql.split()[0])
        if sql.startswith("SHOW STATUS"):
            file, pos = self.conn.positions.popleft()
            self.result = [("binlog_snapshot_file", file), ("binlog_snapshot_position", pos)]
        elif sql.startswith("SELECT"):
            self.result = [(1, "row")]

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self.result


class Conn:
    def __init__(self, positions: list[tuple[str, int]]) -> None:
        self.positions = deque(positions)
        self.log: list[str] = []

    def cursor(self) -> Cursor:
        return Cursor(self)


@pytest.fixture(autouse=True)
def rows_of_the_fake(monkeypatch: pytest.MonkeyPatch) -> None:
    """The chunk's SELECT, which `text_rows.fetch` reads from the socket, from the fake connection."""

    def fetch(conn: Conn, sql: str, args: Any = None) -> list[tuple[Any, ...]]:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall()

    monkeypatch.setattr(backfill, "fetch", fetch)


def backfill_over(conn: Conn) -> Backfill:
    b = Backfill(None, "p", deque())  # type: ignore[arg-type]
    b.conn = conn
    return b


def test_a_snapshot_behind_the_stream_is_taken_again() -> None:
    conn = Conn([("binlog.000002", 900), ("binlog.000002", 1500), ("binlog.000003", 4)])
    rows, at = backfill_over(conn)._read_chunk(None, "SELECT 1", [], ("binlog.000002", 1600))  # type: ignore[arg-type]
    assert at == ("binlog.000003", 4) and rows == [(1, "row")]
    # two snapshots let go without reading, the third one read
    assert conn.log == ["START", "SHOW", "COMMIT"] * 2 + ["START", "SHOW", "SELECT", "COMMIT"]


def test_a_snapshot_at_the_streams_position_is_read() -> None:
    conn = Conn([("binlog.000002", 1600)])
    rows, at = backfill_over(conn)._read_chunk(None, "SELECT 1", [], ("binlog.000002", 1600))  # type: ignore[arg-type]
    assert at == ("binlog.000002", 1600) and conn.log == ["START", "SHOW", "SELECT", "COMMIT"]


def test_a_snapshot_that_stays_behind_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backfill, "SNAPSHOT_BEHIND_STREAM_S", 0.02)
    conn = Conn([("binlog.000002", 900)] * 1000)

    class T:
        name = "db.t"

    with pytest.raises(DbusError) as err:
        backfill_over(conn)._read_chunk(T(), "SELECT 1", [], ("binlog.000002", 1600))  # type: ignore[arg-type]
    assert str(err.value) == ("backfill of db.t: the server's consistent snapshot stays at binlog.000002:900, "
                              "behind the binlog the stream has read (binlog.000002:1600), for 0 s")
