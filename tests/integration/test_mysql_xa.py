"""XA transactions through the `mysql` source against the session's MariaDB: the rows of an XA transaction
arrive when it commits (with the XA COMMIT's position and GTID), never while it is only prepared, and not
at all when it is rolled back; `XA COMMIT ... ONE PHASE` is an ordinary transaction; a prepared transaction
survives a restart of the source (in process, from any batch's checkpoint) and of a pipeline (`dbus run`
twice), its rows delivered exactly once after the COMMIT. Expected rows come from the server's SELECT and
SHOW BINLOG EVENTS."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest
import yaml
from typer.testing import CliRunner

from dbus_ray.cli import app
from dbus_ray.devstack import MariaDB
from dbus_ray.errors import DbusError
from dbus_ray.mysql import xa
from dbus_ray.mysql.source import MysqlOptions, MysqlSource
from tests.support.helpers import drain, execute, position, table_name

pytestmark = pytest.mark.integration


def select(conn: Any, table: str) -> dict[int, dict[str, Any]]:
    with conn.cursor(pymysql.cursors.DictCursor) as cur:
        cur.execute(f"SELECT * FROM {table}")
        return {row["id"]: row for row in cur.fetchall()}


def replay(rows: dict[int, dict[str, Any]], changes: list[Any]) -> dict[int, dict[str, Any]]:
    """The table after applying `changes` (each checked against the row it changes)."""
    for c in changes:
        if c.op == "insert":
            assert c.after["id"] not in rows, c
            rows[c.after["id"]] = c.after
        elif c.op == "update":
            assert rows[c.before["id"]] == c.before, c
            del rows[c.before["id"]]
            rows[c.after["id"]] = c.after
        else:
            assert rows.pop(c.before["id"]) == c.before, c
    return rows


def session(server: MariaDB) -> Any:
    return server.root_connect()


@pytest.fixture(autouse=True)
def no_prepared_left(mariadb: MariaDB) -> Iterator[None]:
    """A prepared XA transaction outlives its connection: one a failed test left would put XA marks in the
    checkpoint of every later test on the session's server. Roll back what a test here left prepared."""
    yield
    admin = session(mariadb)
    try:
        with admin.cursor() as cur:
            cur.execute("XA RECOVER")
            for format_id, glen, blen, data in cur.fetchall():
                raw = data if isinstance(data, bytes) else str(data).encode("utf-8", "surrogateescape")
                cur.execute(f"XA ROLLBACK {xa.format_xid(int(format_id), raw[:glen], raw[glen:glen + blen])}")
    finally:
        admin.close()


def xa_prepare(conn: Any, xid: str, *statements: str) -> None:
    execute(conn, f"XA START '{xid}'", *statements, f"XA END '{xid}'", f"XA PREPARE '{xid}'")


def open_source(server: MariaDB, start: str | None, db: str, checkpoint: dict[str, Any] | None = None,
                server_id: int = 7401) -> MysqlSource:
    src = MysqlSource("xa", MysqlOptions(dsn=server.dsn, server_id=server_id, start=start or "latest",
                                         include=[f"{db}.*"]))
    src.open(checkpoint)
    return src


def changes_of(batches: list[Any]) -> list[Any]:
    return [c for b in batches for c in b.changes()]


def take(src: MysqlSource, n: int, timeout: float = 60.0) -> list[Any]:
    """Poll until `n` row changes came (more in the same batches count too), then until caught up."""
    got: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(got) < n:
        assert time.monotonic() < deadline, f"{len(got)} of {n} row changes came: {got}"
        batch = src.poll(1000, 1)
        if batch is not None:
            got += batch.changes()
    return got + changes_of(drain(src))


def last_event(conn: Any, kind: str, info: str) -> tuple[str, int]:
    """(file, position) of the last binlog event of type `kind` whose info starts with `info`."""
    with conn.cursor() as cur:
        cur.execute("SHOW MASTER STATUS")
        file = cur.fetchone()[0]
        cur.execute(f"SHOW BINLOG EVENTS IN '{file}'")
        found = [r for r in cur.fetchall() if r[2] == kind and str(r[5]).startswith(info)]
    assert found, (kind, info)
    return file, int(found[-1][1])


def gtid_now(conn: Any) -> str:
    with conn.cursor() as cur:
        cur.execute("SELECT @@GLOBAL.gtid_binlog_pos")
        return str(cur.fetchone()[0])


def test_prepared_rows_arrive_at_commit_and_never_on_rollback(mariadb: MariaDB) -> None:
    db = table_name("xa")
    t = f"{db}.t"
    admin = session(mariadb)
    execute(admin, f"CREATE DATABASE {db}", f"CREATE TABLE {t} (id INT PRIMARY KEY, v VARCHAR(20))",
            f"INSERT INTO {t} VALUES (10, 'ten'), (11, 'eleven')")
    start = position(admin)
    src = open_source(mariadb, start, db)
    a, b, c = session(mariadb), session(mariadb), session(mariadb)
    mirror = select(admin, t)  # the table as the delivered changes rebuild it
    try:
        xa_prepare(a, "a", f"INSERT INTO {t} VALUES (1, 'a-one'), (2, 'a-two')",
                   f"UPDATE {t} SET v = 'a' WHERE id = 10")
        execute(b, f"INSERT INTO {t} VALUES (3, 'plain')")
        xa_prepare(c, "b", f"INSERT INTO {t} VALUES (4, 'rolled-back')", f"DELETE FROM {t} WHERE id = 11")
        got = take(src, 1)
        assert [(x.op, x.after["id"]) for x in got] == [("insert", 3)]  # only the ordinary transaction
        assert replay(mirror, got) == select(admin, t)

        execute(a, "XA COMMIT 'a'")
        commit_at = last_event(admin, "Query", "XA COMMIT")
        commit_gtid = gtid_now(admin)
        got = take(src, 3)
        assert [(x.op, x.key) for x in got] == [("insert", {"id": 1}), ("insert", {"id": 2}), ("update", {"id": 10})]
        assert {(x.position.file, x.position.offset, x.position.gtid, x.txid) for x in got} == {
            (*commit_at, commit_gtid, commit_gtid)}
        assert [x.position.index for x in got] == [0, 1, 2]
        assert replay(mirror, got) == select(admin, t)

        execute(c, "XA ROLLBACK 'b'")
        execute(b, f"INSERT INTO {t} VALUES (5, 'after')")
        got = take(src, 1)
        assert [(x.op, x.after["id"]) for x in got] == [("insert", 5)]
        assert replay(mirror, got) == select(admin, t)

        execute(a, "XA START 'c'", f"INSERT INTO {t} VALUES (6, 'one-phase')", "XA END 'c'",
                "XA COMMIT 'c' ONE PHASE")
        got = take(src, 1)
        assert [(x.op, x.after["id"]) for x in got] == [("insert", 6)]
        assert replay(mirror, got) == select(admin, t)
        assert set(mirror) == {1, 2, 3, 5, 6, 10, 11}  # 4 and the delete of 11 were rolled back
        assert src.checkpoint().get("xa") is None  # nothing prepared any more
    finally:
        src.close()
        for conn in (a, b, c, admin):
            conn.close()


def test_a_prepared_transaction_survives_a_restart_from_every_checkpoint(mariadb: MariaDB) -> None:
    """One row per batch; the source is restarted from the checkpoint of each batch in turn (before, during
    and after the prepared window, and in the middle of the commit's rows): each restart delivers exactly
    the rows after that batch."""
    db = table_name("xa_r")
    t = f"{db}.t"
    admin = session(mariadb)
    execute(admin, f"CREATE DATABASE {db}", f"CREATE TABLE {t} (id INT PRIMARY KEY, v VARCHAR(20))")
    start = position(admin)
    x, y = session(mariadb), session(mariadb)
    try:
        execute(y, f"INSERT INTO {t} VALUES (1, 'before')")
        xa_prepare(x, "r1", f"INSERT INTO {t} VALUES (2, 'xa'), (3, 'xa'), (4, 'xa')")
        execute(y, f"INSERT INTO {t} VALUES (5, 'while-prepared')", "FLUSH BINARY LOGS")  # another file
        xa_prepare(y, "r2", f"INSERT INTO {t} VALUES (6, 'rolled-back')")
        execute(admin, f"INSERT INTO {t} VALUES (7, 'while-prepared')")
        execute(x, "XA COMMIT 'r1'")
        execute(y, "XA ROLLBACK 'r2'")
        execute(admin, f"INSERT INTO {t} VALUES (8, 'after')")
        final = select(admin, t)
    finally:
        x.close()
        y.close()
    src = open_source(mariadb, start, db)
    try:
        batches = drain(src, max_rows=1)
    finally:
        src.close()
    whole = [(c.op, c.after["id"]) for c in changes_of(batches)]
    assert whole == [("insert", i) for i in (1, 5, 7, 2, 3, 4, 8)]
    assert replay({}, changes_of(batches)) == final
    r1, r2 = xa.format_xid(1, b"r1", b""), xa.format_xid(1, b"r2", b"")
    # prepared at each batch's position: r1 after row 5 and until its commit is wholly delivered (rows 2 and 3
    # leave the checkpoint inside the commit, skip 1 and 2), r2 from after row 7 until its rollback
    assert [sorted(b.checkpoint.get("xa") or ()) for b in batches] == [
        [], [r1], [r1, r2], [r1, r2], [r1, r2], [r2], []]
    for k, batch in enumerate(batches):
        src = open_source(mariadb, None, db, batch.checkpoint)
        try:
            rest = [(c.op, c.after["id"]) for c in changes_of(drain(src, max_rows=2))]
        finally:
            src.close()
        assert rest == whole[k + 1:], (k, batch.checkpoint)
    admin.close()


@pytest.mark.parametrize("snapshot", ["never", "initial"])
def test_a_transaction_prepared_before_the_start_is_delivered_at_its_commit(mariadb: MariaDB, snapshot: str) -> None:
    """`start: latest`, or a snapshot (which cannot see the prepared rows): the stream starts after the PREPARE;
    the XA COMMIT after it delivers the rows."""
    db = table_name("xa_s")
    t = f"{db}.t"
    admin, x = session(mariadb), session(mariadb)
    execute(admin, f"CREATE DATABASE {db}", f"CREATE TABLE {t} (id INT PRIMARY KEY, v VARCHAR(20))",
            f"INSERT INTO {t} VALUES (1, 'before')")
    try:
        xa_prepare(x, "early", f"INSERT INTO {t} VALUES (2, 'xa')", f"UPDATE {t} SET v = 'xa' WHERE id = 1")
        execute(admin, f"INSERT INTO {t} VALUES (3, 'plain')")
        src = MysqlSource("xa", MysqlOptions(dsn=mariadb.dsn, server_id=7403, start="latest", include=[f"{db}.*"],
                                             snapshot=snapshot))
        src.open(None)
        try:
            mirror = select(admin, t)  # the prepared rows are not in it
            first = take(src, 2 if snapshot == "initial" else 0)
            if snapshot == "initial":
                assert {c.after["id"]: c.after for c in first if c.op == "read"} == mirror
            assert [c for c in first if c.op in ("insert", "update", "delete")] == []  # (snapshot: ddl markers)
            execute(x, "XA COMMIT 'early'")
            got = take(src, 2)
        finally:
            src.close()
        assert [(c.op, c.after["id"]) for c in got] == [("insert", 2), ("update", 1)]
        assert replay(mirror, got) == select(admin, t)
    finally:
        x.close()
        admin.close()


def test_restart_of_a_pipeline_between_prepare_and_commit(mariadb: MariaDB, ray_session: None,
                                                          tmp_path: Path) -> None:
    db = table_name("xa_p")
    t = f"{db}.t"
    admin = session(mariadb)
    execute(admin, f"CREATE DATABASE {db}", f"CREATE TABLE {t} (id INT PRIMARY KEY, v VARCHAR(20))")
    start = position(admin)
    out = tmp_path / "out.jsonl"
    config = {"name": "xa-restart", "data_dir": str(tmp_path / "data"),
              "source": {"type": "mysql", "dsn": mariadb.dsn, "server_id": 7402, "start": start,
                         "include": [f"{db}.*"]},
              "sinks": [{"name": "out", "type": "jsonl", "path": str(out)}]}
    path = tmp_path / "xa-restart.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    x = session(mariadb)

    def run() -> list[tuple[str, int]]:
        result = CliRunner().invoke(app, ["run", str(path), "--until-caught-up"])
        assert result.exit_code == 0, result.output
        return [(r["op"], r["after"]["id"]) for r in map(json.loads, out.read_text().splitlines())]

    try:
        xa_prepare(x, "p1", f"INSERT INTO {t} VALUES (1, 'xa')")
        execute(admin, f"INSERT INTO {t} VALUES (2, 'plain')")
        assert run() == [("insert", 2)]  # prepared only: not delivered
        execute(x, "XA COMMIT 'p1'")
        execute(admin, f"INSERT INTO {t} VALUES (3, 'after')")
        assert run() == [("insert", 2), ("insert", 1), ("insert", 3)]  # exactly once, after the commit
        assert run() == [("insert", 2), ("insert", 1), ("insert", 3)]  # a third run has nothing to add
    finally:
        x.close()
        admin.close()


def test_prepared_rows_over_the_limit_stop_the_source_with_one_line(mariadb: MariaDB,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(xa, "MAX_PREPARED_ROWS", 5)
    db = table_name("xa_big")
    admin = session(mariadb)
    execute(admin, f"CREATE DATABASE {db}", f"CREATE TABLE {db}.t (id INT PRIMARY KEY)")
    start = position(admin)
    x = session(mariadb)
    try:
        xa_prepare(x, "big", f"INSERT INTO {db}.t SELECT seq FROM {db}.seq_1_to_8")
        src = open_source(mariadb, start, db)
        try:
            with pytest.raises(DbusError) as err:
                drain(src)
        finally:
            src.close()
        execute(x, "XA ROLLBACK 'big'")
    finally:
        x.close()
        admin.close()
    message = str(err.value)
    assert "\n" not in message
    assert "prepared XA transactions hold more than 5 rows" in message and "XA RECOVER" in message



def test_a_commit_whose_prepared_rows_were_not_read_stops_the_source_with_one_line(
        mariadb: MariaDB, monkeypatch: pytest.MonkeyPatch) -> None:
    """XA RECOVER refused (as MySQL 8 refuses it without XA_RECOVER_ADMIN; MariaDB answers any user, so the
    refusal is made here): the stream cannot read the group of a transaction prepared before its start, and
    that transaction's XA COMMIT stops it with one line naming the commit's position (the server's own SHOW
    BINLOG EVENTS), after the row before it; the committed rows are neither delivered nor skipped."""
    def refused(*_args: Any) -> Any:
        raise pymysql.err.OperationalError(1227, "Access denied; you need the XA_RECOVER_ADMIN privilege")

    monkeypatch.setattr(xa, "prepared_before", refused)
    db = table_name("xa_unread")
    admin, x = session(mariadb), session(mariadb)
    try:
        execute(admin, f"CREATE DATABASE {db}", f"CREATE TABLE {db}.t (id INT PRIMARY KEY)")
        xa_prepare(x, "unread", f"INSERT INTO {db}.t VALUES (1)")
        src = open_source(mariadb, "latest", db)
        try:
            execute(admin, f"INSERT INTO {db}.t VALUES (2)")
            execute(x, "XA COMMIT 'unread'")
            execute(admin, f"INSERT INTO {db}.t VALUES (3)")
            file, at = last_event(admin, "Query", "XA COMMIT")
            got: list[Any] = []
            with pytest.raises(DbusError) as err:
                for _ in range(100):
                    batch = src.poll(1000, 1)
                    got += batch.changes() if batch is not None else []
        finally:
            src.close()
    finally:
        x.close()
        admin.close()
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"binlog {file}:{at}: XA COMMIT X'756e72656164',X'',1 of a transaction prepared "
                              "before the stream's start whose rows it did not read"), message
    assert [(c.op, c.after["id"]) for c in got] == [("insert", 2)]
