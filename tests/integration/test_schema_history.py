"""Schema history of the `mysql` source against a real MariaDB with binlog_row_metadata=MINIMAL (TABLE_MAP
events carry no column names): the definitions the source records while live travel with its
checkpoints (through the file store, as JSON), so a source resumed from an old position decodes rows
written before later ALTERs with the columns they had then; without a history, a row before a later DDL
on its table is refused with one line (information_schema describes the table after it)."""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dbus_ray.checkpoints import FileCheckpointStore
from dbus_ray.devstack import MariaDB
from dbus_ray.errors import DbusError
from dbus_ray.mysql.schema_history import SchemaHistory
from dbus_ray.mysql.source import MysqlOptions, MysqlSource
from tests.support.helpers import drain, execute, position, table_name

pytestmark = pytest.mark.integration

DB = "dbus_test"


@pytest.fixture(scope="module")
def minimal() -> Iterator[MariaDB]:
    """This module's own MariaDB, switched to binlog_row_metadata=MINIMAL (the session's stays FULL)."""
    server = MariaDB().start()
    try:
        conn = server.root_connect()
        try:
            execute(conn, "SET GLOBAL binlog_row_metadata = 'MINIMAL'")
        finally:
            conn.close()
        yield server
    finally:
        server.stop()


@pytest.fixture()
def db(minimal: MariaDB) -> Iterator[Any]:
    conn = minimal.root_connect(DB, autocommit=True)
    yield conn
    conn.close()


def source(server: MariaDB, t: str, start: str = "latest", history: bool = True) -> MysqlSource:
    return MysqlSource("history-test", MysqlOptions(dsn=server.dsn, server_id=7401, start=start,
                                                    include=[f"{DB}.{t}"], schema_history=history))


def rows_of(src: MysqlSource) -> list[dict[str, Any]]:
    return [json.loads(c.to_json()) for b in drain(src) for c in b.changes()]


def live_rows(src: MysqlSource, n: int, timeout: float = 30.0) -> list[dict[str, Any]]:
    """The next `n` rows of a live source (which may report caught up before it saw the newest writes)."""
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        batch = src.poll(1000, 1)
        if batch is not None:
            out += [json.loads(c.to_json()) for c in batch.changes()]
    return out


#: The end of the line refusing a row followed by a DDL on its table (information_schema describes it after that).
LATER_DDL_END = ("so information_schema (the table as it is now) does not describe these rows: set "
                 "binlog_row_metadata=FULL on the server, or restart the pipeline from a snapshot")


def refusal(src: MysqlSource, checkpoint: dict[str, Any] | None = None) -> str:
    """The one-line DbusError `src`, opened at `checkpoint`, fails with before it caught up."""
    src.open(checkpoint)
    try:
        with pytest.raises(DbusError) as err:
            rows_of(src)
    finally:
        src.close()
    message = str(err.value)
    assert "\n" not in message
    return message


def images(rows: list[dict[str, Any]]) -> list[Any]:
    return [(r["op"], r["after"] if r["op"] != "ddl" else None) for r in rows]


def test_history_keeps_versions_and_prunes_to_the_checkpoint() -> None:
    h = SchemaHistory()
    assert h.record("d", "t", "binlog.000001", 100, ["id", "a"], ["id"])
    assert not h.record("d", "t", "binlog.000001", 200, ["id", "a"], ["id"])  # same definition: nothing new
    assert h.record("d", "t", "binlog.000001", 300, ["id", "a", "b"], ["id"])
    assert h.record("d", "t", "binlog.000002", 4, None)  # a DDL passed while behind: unknown from here
    assert h.at("d", "t", "binlog.000001", 99) is None
    assert h.at("d", "t", "binlog.000001", 299).columns == ("id", "a")
    assert h.at("d", "t", "binlog.000001", 900).columns == ("id", "a", "b")
    assert h.at("d", "t", "binlog.000002", 50).columns is None
    raw = h.to_json("binlog.000001", 500)  # what a resume from 000001:500 can need
    assert raw == [["d", "t", "binlog.000001", 300, ["id", "a", "b"], ["id"]], ["d", "t", "binlog.000002", 4, None, []]]
    assert SchemaHistory(json.loads(json.dumps(raw))).to_json("binlog.000001", 500) == raw


def test_minimal_metadata_is_refused_without_schema_history(minimal: MariaDB, db: Any) -> None:
    t = table_name("hist_off")
    execute(db, f"CREATE TABLE {t} (id INT PRIMARY KEY)")
    with pytest.raises(DbusError) as err:
        source(minimal, t, history=False).open(None)
    assert str(err.value) == (
        f"binlog_row_metadata is MINIMAL on 127.0.0.1:{minimal.port}; set binlog_row_metadata=FULL (SET GLOBAL "
        "binlog_row_metadata=FULL and in my.cnf), or set source.schema_history: true"
    )


def test_replay_decodes_each_row_with_the_columns_it_had(minimal: MariaDB, db: Any, tmp_path: Path) -> None:
    """A source live over ADD / DROP / RENAME COLUMN records each definition with its checkpoints; a new
    source started before the first row with that history decodes every row as it was written."""
    t = table_name("hist")
    execute(db, f"CREATE TABLE {t} (id INT PRIMARY KEY, a VARCHAR(10), b INT)")
    start = position(db)
    steps = [
        ([f"INSERT INTO {t} VALUES (1, 'one', 10)"],
         [("insert", {"id": 1, "a": "one", "b": 10})]),
        ([f"ALTER TABLE {t} ADD COLUMN c INT", f"INSERT INTO {t} VALUES (2, 'two', 20, 200)"],
         [("ddl", None), ("insert", {"id": 2, "a": "two", "b": 20, "c": 200})]),
        ([f"ALTER TABLE {t} DROP COLUMN b", f"INSERT INTO {t} VALUES (3, 'three', 300)"],
         [("ddl", None), ("insert", {"id": 3, "a": "three", "c": 300})]),
        ([f"ALTER TABLE {t} RENAME COLUMN a TO name", f"INSERT INTO {t} VALUES (4, 'four', 400)",
          f"UPDATE {t} SET name = 'ONE' WHERE id = 1"],
         [("ddl", None), ("insert", {"id": 4, "name": "four", "c": 400}),
          ("update", {"id": 1, "name": "ONE", "c": None})]),
    ]
    store = FileCheckpointStore(tmp_path / "first")
    carried: dict[tuple[Any, ...], list[Any]] = {}  # every version the first run saved with its checkpoints
    src = source(minimal, t, start=start)
    src.open(None)
    want: list[Any] = []
    try:
        for statements, expected in steps:
            execute(db, *statements)
            got = live_rows(src, len(expected))
            assert images(got) == expected  # live: decoded as written
            want += expected
            store.save(src.checkpoint())
            saved = store.load()
            assert saved is not None
            for entry in saved.get("schema_history", []):
                carried[tuple(entry[:4])] = entry
    finally:
        src.close()
    last = store.load()
    assert last is not None
    # pruned to what a resume from the last checkpoint needs: the newest definition only
    assert [e[4] for e in last["schema_history"]] == [["id", "name", "c"]]
    assert [e[4] for e in carried.values()] == [["id", "a", "b"], ["id", "a", "b", "c"], ["id", "a", "c"],
                                               ["id", "name", "c"]]

    # a new source (new data dir) from before the first row, with the history carried over
    file, offset = start.split(":")
    second = FileCheckpointStore(tmp_path / "second")
    second.save({"file": file, "offset": int(offset), "skip": 0, "gtid": None,
                 "schema_history": sorted(carried.values(), key=lambda e: (e[2], e[3]))})
    src = source(minimal, t, start="latest")
    src.open(second.load())
    try:
        assert images(rows_of(src)) == want
    finally:
        src.close()


def test_resume_from_an_old_checkpoint_after_an_alter(minimal: MariaDB, db: Any, tmp_path: Path) -> None:
    """Rows written while the pipeline was down, before an ALTER, decode with the definition the checkpoint
    carries; rows after it with today's. Without the history the rows before the ALTER are refused with one
    line naming it."""
    t = table_name("hist_down")
    execute(db, f"CREATE TABLE {t} (id INT PRIMARY KEY, a VARCHAR(10))")
    src = source(minimal, t)
    src.open(None)
    store = FileCheckpointStore(tmp_path / "first")
    try:
        execute(db, f"INSERT INTO {t} VALUES (1, 'one')")
        assert images(live_rows(src, 1)) == [("insert", {"id": 1, "a": "one"})]
        store.save(src.checkpoint())
    finally:
        src.close()
    # down: a row, then an ALTER, then rows with the new column
    execute(db, f"INSERT INTO {t} VALUES (2, 'two')", f"UPDATE {t} SET a = 'uno' WHERE id = 1",
            f"ALTER TABLE {t} ADD COLUMN c INT", f"INSERT INTO {t} VALUES (3, 'three', 30)")
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(store.path, copy / "checkpoint.json")
    checkpoint = FileCheckpointStore(copy).load()
    assert checkpoint is not None and checkpoint["schema_history"][0][4] == ["id", "a"]
    src = source(minimal, t)
    src.open(checkpoint)
    try:
        assert images(rows_of(src)) == [
            ("insert", {"id": 2, "a": "two"}), ("update", {"id": 1, "a": "uno"}), ("ddl", None),
            ("insert", {"id": 3, "a": "three", "c": 30}),
        ]
    finally:
        src.close()

    bare = {k: v for k, v in checkpoint.items() if k != "schema_history"}
    message = refusal(source(minimal, t), bare)
    assert message.startswith(f"binlog {checkpoint['file']}:")
    assert f"the TABLE_MAP event of {DB}.{t} carries no column names, the schema history has no definition for " \
           "this position and a DDL on the table follows at " in message
    assert message.endswith(LATER_DDL_END)


def test_a_rename_while_down_without_history_is_refused_not_renamed(minimal: MariaDB, db: Any) -> None:
    """Rows written before a RENAME COLUMN (the column count unchanged), read by a source started before them
    with no schema history: information_schema names the column as it is now, so those rows are refused with
    one line naming the DDL that follows; a source started after the DDL decodes with today's names."""
    t = table_name("hist_ren")
    execute(db, f"CREATE TABLE {t} (id INT PRIMARY KEY, a VARCHAR(10))")
    before = position(db)
    execute(db, f"INSERT INTO {t} VALUES (1, 'one')")
    ddl_at = position(db)
    execute(db, f"ALTER TABLE {t} RENAME COLUMN a TO b")
    after = position(db)
    execute(db, f"INSERT INTO {t} VALUES (2, 'two')")
    message = refusal(source(minimal, t, start=before))
    assert message.startswith(f"binlog {before.split(':')[0]}:")
    m = re.search(r"a DDL on the table follows at ([^:]+):(\d+), ", message)
    assert m and m.group(1) == ddl_at.split(":")[0], message
    assert int(ddl_at.split(":")[1]) <= int(m.group(2)) < int(after.split(":")[1])  # the ALTER's event
    assert message.endswith(LATER_DDL_END)
    src = source(minimal, t, start=after)
    src.open(None)
    try:
        assert images(rows_of(src)) == [("insert", {"id": 2, "b": "two"})]
    finally:
        src.close()


def test_a_rename_after_the_source_opened_is_seen_too(minimal: MariaDB, db: Any) -> None:
    """The DDL is looked for up to where the binlog was when information_schema was read, not only up to the
    open: a RENAME COLUMN made while the source catches up, before it reads the table, refuses the older rows."""
    t = table_name("hist_ren2")
    execute(db, f"CREATE TABLE {t} (id INT PRIMARY KEY, a VARCHAR(10))")
    before = position(db)
    execute(db, f"INSERT INTO {t} VALUES (1, 'one')")
    src = source(minimal, t, start=before)
    src.open(None)
    try:
        execute(db, f"ALTER TABLE {t} RENAME COLUMN a TO b")  # after the open, before the first row is read
        with pytest.raises(DbusError) as err:
            rows_of(src)
    finally:
        src.close()
    assert f"the TABLE_MAP event of {DB}.{t} carries no column names, the schema history has no definition for " \
           "this position and a DDL on the table follows at " in str(err.value)


def test_pipeline_resumes_across_an_alter_with_the_history_in_its_checkpoint(
    minimal: MariaDB, db: Any, ray_session: None, tmp_path: Path
) -> None:
    """The same through the pipeline's actors and its file checkpoint store: stopped after a row it read
    live, restarted after rows, an ALTER and more rows were written."""
    from dbus_ray.config import parse_config
    from dbus_ray.pipeline import run_pipeline

    t = table_name("hist_pipe")
    execute(db, f"CREATE TABLE {t} (id INT PRIMARY KEY, a VARCHAR(10))")
    out = tmp_path / "out.jsonl"
    cfg = parse_config({
        "name": "hist-pipe", "data_dir": str(tmp_path / "data"),
        "source": {"type": "mysql", "dsn": minimal.dsn, "server_id": 7402, "include": [f"{DB}.{t}"],
                   "schema_history": True},
        "sinks": [{"name": "file", "type": "jsonl", "path": str(out), "fsync": False}],
    }, "hist-pipe.yaml", {})

    def read() -> list[Any]:
        return images([json.loads(line) for line in out.read_text().splitlines()] if out.exists() else [])

    wrote: list[bool] = []

    def first_row_delivered() -> bool:  # called once the source is open: the row is written while it is live
        if not wrote:
            execute(db, f"INSERT INTO {t} VALUES (1, 'one')")
            wrote.append(True)
        return len(read()) == 1

    final = run_pipeline(cfg, should_stop=first_row_delivered, interval=0.1)
    assert final["error"] is None and read() == [("insert", {"id": 1, "a": "one"})]
    saved = FileCheckpointStore(cfg.pipeline_dir).load()
    assert saved is not None and [e[4] for e in saved["source"]["schema_history"]] == [["id", "a"]]
    execute(db, f"INSERT INTO {t} VALUES (2, 'two')", f"ALTER TABLE {t} ADD COLUMN c INT",
            f"INSERT INTO {t} VALUES (3, 'three', 30)")
    final = run_pipeline(cfg, until_caught_up=True, interval=0.1)
    assert final["error"] is None
    assert read() == [("insert", {"id": 1, "a": "one"}), ("insert", {"id": 2, "a": "two"}), ("ddl", None),
                      ("insert", {"id": 3, "a": "three", "c": 30})]


def test_rows_are_keyed_in_the_primary_keys_order(minimal: MariaDB, db: Any) -> None:
    """Without column names in the TABLE_MAP the key comes from information_schema: in the PRIMARY KEY's order
    (b, a), as a snapshot reads it, not in column order; a key change is a delete then an insert."""
    t = table_name("pkorder")
    execute(db, f"CREATE TABLE {t} (a INT NOT NULL, b VARCHAR(8) NOT NULL, v INT, PRIMARY KEY (b, a))")
    start = position(db)
    execute(db, f"INSERT INTO {t} VALUES (1, 'k', 10)", f"UPDATE {t} SET v = 11",
            f"UPDATE {t} SET b = 'k2' WHERE a = 1")
    src = source(minimal, t, start=start)
    src.open(None)
    try:
        rows = [r for r in rows_of(src) if r["op"] != "ddl"]
    finally:
        src.close()
    assert [(r["op"], list(r["key"].items())) for r in rows] == [
        ("insert", [("b", "k"), ("a", 1)]), ("update", [("b", "k"), ("a", 1)]),
        ("delete", [("b", "k"), ("a", 1)]), ("insert", [("b", "k2"), ("a", 1)])]
