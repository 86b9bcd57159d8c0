"""The `mysql` source against a MariaDB started with `log_bin_compress=ON`: QUERY_COMPRESSED_EVENT and the
ROWS_COMPRESSED events decode to the rows the server's own SELECT shows, and the DDL as sent; XA
transactions deliver their committed rows only; an event the source cannot read (a statement-based LOAD DATA)
stops it with one line naming the event and FILE:OFFSET, its rows never handed out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pymysql
import pytest
import yaml
from typer.testing import CliRunner

from dbus_ray.cli import app
from dbus_ray.devstack import MariaDB
from dbus_ray.mysql.source import MysqlOptions, MysqlSource
from tests.support.helpers import drain, execute, position

pytestmark = pytest.mark.integration


def select(conn: Any, sql: str) -> dict[int, dict[str, Any]]:
    with conn.cursor(pymysql.cursors.DictCursor) as cur:
        cur.execute(sql)
        return {row["id"]: row for row in cur.fetchall()}


def event_types(conn: Any, start: str) -> list[str]:
    file, offset = start.split(":")
    with conn.cursor() as cur:
        cur.execute(f"SHOW BINLOG EVENTS IN '{file}' FROM {int(offset)}")
        return [row[2] for row in cur.fetchall()]


def source(server: MariaDB, start: str, include: list[str]) -> MysqlSource:
    return MysqlSource("compressed", MysqlOptions(dsn=server.dsn, server_id=7301, start=start, include=include))


def test_compressed_events_give_the_rows_select_shows(compressed: MariaDB) -> None:
    conn = compressed.root_connect()
    start = position(conn)
    table_sql = "CREATE TABLE shop.t (id INT PRIMARY KEY, name VARCHAR(40), note TEXT, amount DECIMAL(12,2))"
    execute(conn, "CREATE DATABASE shop", table_sql)
    everything = "SELECT * FROM shop.t"
    execute(conn, "INSERT INTO shop.t VALUES (1, 'ä-one', REPEAT('note one ', 60), 10.50), "
                  "(2, 'two', REPEAT('n2 ', 90), -3.25)")
    first = select(conn, everything)
    execute(conn, "INSERT INTO shop.t VALUES (3, 'three', REPEAT('drei ', 80), 0.00)")
    before_update = select(conn, everything)
    execute(conn, "UPDATE shop.t SET note = CONCAT(note, '!'), amount = amount + 1")
    after_update = select(conn, everything)
    execute(conn, "DELETE FROM shop.t WHERE id = 1")
    types = event_types(conn, start)
    conn.close()
    # the server did write the compressed forms (else this test would prove nothing)
    assert {"Query_compressed", "Write_rows_compressed_v1", "Update_rows_compressed_v1",
            "Delete_rows_compressed_v1"} <= set(types), types

    src = source(compressed, start, ["shop.*"])
    src.open(None)
    try:
        got = [c for b in drain(src) for c in b.changes()]
    finally:
        src.close()

    assert [c.after["sql"] for c in got if c.op == "ddl"] == ["CREATE DATABASE shop", table_sql]
    rows = [(c.op, c.before, c.after) for c in got if c.op != "ddl"]
    assert rows == [
        ("insert", None, first[1]),
        ("insert", None, first[2]),
        ("insert", None, before_update[3]),
        ("update", before_update[1], after_update[1]),
        ("update", before_update[2], after_update[2]),
        ("update", before_update[3], after_update[3]),
        ("delete", after_update[1], None),
    ]


def xa_workload(server: MariaDB, db: str) -> str:
    """Two ordinary transactions (one an XA COMMIT ... ONE PHASE), a prepared XA transaction rolled back,
    one committed, then one more row: the position before them."""
    conn = server.root_connect()
    execute(conn, f"CREATE DATABASE {db}", f"CREATE TABLE {db}.t (id INT PRIMARY KEY, v VARCHAR(20))")
    start = position(conn)
    execute(conn, f"INSERT INTO {db}.t VALUES (1, 'plain')", "XA START 'one'",
            f"INSERT INTO {db}.t VALUES (2, 'one-phase')", "XA END 'one'", "XA COMMIT 'one' ONE PHASE")
    execute(conn, "XA START 'x1'", f"INSERT INTO {db}.t VALUES (3, 'rolled-back')", "XA END 'x1'",
            "XA PREPARE 'x1'", "XA ROLLBACK 'x1'", "XA START 'x2'", f"INSERT INTO {db}.t VALUES (5, 'two-phase')",
            "XA END 'x2'", "XA PREPARE 'x2'", "XA COMMIT 'x2'", f"INSERT INTO {db}.t VALUES (4, 'after')")
    assert select(conn, f"SELECT * FROM {db}.t") == {1: {"id": 1, "v": "plain"}, 2: {"id": 2, "v": "one-phase"},
                                                     5: {"id": 5, "v": "two-phase"}, 4: {"id": 4, "v": "after"}}
    assert "XA_prepare" in event_types(conn, start)
    conn.close()
    return start


def test_xa_transactions_compressed_deliver_committed_rows_only(compressed: MariaDB) -> None:
    start = xa_workload(compressed, "xa")
    src = source(compressed, start, ["xa.*"])
    src.open(None)
    try:
        got = [c for b in drain(src, max_rows=1) for c in b.changes()]
    finally:
        src.close()
    assert [(c.op, c.after) for c in got] == [
        ("insert", {"id": 1, "v": "plain"}), ("insert", {"id": 2, "v": "one-phase"}),
        ("insert", {"id": 5, "v": "two-phase"}), ("insert", {"id": 4, "v": "after"})]


def test_large_change_with_the_default_threshold_equals_select(compressed: MariaDB) -> None:
    """The default log_bin_compress_min_len (256): small events stay plain, large ones are compressed, and
    one transaction of many rows spans several compressed rows events."""
    conn = compressed.root_connect()
    execute(conn, "SET GLOBAL log_bin_compress_min_len = 256")
    try:
        conn.close()
        conn = compressed.root_connect()  # (the setting applies to new sessions)
        execute(conn, "CREATE DATABASE IF NOT EXISTS big",
                "CREATE TABLE big.t (id INT PRIMARY KEY, note TEXT, n BIGINT UNSIGNED, at DATETIME(6))")
        start = position(conn)
        execute(conn, "INSERT INTO big.t SELECT seq, IF(seq % 3 = 0, 'tiny', REPEAT(CONCAT('row ', seq, ' '), 40)), "
                      "seq * 1000003, TIMESTAMP('2026-01-02 03:04:05.123456') + INTERVAL seq SECOND "
                      "FROM big.seq_1_to_5000")
        execute(conn, "UPDATE big.t SET note = 'now small' WHERE id % 2 = 0")
        execute(conn, "DELETE FROM big.t WHERE id > 4990")
        final = select(conn, "SELECT * FROM big.t")
        types = event_types(conn, start)
    finally:
        execute(conn, "SET GLOBAL log_bin_compress_min_len = 10")
        conn.close()
    assert types.count("Write_rows_compressed_v1") > 1 and "Update_rows_compressed_v1" in types, types

    src = source(compressed, start, ["big.*"])
    src.open(None)
    try:
        got = [c for b in drain(src, max_rows=700) for c in b.changes()]
    finally:
        src.close()
    rows: dict[int, dict[str, Any]] = {}
    for c in got:  # replay the changes: the result must be the table as SELECT shows it
        if c.op == "delete":
            del rows[c.before["id"]]
        else:
            assert c.op == "insert" or rows[c.before["id"]] == c.before
            rows[c.after["id"]] = c.after
    assert [c.op for c in got].count("insert") == 5000
    # DATETIME arrives as ISO text (see dbus_ray.mysql.values), SELECT gives a datetime
    assert rows == {i: {**r, "at": r["at"].isoformat()} for i, r in final.items()}


def test_a_refused_event_fails_the_pipeline_with_one_line(compressed: MariaDB, ray_session: None,
                                                          tmp_path: Path) -> None:
    """A statement-based LOAD DATA (binlog_format=STATEMENT in its session) writes BEGIN_LOAD_QUERY_EVENT: the
    pipeline stops at it with one line; the rows before it are delivered, none of it or after it."""
    conn = compressed.root_connect(local_infile=True)
    execute(conn, "CREATE DATABASE ld_run", "CREATE TABLE ld_run.t (id INT PRIMARY KEY, v VARCHAR(20))")
    start = position(conn)
    execute(conn, "INSERT INTO ld_run.t VALUES (1, 'plain')", "XA START 'one'",
            "INSERT INTO ld_run.t VALUES (2, 'one-phase')", "XA END 'one'", "XA COMMIT 'one' ONE PHASE")
    data = tmp_path / "rows.tsv"
    data.write_text("3\tloaded\n4\tloaded\n")
    execute(conn, "SET SESSION binlog_format = 'STATEMENT'", f"LOAD DATA LOCAL INFILE '{data}' INTO TABLE ld_run.t",
            "SET SESSION binlog_format = 'ROW'", "INSERT INTO ld_run.t VALUES (5, 'after')")
    file, offset = start.split(":")
    with conn.cursor() as cur:
        cur.execute(f"SHOW BINLOG EVENTS IN '{file}' FROM {int(offset)}")
        load_at = next(f"{r[0]}:{r[1]}" for r in cur.fetchall() if r[2] == "Begin_load_query")
    conn.close()
    out = tmp_path / "out.jsonl"
    config = {"name": "ld-stop", "data_dir": str(tmp_path / "data"),
              "source": {"type": "mysql", "dsn": compressed.dsn, "server_id": 7303, "start": start,
                         "include": ["ld_run.*"]},
              "sinks": [{"name": "out", "type": "jsonl", "path": str(out)}]}
    path = tmp_path / "ld-stop.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    result = CliRunner().invoke(app, ["run", str(path), "--until-caught-up"])
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    print(f"MESSAGE {errors}")
    assert result.exit_code == 1 and len(errors) == 1, result.output
    assert f"binlog {load_at}: event type 17 BEGIN_LOAD_QUERY_EVENT cannot be read: statement-based LOAD DATA" \
        in errors[0]
    # the rows before the refused event are delivered (and checkpointed), none of it or after it
    assert [json.loads(line)["after"]["v"] for line in out.read_text().splitlines()] == ["plain", "one-phase"]
