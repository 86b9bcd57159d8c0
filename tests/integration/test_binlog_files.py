"""The `binlog_files` source against binlog files of the session's MariaDB (FLUSH BINARY LOGS, then the closed
files copied to a directory): the same rows as the `mysql` source over the same range and as SELECT, resume
from every checkpoint, following a growing file and the next files, files written without column names
(binlog_row_metadata=MINIMAL) with and without `dsn`, and the one-line errors of bad input."""

from __future__ import annotations

import json
import os
import shutil
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest
import yaml

from dbus_ray.devstack import MariaDB
from dbus_ray.errors import DbusError
from dbus_ray.mysql.source import MysqlOptions, MysqlSource
from dbus_ray.sources.binlog_files import BinlogFilesOptions, BinlogFilesSource
from tests.integration.test_mysql_source import select_json
from tests.support.helpers import drain, execute, table_name, wait_for
from tests.support.mysql_types import TYPE_ROWS, create_type_table

pytestmark = pytest.mark.integration


def _status(conn: Any) -> tuple[str, int]:
    with conn.cursor() as cur:
        cur.execute("SHOW MASTER STATUS")
        file, pos = cur.fetchone()[:2]
    return file, int(pos)


def _select(conn: Any, t: str) -> list[dict[str, Any]]:
    with conn.cursor(pymysql.cursors.DictCursor) as cur:
        cur.execute(f"SELECT * FROM {t} ORDER BY id")
        return list(cur.fetchall())


def flush(conn: Any) -> str:
    """FLUSH BINARY LOGS; the new file's name."""
    execute(conn, "FLUSH BINARY LOGS")
    return _status(conn)[0]


def copy_files(mariadb: Any, first: str, last: str, to: Path) -> list[Path]:
    """Copy the server's binlog files `first` .. `last` (closed ones) to `to`."""
    to.mkdir(parents=True, exist_ok=True)
    lo, hi = int(first.rsplit(".", 1)[1]), int(last.rsplit(".", 1)[1])
    out = []
    for i in range(lo, hi + 1):
        name = f"{first.rsplit('.', 1)[0]}.{i:06d}"
        out.append(Path(shutil.copy(os.path.join(mariadb.datadir, name), to / name)))
    return out


def files_source(files: Any, **options: Any) -> BinlogFilesSource:
    return BinlogFilesSource("files-test", BinlogFilesOptions(files=str(files), **options))


def rows_of(batches: list[Any], tables: tuple[str, ...]) -> list[dict[str, Any]]:
    """The row changes of `tables` as JSON, without `read_ts` (when they were read)."""
    out = [json.loads(c.to_json()) for b in batches for c in b.changes() if c.table in tables]
    for r in out:
        r.pop("read_ts")
    return out


def read_files(files: Any, tables: tuple[str, ...], checkpoint: dict[str, Any] | None = None,
               **options: Any) -> list[dict[str, Any]]:
    src = files_source(files, **options)
    src.open(checkpoint)
    try:
        return rows_of(drain(src), tables)
    finally:
        src.close()


@pytest.fixture(scope="module")
def archive(mariadb: Any, tmp_path_factory: Any) -> dict[str, Any]:
    """Three closed binlog files holding the type table's inserts, a transaction of several tables with
    multi-row events, updates, deletes and an ALTER; copied to a directory. Also the final SELECT."""
    conn = mariadb.root_connect("dbus_test")
    execute(conn, "SET time_zone = '+00:00'")
    t, other = table_name("files_types"), table_name("files_other")
    first = flush(conn)
    create_type_table(conn, t)
    execute(conn, "SET SESSION sql_mode = DEFAULT", f"CREATE TABLE {other} (id INT PRIMARY KEY, v VARCHAR(20))")
    flush(conn)
    execute(conn, "BEGIN")
    for i in range(0, 40, 4):
        execute(conn, f"INSERT INTO {other} VALUES ({i}, 'a'), ({i + 1}, 'b'), ({i + 2}, 'c'), ({i + 3}, 'd')")
        execute(conn, f"UPDATE {t} SET i = i + 1 WHERE id = 1" if i == 8 else "DO 0")
    execute(conn, "COMMIT", f"UPDATE {other} SET v = 'e' WHERE id < 10", f"DELETE FROM {t} WHERE id = 3")
    last = flush(conn)
    execute(conn, f"ALTER TABLE {other} ADD COLUMN w INT DEFAULT 7 AFTER id",
            f"INSERT INTO {other} VALUES (100, 1, 'z')", f"UPDATE {other} SET w = 2 WHERE id = 0")
    end = _status(conn)
    tail = flush(conn)
    closed = f"{last.rsplit('.', 1)[0]}.{int(last.rsplit('.', 1)[1]):06d}"
    directory = tmp_path_factory.mktemp("binlogs") / "archive"
    paths = copy_files(mariadb, first, closed, directory)
    out = {"dir": directory, "paths": paths, "first": first, "end": end, "tail": tail, "types": t, "other": other,
           "select_types": select_json(conn, t), "select_other": _select(conn, other)}
    conn.close()
    return out


def test_same_rows_as_the_mysql_source_and_select(mariadb: Any, archive: dict[str, Any]) -> None:
    tables = (archive["types"], archive["other"])
    got = read_files(archive["dir"], tables)
    src = MysqlSource("files-mysql", MysqlOptions(dsn=mariadb.dsn, server_id=7101, start=f"{archive['first']}:4"))
    src.open(None)
    try:
        live = [r for r in rows_of(drain(src), tables)
                if (r["pos"]["file"], r["pos"]["offset"]) < archive["end"]]
    finally:
        src.close()
    ops = [r["op"] for r in got]
    # inserts of TYPE_ROWS, 40 inserts + 1 update in the transaction, 10 updates, 1 delete, the ALTER (a ddl
    # row), 1 insert, 1 update
    assert ops.count("insert") == len(TYPE_ROWS) + 40 + 1 and ops.count("update") == 1 + 10 + 1
    assert ops.count("delete") == 1 and ops.count("ddl") == 3  # the two CREATE TABLEs and the ALTER
    # position, gtid, txid, values: row for row; a DDL row's `change` holds the table's definition only with `dsn`
    def plain(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{**r, "pipeline": None, "after": {**r["after"], "change": None} if r["op"] == "ddl" else r["after"]}
                for r in rows]

    a, b = plain(got), plain(live)
    for x, y in zip(a, b):
        assert x == y, {k: (x[k], y.get(k)) for k in x if x[k] != y.get(k)}
    assert len(a) == len(b)
    assert [json.loads(r["after"]["change"]) for r in got if r["op"] == "ddl"] == [{"type": "CREATE"}] * 2 + [
        {"type": "ALTER"}]
    with_dsn = read_files(archive["dir"], tables, dsn=mariadb.dsn)
    assert [{**r, "pipeline": None} for r in with_dsn] == [
        {**r, "pipeline": None} for r in live]
    # the rows applied in order give what SELECT returns now
    for table, expected in ((archive["types"], archive["select_types"]), (archive["other"], archive["select_other"])):
        state: dict[Any, Any] = {}
        for r in got:
            if r["table"] != table or r["op"] == "ddl":
                continue
            if r["op"] == "delete":
                del state[r["key"]["id"]]
            else:
                state[r["after"]["id"]] = r["after"]
        if table == archive["types"]:
            assert [state[k] for k in sorted(state)] == expected
        else:  # rows not written since the ALTER have no `w` in the binlog
            assert sorted(state) == [r["id"] for r in expected]
            assert all(state[r["id"]] == {k: r[k] for k in state[r["id"]]} for r in expected)
            assert state[0]["w"] == 2 and state[100] == {"id": 100, "w": 1, "v": "z"}
    glob_rows = read_files(str(archive["dir"] / "binlog.*"), tables)  # a glob reads the same
    assert glob_rows == got


def test_resume_from_every_checkpoint_neither_loses_nor_repeats(mariadb: Any, archive: dict[str, Any]) -> None:
    tables = (archive["types"], archive["other"])
    full = read_files(archive["dir"], tables)
    cuts = 0
    for step in (1, 7):
        src = files_source(archive["dir"])
        src.open(None)
        batches = drain(src, max_rows=step)
        src.close()
        checkpoints = [b.checkpoint for b in batches]
        assert all(set(c) == {"file", "offset", "skip", "gtid", "gtid_pos", "server"} for c in checkpoints)
        assert any(c["skip"] for c in checkpoints)  # some inside the multi-row transaction
        for i in range(len(checkpoints)):
            before = rows_of(batches[: i + 1], tables)
            after = read_files(archive["dir"], tables, checkpoints[i])
            assert before + after == full, f"step {step}, checkpoint {i}: {checkpoints[i]}"
            cuts += 1
        # each checkpoint's GTID state is the server's at that position, so the mysql source takes it over there
        conn = mariadb.root_connect()
        with conn.cursor() as cur:
            for c in checkpoints:
                cur.execute("SELECT BINLOG_GTID_POS(%s, %s)", (c["file"], c["offset"]))
                assert c["gtid_pos"] == cur.fetchone()[0] and c["server"] == str(mariadb.server_id), c
        conn.close()
        live = MysqlSource("files-handoff", MysqlOptions(dsn=mariadb.dsn, server_id=7102))
        live.open(checkpoints[-1])
        try:
            assert rows_of(drain(live), tables) == []  # nothing of these tables after the files' end
        finally:
            live.close()
    assert len(full) == 61 and cuts >= 61 + 9  # batches of 1 row, and of up to 7


def test_follow_a_growing_file_and_the_next_files(mariadb: Any, tmp_path: Path) -> None:
    """The server's own binlog directory, followed from its current end: rows written now arrive, also after
    FLUSH BINARY LOGS (the next file); then a copy made while growing, cut inside an event, waits for the rest."""
    conn = mariadb.root_connect("dbus_test")
    t = table_name("files_follow")
    execute(conn, f"CREATE TABLE {t} (id INT PRIMARY KEY, v INT)")
    src = files_source(os.path.join(mariadb.datadir, "binlog.*"), start="latest", follow=True)
    src.open(None)
    got: list[dict[str, Any]] = []

    def pull(n: int) -> bool:
        batch = src.poll(100, 1)
        if batch is not None:
            got.extend(rows_of([batch], (t,)))
        return len(got) >= n

    try:
        assert src.poll(100, 1) is None and src.caught_up()
        execute(conn, f"INSERT INTO {t} VALUES (1, 1), (2, 2)")
        wait_for(lambda: pull(2), timeout=30, what="the rows written to the growing file")
        flush(conn)
        execute(conn, f"UPDATE {t} SET v = 3 WHERE id = 1")
        flush(conn)
        execute(conn, f"DELETE FROM {t} WHERE id = 2")
        wait_for(lambda: pull(4), timeout=30, what="the rows of the next two files")
        assert [r["op"] for r in got] == ["insert", "insert", "update", "delete"]
        assert len({r["pos"]["file"] for r in got}) == 3
        wait_for(lambda: src.poll(100, 1) is None and src.caught_up(), timeout=30, what="caught up")
    finally:
        src.close()
    # a copy that grows by pieces, cut inside events, then a next file whose header is cut: nothing torn is
    # reported while following, every row arrives once
    start = flush(conn)
    execute(conn, f"INSERT INTO {t} VALUES (10, 10), (11, 11)", f"UPDATE {t} SET v = 12 WHERE id = 10")
    nxt = flush(conn)
    execute(conn, f"UPDATE {t} SET v = 13 WHERE id = 11")
    flush(conn)
    conn.close()
    data = Path(mariadb.datadir, start).read_bytes()
    grow = tmp_path / start
    grow.write_bytes(data[:400])
    src = files_source(tmp_path, follow=True)
    src.open(None)
    got.clear()
    try:
        for cut in range(400, len(data) + 97, 97):
            with open(grow, "ab") as fh:
                fh.write(data[fh.tell():cut])
            pull(0)
        wait_for(lambda: pull(3), timeout=30, what="the rows of the grown copy")
        second = Path(mariadb.datadir, nxt).read_bytes()
        (tmp_path / nxt).write_bytes(second[:100])
        for _ in range(5):
            pull(0)
        with open(tmp_path / nxt, "ab") as fh:
            fh.write(second[100:])
        wait_for(lambda: pull(4) and src.caught_up(), timeout=30, what="the rows of the next file")
        assert [(r["op"], r["after"]["v"]) for r in got] == [("insert", 10), ("insert", 11), ("update", 12),
                                                              ("update", 13)]
    finally:
        src.close()


@pytest.fixture()
def private_mariadb() -> Iterator[MariaDB]:
    """A MariaDB of its own: its binlog gets rows without column names and a later ALTER, which a reader of the
    shared server's binlog from `earliest` (other tests) could not decode."""
    server = MariaDB().start()
    try:
        yield server
    finally:
        server.stop()


def test_files_without_column_names_need_dsn(private_mariadb: MariaDB, tmp_path: Path) -> None:
    mariadb = private_mariadb
    conn = mariadb.root_connect("dbus_test")
    t = table_name("files_minimal")
    execute(conn, f"CREATE TABLE {t} (id INT PRIMARY KEY, name VARCHAR(10), n INT)")
    execute(conn, "SET GLOBAL binlog_row_metadata = 'MINIMAL'")
    try:
        first = flush(conn)
        execute(conn, f"INSERT INTO {t} VALUES (1, 'one', 10), (2, 'two', 20)", f"UPDATE {t} SET n = 11 WHERE id = 1")
        flush(conn)
    finally:
        execute(conn, "SET GLOBAL binlog_row_metadata = 'FULL'")
    paths = copy_files(mariadb, first, first, tmp_path)
    expected = _select(conn, t)
    conn.close()
    with pytest.raises(DbusError) as err:
        read_files(tmp_path, (t,))
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"binlog {paths[0].name}:")
    assert f"the TABLE_MAP event of dbus_test.{t} carries no column names" in msg and "set `dsn`" in msg
    rows = read_files(tmp_path, (t,), dsn=mariadb.dsn)
    assert [r["op"] for r in rows] == ["insert", "insert", "update"]
    assert [rows[2]["after"], rows[1]["after"]] == expected and rows[0]["key"] == {"id": 1}
    # an ALTER later in the files: information_schema (the table as it is now) describes only the rows after it
    conn = mariadb.root_connect("dbus_test")
    execute(conn, "SET GLOBAL binlog_row_metadata = 'MINIMAL'")
    try:
        second = flush(conn)
        alter = _status(conn)[1]
        execute(conn, f"ALTER TABLE {t} ADD COLUMN c INT DEFAULT 5 AFTER id",
                f"INSERT INTO {t} VALUES (3, 6, 'three', 30)")
        flush(conn)
    finally:
        execute(conn, "SET GLOBAL binlog_row_metadata = 'FULL'")
    with conn.cursor() as cur:
        cur.execute(f"SHOW BINLOG EVENTS IN '{second}'")
        query = next(int(e[1]) for e in cur.fetchall() if "ALTER TABLE" in str(e[5]))  # the ALTER's QUERY event
    copy_files(mariadb, first, second, tmp_path)
    expected = _select(conn, t)
    conn.close()
    with pytest.raises(DbusError) as err:
        read_files(tmp_path, (t,), dsn=mariadb.dsn)
    msg = str(err.value)
    assert msg.startswith(f"binlog {paths[0].name}:") and "\n" not in msg
    assert f"a DDL on the table follows at {second}:{query}," in msg and alter < query
    src = files_source(tmp_path, dsn=mariadb.dsn, start=f"{second}:{alter}")
    src.open(None)
    try:
        batches = drain(src)
    finally:
        src.close()
    rows = rows_of(batches, (t,))
    assert [r["op"] for r in rows] == ["ddl", "insert"] and rows[1]["after"] == expected[2]
    history = batches[-1].checkpoint["schema_history"]
    assert [h[:5] for h in history] == [["dbus_test", t, second, query, ["id", "c", "name", "n"]]]


def test_one_line_errors(mariadb: Any, archive: dict[str, Any], tmp_path: Path) -> None:
    def error(files: Any, **options: Any) -> str:
        with pytest.raises(DbusError) as err:
            read_files(files, (), **options)
        msg = str(err.value)
        assert "\n" not in msg
        return msg

    paths: list[Path] = archive["paths"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no binlog file matches" in error(empty) and str(empty) in error(empty)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "binlog.000001").write_bytes(b"this is not a binlog file at all, just text" * 3)
    assert error(bad).startswith("binlog binlog.000001:0: not a binlog file")
    gap = tmp_path / "gap"
    gap.mkdir()
    shutil.copy(paths[0], gap / paths[0].name)
    shutil.copy(paths[2], gap / paths[2].name)
    msg = error(gap)
    assert msg.startswith(f"binlog files {gap}: {paths[2].name} follows {paths[0].name}") and "missing" in msg
    torn = tmp_path / "torn"
    torn.mkdir()
    data = paths[0].read_bytes()
    (torn / paths[0].name).write_bytes(data[:-10])
    msg = error(torn)
    assert msg.startswith(f"binlog {paths[0].name}:") and "torn event at the end of the file" in msg
    at = int(msg.split(":", 2)[1])
    assert len(data) - 10 > at > len(data) - 200
    msg = error(archive["dir"], start=f"{paths[0].name}:5")
    name = paths[0].name
    assert msg.startswith(f"binlog {name}:5 (start {name}:5) is not the start of an event (the events around it start "
                          "at 4 and ")
    assert "is not among the binlog files" in error(archive["dir"], start="binlog.999990:4")
    flipped = tmp_path / "corrupt"
    flipped.mkdir()
    mid = len(data) // 2
    (flipped / paths[0].name).write_bytes(data[:mid] + bytes([data[mid] ^ 0xFF]) + data[mid + 1:])
    msg = error(flipped)
    assert msg.startswith(f"binlog {paths[0].name}:") and ("checksum mismatch" in msg or "corrupt event" in msg)


def test_dbus_run_reads_the_files_and_ends(archive: dict[str, Any], ray_session: None, tmp_path: Path) -> None:
    """`dbus run` of a binlog_files pipeline (follow: false) ends by itself once every row is delivered; a second
    run resumes from the checkpoint at the end and delivers nothing again."""
    from typer.testing import CliRunner

    from dbus_ray.cli import app

    tables = (archive["types"], archive["other"])
    out = tmp_path / "out.jsonl"
    config = tmp_path / "files.yaml"
    config.write_text(yaml.safe_dump({
        "name": "files-run", "data_dir": str(tmp_path / "data"),
        "source": {"type": "binlog_files", "files": str(archive["dir"]), "include": [f"dbus_test.{t}" for t in tables]},
        "sinks": [{"name": "out", "type": "jsonl", "path": str(out)}]}))
    expected = read_files(archive["dir"], tables)
    for _ in range(2):
        result = CliRunner().invoke(app, ["run", str(config)])
        assert result.exit_code == 0, result.output
        lines = [json.loads(line) for line in out.read_text().splitlines()]
        for r in lines:
            r.pop("read_ts")
        assert [{**r, "pipeline": None} for r in lines] == [{**r, "pipeline": None} for r in expected]


def test_an_encrypted_file_is_refused(archive: dict[str, Any], tmp_path: Path) -> None:
    """A START_ENCRYPTION event (encrypt_binlog=ON: the events after it are encrypted) stops the reading at it.
    Made by turning the file's second event into one, with a valid checksum, as the server would write it."""
    data = bytearray(archive["paths"][0].read_bytes())
    fde = int.from_bytes(data[4 + 9 : 4 + 13], "little")
    at = 4 + fde
    size = int.from_bytes(data[at + 9 : at + 13], "little")
    data[at + 4] = 164
    data[at + size - 4 : at + size] = zlib.crc32(bytes(data[at : at + size - 4])).to_bytes(4, "little")
    (tmp_path / archive["paths"][0].name).write_bytes(bytes(data))
    with pytest.raises(DbusError) as err:
        read_files(tmp_path, ())
    name = archive["paths"][0].name
    assert str(err.value).startswith(f"binlog {name}:{at}: the file is encrypted (encrypt_binlog=ON)")

