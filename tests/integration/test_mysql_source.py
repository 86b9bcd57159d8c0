"""The `mysql` source against a real MariaDB: start positions, row images, type fidelity (compared with a
SELECT of the same rows), DDL mid-stream, resume mid-transaction, filters, and one pipeline through Ray into a
JSON-lines file (its checks before reading: test_mysql_preflight.py)."""

from __future__ import annotations

import datetime as dt
import json
import struct
from pathlib import Path
from typing import Any

import pymysql
import pytest

from dbus_ray.config import parse_config
from dbus_ray.model import dumps
from dbus_ray.mysql.ddl import ddl_target
from dbus_ray.mysql.source import MysqlOptions, MysqlSource
from tests.support.helpers import decoded_tables, drain, execute, poll_once, position, table_name
from tests.support.mysql_types import TYPE_ROWS, create_type_table

pytestmark = pytest.mark.integration

DB = "dbus_test"


def source(mariadb: Any, **options: Any) -> MysqlSource:
    options.setdefault("server_id", 7001)
    return MysqlSource("mysql-test", MysqlOptions(dsn=mariadb.dsn, **options))


def changes(batches: list[Any], table: str | None = None) -> list[dict[str, Any]]:
    out = []
    for b in batches:
        for c in b.changes():
            if table is None or c.table == table:
                out.append(json.loads(c.to_json()))
    return out


def read(mariadb: Any, start: str, table: str | None = None, **options: Any) -> list[dict[str, Any]]:
    src = source(mariadb, start=start, **options)
    src.open(None)
    try:
        return changes(drain(src), table)
    finally:
        src.close()


# ------------------------------------------------------------------------------------------ positions


def test_start_latest_earliest_and_file_offset(mariadb: Any, root: Any) -> None:
    t = table_name("pos")
    execute(root, f"CREATE TABLE {t} (id INT PRIMARY KEY, v VARCHAR(10))", f"INSERT INTO {t} VALUES (1, 'a')")
    mid = position(root)
    latest = source(mariadb, start="latest")
    latest.open(None)
    execute(root, f"INSERT INTO {t} VALUES (2, 'b')")
    try:
        assert [r["after"]["id"] for r in changes(drain(latest), t)] == [2]  # row 1 was before open
        assert latest.caught_up() and latest.lag_seconds() == 0.0
    finally:
        latest.close()
    from_mid = read(mariadb, mid, t)
    assert [(r["op"], r["after"]["id"]) for r in from_mid] == [("insert", 2)]
    everything = read(mariadb, "earliest", t)
    assert [r["op"] for r in everything] == ["ddl", "insert", "insert"]


def test_row_images_and_positions(mariadb: Any, root: Any) -> None:
    t = table_name("img")
    start = position(root)
    execute(
        root,
        f"CREATE TABLE {t} (id INT PRIMARY KEY, name VARCHAR(20), n INT NULL)",
        "BEGIN",
        f"INSERT INTO {t} VALUES (1, 'one', 10), (2, 'two', NULL)",
        f"UPDATE {t} SET name = 'uno', n = NULL WHERE id = 1",
        f"DELETE FROM {t} WHERE id = 2",
        "COMMIT",
    )
    rows = read(mariadb, start, t)
    assert [r["op"] for r in rows] == ["ddl", "insert", "insert", "update", "delete"]
    ddl, ins1, ins2, upd, dele = rows
    assert ddl["after"]["sql"].startswith(f"CREATE TABLE {t}") and ddl["before"] is None
    assert ins1["before"] is None and ins1["after"] == {"id": 1, "name": "one", "n": 10}
    assert ins1["key"] == {"id": 1}
    assert upd["before"] == {"id": 1, "name": "one", "n": 10} and upd["after"] == {
        "id": 1,
        "name": "uno",
        "n": None,
    }
    assert dele["before"] == {"id": 2, "name": "two", "n": None} and dele["after"] is None
    tx = [ins1, ins2, upd, dele]
    assert [r["pos"]["index"] for r in tx] == [0, 1, 2, 3]
    assert len({r["txid"] for r in tx}) == 1 and tx[0]["txid"] == tx[0]["pos"]["gtid"]
    assert ins1["pos"]["offset"] == ins2["pos"]["offset"] < upd["pos"]["offset"] < dele["pos"]["offset"]
    assert all(r["pos"]["file"].startswith("binlog.") for r in rows)
    assert abs(ins1["ts"] - ins1["read_ts"]) < 3600


def test_minimal_and_noblob_images_mark_absent_columns_not_null(mariadb: Any) -> None:
    """With binlog_row_image MINIMAL/NOBLOB the server leaves columns out of the images: they are listed
    in `absent` (and null in the image); a column present with SQL NULL is null and not listed."""
    t = table_name("minimg")
    conn = mariadb.root_connect(DB)
    try:
        execute(conn, f"CREATE TABLE {t} (id INT PRIMARY KEY, name VARCHAR(20), n INT NULL, b BLOB)")
        start = position(conn)
        execute(
            conn,
            "SET SESSION binlog_row_image = 'MINIMAL'",
            f"INSERT INTO {t} (id, name) VALUES (1, 'one')",
            f"INSERT INTO {t} VALUES (2, 'two', 20, 'bb'), (3, 'three', 30, NULL)",
            f"UPDATE {t} SET n = NULL WHERE id = 2",
            f"DELETE FROM {t} WHERE id = 3",
            "SET SESSION binlog_row_image = 'NOBLOB'",
            f"UPDATE {t} SET name = 'uno' WHERE id = 1",
            f"UPDATE {t} SET b = 'x' WHERE id = 1",
            "SET SESSION binlog_row_image = 'FULL'",
            f"UPDATE {t} SET n = 1 WHERE id = 1",
        )
    finally:
        conn.close()
    rows = read(mariadb, start, t)
    assert [r["op"] for r in rows] == ["insert", "insert", "insert", "update", "delete", "update", "update", "update"]
    ins1, ins2, ins3, upd_min, del_min, upd_noblob, upd_blob, upd_full = rows
    # MINIMAL insert: only the columns the statement set
    assert ins1["absent"] == {"after": ["n", "b"]} and ins1["after"] == {"id": 1, "name": "one", "n": None, "b": None}
    assert "absent" not in ins2 and ins3["after"] == {"id": 3, "name": "three", "n": 30, "b": None}
    # MINIMAL update: before = the key only, after = the changed column (set to SQL NULL: present, null)
    assert upd_min["absent"] == {"before": ["name", "n", "b"], "after": ["id", "name", "b"]}
    assert upd_min["before"]["id"] == 2 and upd_min["after"]["n"] is None
    assert upd_min["key"] == {"id": 2}  # from the before image: the after image has no key
    assert del_min["absent"] == {"before": ["name", "n", "b"]} and del_min["before"]["id"] == 3
    assert del_min["key"] == {"id": 3}
    # NOBLOB: every column but an unchanged BLOB
    assert upd_noblob["absent"] == {"before": ["b"], "after": ["b"]}
    assert upd_noblob["after"] == {"id": 1, "name": "uno", "n": None, "b": None}
    assert upd_blob["absent"] == {"before": ["b"]} and upd_blob["after"]["b"] == "eA=="  # base64 of b'x'
    assert "absent" not in upd_full and upd_full["after"] == {"id": 1, "name": "uno", "n": 1, "b": "eA=="}


# ------------------------------------------------------------------------------------------ types

def select_json(root: Any, t: str) -> list[dict[str, Any]]:
    """The rows as a SELECT returns them, through the same JSON mapping the jsonl sink uses."""
    with root.cursor(pymysql.cursors.DictCursor) as cur:
        cur.execute(f"SELECT * FROM {t} ORDER BY id")
        rows = cur.fetchall()
    out = []
    for row in rows:
        for k in ("ts", "ts0"):  # TIMESTAMP: the session is UTC; the source marks UTC explicitly
            if isinstance(row[k], dt.datetime):
                row[k] = row[k].replace(tzinfo=dt.UTC)
        out.append(json.loads(dumps(row)))
    return out


def f32(x: float | None) -> float | None:
    return None if x is None else struct.unpack("<f", struct.pack("<f", x))[0]


def test_type_fidelity_matches_select(mariadb: Any, root: Any) -> None:
    t = table_name("types")
    start = create_type_table(root, t)
    rows = read(mariadb, start, t)
    expected = select_json(root, t)
    assert [r["op"] for r in rows] == ["insert"] * len(TYPE_ROWS)
    got = [r["after"] for r in rows]
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert set(g) == set(e)
        for k in e:
            assert g[k] == e[k], f"row {e['id']} column {k}: binlog {g[k]!r} != SELECT {e[k]!r}"
    first = got[0]
    assert first["bu"] == 18446744073709551615 and first["d65"].startswith(
        "99999999999999999999999999999999999.9"
    )
    assert got[1]["dt6"] == "0000-00-00 00:00:00.000000" and got[2]["dt_"] == "0000-00-00"
    assert all(v is None for k, v in got[3].items() if k != "id")


def test_arrow_types_are_exact(mariadb: Any, root: Any) -> None:
    import pyarrow as pa

    t = table_name("arrow")
    start = position(root)
    execute(
        root,
        f"CREATE TABLE {t} (id BIGINT UNSIGNED PRIMARY KEY, d DECIMAL(50,20), s DECIMAL(9,2), f FLOAT, "
        "tm TIME(3), b VARBINARY(4))",
        f"INSERT INTO {t} VALUES (18446744073709551615, -1.5, 2.25, 0.5, '-01:00:00.5', X'01')",
    )
    src = source(mariadb, start=start)
    src.open(None)
    try:
        parts = [p for b in drain(src) for p in b.parts if p.table == t and p.data.num_rows]
    finally:
        src.close()
    image = parts[-1].data.schema.field("after").type
    types = {image.field(i).name: image.field(i).type for i in range(image.num_fields)}
    assert types == {
        "id": pa.uint64(),
        "d": pa.decimal256(50, 20),
        "s": pa.decimal128(9, 2),
        "f": pa.float32(),
        "tm": pa.duration("us"),
        "b": pa.binary(),
    }
    assert parts[-1].key == ("id",)


# ------------------------------------------------------------------------------------------ DDL


def test_alter_mid_stream_decodes_old_rows_with_old_columns(mariadb: Any, root: Any) -> None:
    t = table_name("alter")
    execute(root, f"CREATE TABLE {t} (id INT PRIMARY KEY, a VARCHAR(10), b INT)")
    start = position(root)
    execute(
        root,
        f"INSERT INTO {t} VALUES (1, 'x', 10)",
        f"ALTER TABLE {t} ADD COLUMN c DATETIME(3) NULL AFTER a",
        f"INSERT INTO {t} VALUES (2, 'y', '2024-01-01 00:00:00.250', 20)",
        f"ALTER TABLE {t} DROP COLUMN a",
        f"INSERT INTO {t} VALUES (3, NULL, 30)",
        f"TRUNCATE TABLE {t}",
    )
    rows = read(mariadb, start, t)  # the schema today: (id, c, b); rows are read after all DDL ran
    assert [r["op"] for r in rows] == ["insert", "ddl", "insert", "ddl", "insert", "ddl"]
    assert rows[0]["after"] == {"id": 1, "a": "x", "b": 10}
    assert rows[2]["after"] == {"id": 2, "a": "y", "c": "2024-01-01T00:00:00.250000", "b": 20}
    assert rows[4]["after"] == {"id": 3, "c": None, "b": 30}
    assert "ADD COLUMN c" in rows[1]["after"]["sql"] and rows[1]["table"] == t and rows[1]["db"] == DB
    assert rows[5]["after"]["sql"].startswith("TRUNCATE")


def test_ddl_target_parsing() -> None:
    assert ddl_target("ALTER TABLE `shop`.`or``ders` ADD x INT", "d") == ("shop", "or`ders")
    assert ddl_target("create table if not exists t1 (id int)", "d") == ("d", "t1")
    assert ddl_target("DROP TABLE `t` /* generated by server */", "d") == ("d", "t")
    assert ddl_target("TRUNCATE t2", "d") == ("d", "t2")
    assert ddl_target("RENAME TABLE a TO b", "d") == ("d", "a")
    assert ddl_target("CREATE UNIQUE INDEX i ON s.t (x)", "d") == ("s", "t")
    assert ddl_target("CREATE DATABASE shop", "d") == ("shop", "")
    assert ddl_target("CREATE USER x", "d") is None
    assert ddl_target("INSERT INTO t VALUES (1)", "d") is None


# ------------------------------------------------------------------------------------------ resume


def test_resume_mid_transaction_loses_and_duplicates_nothing(mariadb: Any, root: Any) -> None:
    t = table_name("resume")
    other = table_name("resume_other")
    execute(
        root, f"CREATE TABLE {t} (id INT PRIMARY KEY, v INT)", f"CREATE TABLE {other} (id INT PRIMARY KEY)"
    )
    start = position(root)
    execute(root, "BEGIN")
    for i in range(0, 40, 4):  # multi-row events, two tables interleaved inside one transaction
        execute(root, f"INSERT INTO {t} VALUES ({i}, {i}), ({i + 1}, {i}), ({i + 2}, {i}), ({i + 3}, {i})")
        execute(root, f"INSERT INTO {other} VALUES ({i})")
    execute(root, f"UPDATE {t} SET v = v + 1 WHERE id < 10", "COMMIT")
    execute(root, f"INSERT INTO {t} VALUES (100, 0), (101, 0)", f"DELETE FROM {t} WHERE id >= 30")
    full = read(mariadb, start)
    full = [r for r in full if r["table"] in (t, other)]
    assert len(full) == 40 + 10 + 10 + 2 + 12

    def key(r: dict[str, Any]) -> tuple:
        return (r["pos"]["file"], r["pos"]["offset"], r["pos"]["index"], r["op"])

    for step in (1, 7):
        got: list[dict[str, Any]] = []
        checkpoint: dict[str, Any] | None = None
        rounds = 0
        while True:
            batch = poll_once(source(mariadb, start=start), checkpoint, step)
            if batch is None:
                break
            got += [json.loads(c.to_json()) for c in batch.changes() if c.table in (t, other)]
            checkpoint = batch.checkpoint
            assert set(checkpoint) == {"file", "offset", "skip", "gtid", "gtid_pos", "server"}
            rounds += 1
            assert rounds < 200
        assert [key(r) for r in got] == [key(r) for r in full], f"step {step}"
        assert [r["after"] for r in got] == [r["after"] for r in full]


# ------------------------------------------------------------------------------------------ filters


def test_include_exclude(mariadb: Any, root: Any) -> None:
    keep, drop, also = table_name("keep"), table_name("drop"), table_name("also")
    execute(root, *(f"CREATE TABLE {x} (id INT PRIMARY KEY)" for x in (keep, drop, also)))
    start = position(root)
    execute(root, *(f"INSERT INTO {x} VALUES (1), (2)" for x in (keep, drop, also)))
    execute(root, f"ALTER TABLE {drop} ADD COLUMN z INT")
    rows = read(mariadb, start, include=[f"{DB}.keep_*", f"{DB}.drop_*"], exclude=[f"{DB}.drop_*"])
    assert {r["table"] for r in rows} == {keep}
    assert len(rows) == 2


def test_excluded_tables_are_not_decoded(mariadb: Any, root: Any, monkeypatch: Any) -> None:
    keep, drop = table_name("dk"), table_name("dd")
    execute(root, *(f"CREATE TABLE {x} (id INT PRIMARY KEY)" for x in (keep, drop)))
    start = position(root)
    execute(root, *(f"INSERT INTO {x} VALUES (1), (2), (3)" for x in (drop, keep)))
    decoded = decoded_tables(monkeypatch)
    rows = read(mariadb, start, include=[f"{DB}.{keep}"])
    assert [r["table"] for r in rows] == [keep] * 3
    assert decoded == [keep]


# ------------------------------------------------------------------------------------------ pipeline


def test_pipeline_mysql_to_jsonl_until_caught_up(
    mariadb: Any, root: Any, ray_session: None, tmp_path: Path
) -> None:
    from dbus_ray.pipeline import run_pipeline

    t = table_name("pipe")
    execute(root, f"CREATE TABLE {t} (id INT PRIMARY KEY, v DECIMAL(20,4), s VARCHAR(20))")
    start = position(root)
    execute(root, "BEGIN")
    for i in range(500):
        execute(root, f"INSERT INTO {t} VALUES ({i}, {i}.0125, 'row-{i}')")
    execute(
        root, "COMMIT", f"UPDATE {t} SET s = 'changed' WHERE id < 100", f"DELETE FROM {t} WHERE id >= 400"
    )
    out = tmp_path / "out.jsonl"
    raw = {
        "name": f"mysql-{t}".replace("_", "-"),
        "source": {
            "type": "mysql",
            "dsn": "mysql://dbus:${PW}@127.0.0.1:" + str(mariadb.port),
            "start": start,
            "include": [f"{DB}.{t}"],
        },
        "sinks": [{"name": "file", "type": "jsonl", "path": str(out)}],
        "flow": {"read_batch_rows": 64, "max_rows_in_flight": 256},
        "data_dir": str(tmp_path / "data"),
    }
    cfg = parse_config(raw, "mysql.yaml", {"PW": mariadb.password})
    final = run_pipeline(cfg, until_caught_up=True, interval=0.1)
    assert final["error"] is None and final["state"] == "stopped"
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["op"] for r in rows] == ["insert"] * 500 + ["update"] * 100 + ["delete"] * 100
    assert rows[0]["after"] == {"id": 0, "v": "0.0125", "s": "row-0"} and rows[0]["key"] == {"id": 0}
    assert final["checkpoint"]["source"]["skip"] == 0
    # a second run resumes from the saved checkpoint: nothing new, nothing repeated
    execute(root, f"INSERT INTO {t} VALUES (1000, 1, 'late')")
    final = run_pipeline(cfg, until_caught_up=True, interval=0.1)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 701 and rows[-1]["after"]["id"] == 1000


def test_commits_read_while_a_batch_is_delivered_go_on_as_one_batch(
    mariadb: Any, root: Any, ray_session: None, tmp_path: Path
) -> None:
    """One-row transactions committed while a slow sink writes an earlier batch: the reader does not hand
    on a batch per commit, but waits for the delivery and reads what committed meanwhile as one batch.
    Every row still arrives once, in commit order."""
    import time

    from dbus_ray.pipeline import Pipeline
    from tests.support.helpers import wait_for

    t = table_name("gather")
    execute(root, f"CREATE TABLE {t} (id INT PRIMARY KEY, s VARCHAR(20))")
    out = tmp_path / "out.jsonl"
    raw = {
        "name": f"mysql-{t}".replace("_", "-"),
        "source": {"type": "mysql", "dsn": "mysql://dbus:${PW}@127.0.0.1:" + str(mariadb.port),
                   "start": position(root), "include": [f"{DB}.{t}"]},
        "sinks": [{"name": "file", "type": "jsonl", "path": str(out)},
                  {"name": "slow", "type": "null", "delay_ms": 300}],
        "data_dir": str(tmp_path / "data"),
    }
    pipeline = Pipeline(parse_config(raw, "mysql.yaml", {"PW": mariadb.password}))
    pipeline.start()
    try:
        commits = 100
        for i in range(commits):  # one commit each 10 ms: 1 s of commits against a sink taking 300 ms a batch
            execute(root, f"INSERT INTO {t} VALUES ({i}, 'row-{i}')")
            time.sleep(0.01)
        wait_for(lambda: pipeline.status()["rows_delivered"] >= commits, 60, "every row delivered")
    finally:
        final = pipeline.stop()
    assert final["error"] is None and final["rows_read"] == final["rows_delivered"] == commits
    assert [json.loads(line)["after"]["id"] for line in out.read_text().splitlines()] == list(range(commits))
    # a batch per commit would be 100 (as read before the reader waited); ~1 s / 300 ms is a few
    assert final["batches_read"] <= 25, final["batches_read"]


def test_example_config_parses() -> None:
    from dbus_ray.config import load_config

    path = Path(__file__).resolve().parents[2] / "configs" / "mysql-jsonl.yaml"
    cfg = load_config(path, {"DBUS_MYSQL_PASSWORD": "pw"})
    assert cfg.source.type == "mysql" and cfg.source.options.dsn.startswith("mysql://dbus:pw@")


def test_connection_loss_reconnects_without_loss_or_duplicates(mariadb: Any, root: Any, caplog: Any) -> None:
    t = table_name("lost")
    execute(root, f"CREATE TABLE {t} (id INT PRIMARY KEY, pad VARCHAR(2000))")
    start = position(root)
    n = 6000  # ~12 MB in one transaction: more than the socket buffers hold, so a kill lands mid-transaction
    execute(root, "BEGIN")
    for i in range(0, n, 100):
        values = ", ".join(f"({j}, REPEAT('x', 2000))" for j in range(i, i + 100))
        execute(root, f"INSERT INTO {t} VALUES {values}")
    execute(root, "COMMIT", f"DELETE FROM {t} WHERE id < 10")
    src = source(mariadb, start=start)
    src.open(None)
    got: list[dict[str, Any]] = []
    killed: set[int] = set()

    def reconnects() -> list[str]:
        return [r.getMessage() for r in caplog.records if "reconnecting" in r.getMessage()]

    try:
        for _ in range(5000):
            batch = src.poll(50, 1)
            if batch is None:
                if src.caught_up():
                    break
                continue
            got += changes([batch], t)
            thread = src.stream.replica.thread_id()
            ready = len(got) > 100 and len(reconnects()) == len(killed) and thread not in killed
            if ready and len(killed) < 2:
                execute(root, f"KILL {thread}")  # the server drops the binlog connection
                killed.add(thread)
    finally:
        src.close()
    assert len(reconnects()) == 2
    assert "'skip': 0" not in reconnects()[0]  # resumed inside the big transaction
    assert [r["after"]["id"] for r in got if r["op"] == "insert"] == list(range(n))
    assert [r["before"]["id"] for r in got if r["op"] == "delete"] == list(range(10))
