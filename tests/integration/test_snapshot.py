"""Initial snapshot of the `mysql` source against a real MariaDB: values equal the binlog decoder's,
keyset paging (composite and unique keys), tables without a key refused, throttling, and through Ray
into JSON lines: snapshot then stream with writes racing the snapshot (each row and change exactly
once), resume after a stop mid-snapshot (the documented at-least-once guarantee) and `when_needed`
after PURGE BINARY LOGS."""

from __future__ import annotations

import json
import random
import threading
import time
from pathlib import Path
from typing import Any

import pymysql
import pytest

from dbus_ray.errors import DbusError
from dbus_ray.mysql.source import MysqlOptions, MysqlSource
from tests.support.changes import (
    apply_strict,
    apply_upserts,
    assert_tables_match,
    is_marker,
    pipeline_config,
    read_jsonl,
    snapshot_markers,
    snapshot_window,
)
from tests.support.helpers import drain, execute, poll_once, position, table_name, wait_for
from tests.support.mysql_types import create_type_table

pytestmark = pytest.mark.integration

DB = "dbus_test"


def fill(conn: pymysql.connections.Connection, table: str, n: int, start: int = 0) -> None:
    with conn.cursor() as cur:
        for i in range(start, start + n, 2000):
            rows = [(j, j % 97, f"row-{j}") for j in range(i, min(i + 2000, start + n))]
            cur.executemany(f"INSERT INTO {table} (id, v, s) VALUES (%s, %s, %s)", rows)


def source(mariadb: Any, **options: Any) -> MysqlSource:
    options.setdefault("server_id", 7401)
    return MysqlSource("snap-test", MysqlOptions(dsn=mariadb.dsn, **options))


def changes(batches: list[Any]) -> list[dict[str, Any]]:
    return [json.loads(c.to_json()) for b in batches for c in b.changes()]


# ------------------------------------------------------------------------------------- source level


def test_snapshot_values_and_types_equal_the_binlog_decoder(mariadb: Any, root: Any) -> None:
    t = table_name("snap_types")
    start = create_type_table(root, t)
    execute(root, f"INSERT INTO {t} (id, f, db) VALUES (5, 1234567.8, 0.1), (6, -1.17549e-38, 1e-300)")

    def parts(src: MysqlSource) -> list[Any]:
        src.open(None)
        try:
            return [p for b in drain(src) for p in b.parts if p.table == t]
        finally:
            src.close()

    streamed = [p for p in parts(source(mariadb, start=start, include=[f"{DB}.{t}"])) if p.num_rows]
    snapped = parts(source(mariadb, snapshot="initial", include=[f"{DB}.{t}"]))
    reads = [p for p in snapped if p.data.column("op")[0].as_py() == "read"]
    markers = [p for p in snapped if p.data.column("op")[0].as_py() == "ddl"]
    images = [m.data.column("after").to_pylist()[0] for m in markers]
    ddl = json.loads(images[0].pop("ddl"))
    assert images == [
        {"snapshot": "start", "table": f"{DB}.{t}", "rows": None},
        {"snapshot": "end", "table": f"{DB}.{t}", "rows": 6, "ddl": None},
    ]
    # the start marker's statements, as Debezium's snapshot writes them (the server's and schema's settings
    # and SHOW CREATE TABLE read here)
    with root.cursor() as cur:
        cur.execute("SELECT @@character_set_server, @@collation_server")
        charset, collation = cur.fetchone()
        cur.execute("SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA "
                    "WHERE SCHEMA_NAME = %s", (DB,))
        db_charset, db_collation = cur.fetchone()
        cur.execute(f"SHOW CREATE TABLE {DB}.{t}")
        create = cur.fetchone()[1]
    assert [(s["db"], s["table"], s["sql"]) for s in ddl] == [
        ("", "", f"SET character_set_server={charset}, collation_server={collation}"),
        (DB, t, f"DROP TABLE IF EXISTS `{DB}`.`{t}`"),
        (DB, "", f"DROP DATABASE IF EXISTS `{DB}`"),
        (DB, "", f"CREATE DATABASE `{DB}` CHARSET {db_charset} COLLATE {db_collation}"),
        (DB, "", f"USE `{DB}`"),
        (DB, t, create),
    ]
    assert [s["change"] and json.loads(s["change"])["type"] for s in ddl] == [None, "DROP", None, None, None, "CREATE"]
    created = json.loads(ddl[-1]["change"])
    assert created["primary_key"] == ["id"] and [c[0] for c in created["columns"]][:3] == ["id", "ti", "tu"]
    binlog_type = streamed[0].data.schema.field("after").type
    assert all(p.data.schema.field("after").type == binlog_type for p in reads)
    assert reads[0].key == streamed[0].key == ("id",)
    got = [a for p in reads for a in p.data.column("after").to_pylist()]
    want = [a for p in streamed for a in p.data.column("after").to_pylist()]
    assert len(got) == len(want) == 6
    for g, w in zip(got, want):
        for col in w:
            assert g[col] == w[col], f"row {w['id']} column {col}: snapshot {g[col]!r} != binlog {w[col]!r}"
    # and in the JSON form, as SELECT shows them
    rows = [json.loads(c.to_json()) for p in reads for c in p.changes("x")]
    assert rows[0]["op"] == "read" and rows[0]["before"] is None and rows[0]["key"] == {"id": 1}
    assert rows[0]["txid"].startswith("snapshot:binlog.")


def test_composite_and_unique_keys_page_in_chunks(mariadb: Any, root: Any) -> None:
    comp, uniq = table_name("snap_comp"), table_name("snap_uniq")
    execute(
        root,
        f"CREATE TABLE {comp} (a INT, b VARCHAR(10), v INT, PRIMARY KEY (a, b))",
        f"CREATE TABLE {uniq} (code VARBINARY(8) NOT NULL, n INT NULL, v INT, UNIQUE KEY (n), UNIQUE KEY (code))",
    )
    with root.cursor() as cur:
        cur.executemany(f"INSERT INTO {comp} VALUES (%s, %s, %s)",
                        [(a, f"k{b:02d}", a * 100 + b) for a in range(7) for b in range(13)])
        cur.executemany(f"INSERT INTO {uniq} VALUES (%s, %s, %s)",
                        [(bytes([i, 0, 255 - i]), i, i) for i in range(50)])
    src = source(mariadb, snapshot="initial", include=[f"{DB}.{comp}", f"{DB}.{uniq}"], chunk_rows=5)
    src.open(None)
    try:
        batches = drain(src, max_rows=7)
        progress = src.snapshot_progress()
    finally:
        src.close()
    rows = changes(batches)
    reads = [r for r in rows if r["op"] == "read"]
    got_comp = [(r["after"]["a"], r["after"]["b"]) for r in reads if r["table"] == comp]
    assert got_comp == [(a, f"k{b:02d}") for a in range(7) for b in range(13)]
    got_uniq = sorted(r["after"]["v"] for r in reads if r["table"] == uniq)
    assert got_uniq == list(range(50))
    assert [r["key"] for r in reads if r["table"] == uniq][0] == {}  # no primary key: the stream's key is empty too
    assert progress["state"] == "done" and progress["tables_done"] == progress["tables_total"] == 2
    assert progress["rows"] == 91 + 50
    # checkpoints: snapshot state while it runs, the binlog position with the last row
    assert "snapshot" in batches[0].checkpoint
    assert set(batches[-1].checkpoint) - {"selected"} == {"file", "offset", "skip", "gtid", "gtid_pos", "server"}


def test_resume_from_each_checkpoint_of_a_binary_and_composite_key(mariadb: Any, root: Any) -> None:
    t = table_name("snap_bkey")
    execute(root, f"CREATE TABLE {t} (k VARBINARY(8), d DATETIME(6), v INT, PRIMARY KEY (k, d))")
    with root.cursor() as cur:
        cur.executemany(f"INSERT INTO {t} VALUES (%s, %s, %s)",
                        [(bytes([i % 5, 0, i]), f"2024-01-0{1 + i % 3} 00:00:00.{i:06d}", i) for i in range(40)])
    got: list[dict[str, Any]] = []
    checkpoint: dict[str, Any] | None = None
    for _ in range(100):  # a new source for every batch, from the checkpoint as the store keeps it (JSON)
        batch = poll_once(source(mariadb, snapshot="initial", include=[f"{DB}.{t}"], chunk_rows=4), checkpoint, 3)
        if batch is None:
            break
        got += changes([batch])
        checkpoint = json.loads(json.dumps(batch.checkpoint))
    assert checkpoint is not None and "snapshot" not in checkpoint
    assert sorted(r["after"]["v"] for r in got if r["op"] == "read") == list(range(40))
    assert [r["after"]["snapshot"] for r in got if is_marker(r)] == ["start", "end"]


def test_table_without_a_key_is_refused(mariadb: Any, root: Any) -> None:
    keyed, bare = table_name("snap_keyed"), table_name("snap_bare")
    execute(
        root,
        f"CREATE TABLE {keyed} (id INT PRIMARY KEY)",
        f"CREATE TABLE {bare} (id INT, n INT NULL, UNIQUE KEY (n))",  # unique but nullable: no use
    )
    src = source(mariadb, snapshot="initial", include=[f"{DB}.snap_keyed_*", f"{DB}.{bare}"])
    with pytest.raises(DbusError) as err:
        src.open(None)
    msg = str(err.value)
    assert msg.startswith(f"table {DB}.{bare} has no primary key or unique NOT NULL key") and "\n" not in msg
    assert "source.exclude" in msg


def test_max_rows_per_second_throttles(mariadb: Any, root: Any) -> None:
    t = table_name("snap_slow")
    execute(root, f"CREATE TABLE {t} (id INT PRIMARY KEY, v INT, s VARCHAR(20))")
    fill(root, t, 1500)
    src = source(mariadb, snapshot="initial", include=[f"{DB}.{t}"], max_rows_per_second=1000)
    src.open(None)
    began = time.monotonic()
    try:
        rows = changes(drain(src))
    finally:
        src.close()
    took = time.monotonic() - began
    assert len([r for r in rows if r["op"] == "read"]) == 1500
    assert 1.0 < took < 5, took  # 1500 rows at 1000 rows/s


def test_percent_signs_in_names_and_in_a_backfill_where(mariadb: Any, root: Any) -> None:
    """Statements are bound by pymysql's `%` formatting: a `%` in a table or column name, or in a backfill's
    `where`, is read as itself, in every chunk (those after the first have key arguments)."""
    t = table_name("snap_pct") + "%s%"
    execute(root, f"CREATE TABLE `{t}` (`id%` INT PRIMARY KEY, `v%s` VARCHAR(20))")
    with root.cursor() as cur:
        for i in range(30):  # (no arguments: pymysql sends the statement as it is)
            cur.execute(f"INSERT INTO `{t}` VALUES ({i}, 'row-{i}')")
    src = source(mariadb, snapshot="initial", include=[f"{DB}.{t}"], chunk_rows=4)
    src.open(None)
    try:
        reads = [r["after"] for r in changes(drain(src)) if r["op"] == "read"]
        where = "`v%s` LIKE 'row-1%' OR `v%s` LIKE '%s'"
        src.backfill([f"{DB}.{t}"], where)
        again = [r["after"] for r in changes(drain(src)) if r["op"] == "read"]
    finally:
        src.close()
    with root.cursor(pymysql.cursors.DictCursor) as cur:
        cur.execute(f"SELECT * FROM `{t}` ORDER BY `id%`")
        table = list(cur.fetchall())
        cur.execute(f"SELECT * FROM `{t}` WHERE {where} ORDER BY `id%`")
        selected = list(cur.fetchall())
    assert reads == table and len(reads) == 30
    assert again == selected and len(again) == 11  # row-1, row-10 .. row-19


def test_caught_up_after_a_snapshot_waits_for_the_writes_made_while_it_ran(mariadb: Any, root: Any) -> None:
    """Caught up is judged from where the server was when the snapshot ended, not when the source opened: the
    rows written while the snapshot ran are handed out before the source says it is caught up."""
    t = table_name("snap_caught")
    execute(root, f"CREATE TABLE {t} (id INT PRIMARY KEY, v INT, s VARCHAR(20))")
    fill(root, t, 300)
    src = source(mariadb, snapshot="initial", include=[f"{DB}.{t}"], chunk_rows=100)
    src.open(None)
    try:
        fill(root, t, 50, start=1000)  # after the snapshot opened: rows of the stream
        batches: list[Any] = []
        while (src.snapshot_progress() or {}).get("state") != "done":
            batch = src.poll(100, len(batches) + 1)
            if batch is not None:
                batches.append(batch)
        assert not src.caught_up()  # the snapshot is read, the 50 writes made meanwhile are not
        batches += drain(src)
    finally:
        src.close()
    rows = changes(batches)
    assert sorted(r["after"]["id"] for r in rows if r["op"] == "read") == list(range(300))
    assert sorted(r["after"]["id"] for r in rows if r["op"] == "insert") == list(range(1000, 1050))


# ------------------------------------------------------------------------------------------ pipeline


def test_initial_snapshot_then_stream_with_racing_writes(
    mariadb: Any, root: Any, ray_session: None, tmp_path: Path
) -> None:
    from dbus_ray.pipeline import run_pipeline

    a, b = table_name("snap_a"), table_name("snap_b")
    for t in (a, b):
        execute(root, f"CREATE TABLE {t} (id INT PRIMARY KEY, v INT, s VARCHAR(40), ts DATETIME(6) NULL)")
        fill(root, t, 10_000)
    stop = threading.Event()
    written = {"n": 0}
    commits: list[float] = []
    errors: list[BaseException] = []

    def writer() -> None:
        conn = mariadb.root_connect(DB, autocommit=True)
        rnd = random.Random(7)
        next_id = {a: 10_000, b: 10_000}
        try:
            with conn.cursor() as cur:
                while not stop.is_set():
                    t = rnd.choice((a, b))
                    k = rnd.randrange(10_000)
                    what = rnd.random()
                    if what < 0.5:
                        cur.execute(f"UPDATE {t} SET v = v + 1, ts = NOW(6) WHERE id = %s", (k,))
                    elif what < 0.7:
                        cur.execute(f"DELETE FROM {t} WHERE id = %s", (k,))
                    elif what < 0.9:
                        cur.execute(f"INSERT INTO {t} VALUES (%s, 1, 'new', NOW(6))", (next_id[t],))
                        next_id[t] += 1
                    else:  # a multi-row transaction over both tables
                        cur.execute("BEGIN")
                        cur.execute(f"UPDATE {a} SET s = 'tx' WHERE id BETWEEN %s AND %s", (k, k + 20))
                        cur.execute(f"UPDATE {b} SET s = 'tx' WHERE id BETWEEN %s AND %s", (k, k + 20))
                        cur.execute("COMMIT")
                    written["n"] += 1
                    commits.append(time.time())
                    time.sleep(0.002)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)
        finally:
            conn.close()

    out = tmp_path / "out.jsonl"
    cfg = pipeline_config(mariadb, tmp_path, "snap-race", out, snapshot="initial", chunk_rows=2000,
                          include=[f"{DB}.{a}", f"{DB}.{b}"], max_rows_per_second=10_000)
    def stop_after_snapshot() -> None:  # the reader calls itself caught up only once a poll finds nothing new
        done = f'"snapshot":"end","table":"{DB}.{b}"'
        try:
            wait_for(lambda: stop.is_set() or (out.exists() and done in out.read_text()), timeout=600, every=0.1,
                     what="the snapshot's end marker")
            n = written["n"]
            wait_for(lambda: stop.is_set() or written["n"] >= n + 100, what="writes racing the start of the stream")
        finally:
            stop.set()

    thread = threading.Thread(target=writer)
    watcher = threading.Thread(target=stop_after_snapshot)
    thread.start()
    watcher.start()
    try:
        wait_for(lambda: errors or written["n"] >= 20, every=0.01, what="the writer's first writes")
        began = time.monotonic()
        final = run_pipeline(cfg, until_caught_up=True, interval=0.1)
        took = time.monotonic() - began
    finally:
        stop.set()
        thread.join()
        watcher.join()
    assert not errors, errors
    assert final["error"] is None and final["state"] == "stopped"
    assert set(final["checkpoint"]["source"]) - {"selected"} == {"file", "offset", "skip", "gtid", "gtid_pos", "server"}
    final = run_pipeline(cfg, until_caught_up=True, interval=0.1)  # the changes after the first run caught up
    assert final["error"] is None

    rows = read_jsonl(out)
    reads = [r for r in rows if r["op"] == "read"]
    markers = snapshot_markers(rows)
    assert markers == [(a, "start"), (a, "end"), (b, "start"), (b, "end")]
    stream = [r for r in rows if r["op"] in ("insert", "update", "delete")]
    # the writes raced the snapshot: many were committed while it was being read
    began_read, ended_read = snapshot_window(rows)
    assert ended_read - began_read > 1.0
    assert sum(began_read < c < ended_read for c in commits) > 50
    # every change comes after all snapshot rows, from the snapshot's position on
    snap_pos = (reads[0]["pos"]["file"], reads[0]["pos"]["offset"])
    assert rows.index(stream[0]) > rows.index(reads[-1])
    assert min((r["pos"]["file"], r["pos"]["offset"]) for r in stream) >= snap_pos
    # nothing lost, nothing twice: applying strictly in order gives today's tables
    state = apply_strict(rows)
    assert_tables_match(state, root, a, b)
    n = len(reads)
    print(f"\nsnapshot: {n} rows + {len(stream)} changes racing ({written['n']} writes) in {took:.1f}s")


def test_resume_after_stop_mid_snapshot(mariadb: Any, root: Any, ray_session: None, tmp_path: Path) -> None:
    from dbus_ray.checkpoints import FileCheckpointStore
    from dbus_ray.pipeline import run_pipeline

    a, b = table_name("snap_ra"), table_name("snap_rb")
    for t in (a, b):
        execute(root, f"CREATE TABLE {t} (id INT PRIMARY KEY, v INT, s VARCHAR(40))")
        fill(root, t, 5000)
    out = tmp_path / "out.jsonl"
    cfg = pipeline_config(mariadb, tmp_path, "snap-resume", out, snapshot="initial", chunk_rows=1500,
                          include=[f"{DB}.{a}", f"{DB}.{b}"],
                          flow={"read_batch_rows": 500, "max_rows_in_flight": 1000})
    final = run_pipeline(cfg, max_rows=7000, interval=0.05)
    assert final["error"] is None
    saved = FileCheckpointStore(cfg.pipeline_dir).load()["source"]["snapshot"]
    assert saved["tables_done"] == [f"{DB}.{a}"] and saved["table"] == f"{DB}.{b}"
    last = saved["last_pk"][0]
    assert 0 < last < 4999 and saved["rows"] == last + 1
    first_rows = len(read_jsonl(out))
    # changes while stopped: to the table done, and to the unfinished one on both sides of where it stopped
    execute(
        root,
        f"UPDATE {a} SET v = -1 WHERE id < 10",
        f"DELETE FROM {a} WHERE id BETWEEN 100 AND 104",
        f"UPDATE {b} SET v = -2 WHERE id IN ({last - 1}, {last + 1}, 4998)",
        f"DELETE FROM {b} WHERE id IN ({last - 2}, {last + 2})",
        f"INSERT INTO {b} VALUES (20000, 1, 'late')",
        f"INSERT INTO {a} VALUES (20000, 1, 'late')",
    )
    final = run_pipeline(cfg, until_caught_up=True, interval=0.05)
    assert final["error"] is None
    assert set(final["checkpoint"]["source"]) - {"selected"} == {"file", "offset", "skip", "gtid", "gtid_pos", "server"}
    rows = read_jsonl(out)
    second = rows[first_rows:]
    # each row is read once over both runs; the unfinished table went on after its last key
    for t in (a, b):
        ids = [r["key"]["id"] for r in rows if r["op"] == "read" and r["table"] == t]
        assert len(ids) == len(set(ids)), t
    resumed_reads = [r["key"]["id"] for r in second if r["op"] == "read"]
    assert resumed_reads and min(resumed_reads) == last + 1 and 20000 in resumed_reads
    markers = snapshot_markers(rows)
    assert markers == [(a, "start"), (a, "end"), (b, "start"), (b, "end")]
    # the stream starts at the first snapshot's position: the changes made while stopped all arrive,
    # including those the resumed snapshot's reads already hold (at-least-once) ...
    changed = [r for r in second if r["op"] in ("insert", "update", "delete")]
    assert len(changed) == 10 + 5 + 3 + 2 + 1 + 1
    first_pos = (rows[1]["pos"]["file"], rows[1]["pos"]["offset"])
    assert all((r["pos"]["file"], r["pos"]["offset"]) >= first_pos for r in changed)
    # ... and applying everything in order gives today's tables
    state = apply_upserts(rows)
    assert_tables_match(state, root, a, b)


def test_when_needed_snapshots_after_purge(mariadb: Any, root: Any, ray_session: None, tmp_path: Path) -> None:
    from dbus_ray.pipeline import run_pipeline

    t = table_name("snap_purge")
    execute(root, f"CREATE TABLE {t} (id INT PRIMARY KEY, v INT, s VARCHAR(40))")
    fill(root, t, 300)
    out = tmp_path / "out.jsonl"
    cfg = pipeline_config(mariadb, tmp_path, "snap-purge", out, snapshot="when_needed", start=position(root),
                          include=[f"{DB}.{t}"])
    execute(root, f"INSERT INTO {t} VALUES (1000, 1, 'x')")
    final = run_pipeline(cfg, until_caught_up=True, interval=0.05)  # no checkpoint, `start` is there: no snapshot
    assert final["error"] is None
    assert [r["op"] for r in read_jsonl(out)] == ["insert"]
    old_file = final["checkpoint"]["source"]["file"]
    # the checkpoint's file goes away, with changes in it nobody read
    execute(root, f"UPDATE {t} SET v = 5 WHERE id < 50", "FLUSH BINARY LOGS", f"DELETE FROM {t} WHERE id >= 250")
    execute(root, "FLUSH BINARY LOGS")
    newest = position(root).split(":")[0]
    def purged() -> bool:  # a file stays while a binlog reader is still on it or InnoDB still needs it
        with root.cursor() as cur:
            cur.execute(f"PURGE BINARY LOGS TO '{newest}'")
            cur.execute("SHOW BINARY LOGS")
            return old_file not in [r[0] for r in cur.fetchall()]

    wait_for(purged, timeout=20, every=0.1, what=f"{old_file} purged")
    never = source(mariadb, include=[f"{DB}.{t}"])
    with pytest.raises(DbusError, match=rf"binlog file {old_file} \(checkpoint\) is no longer on"):
        never.open(final["checkpoint"]["source"])
    execute(root, f"INSERT INTO {t} VALUES (2000, 2, 'after')")  # after the purge: in the snapshot
    final = run_pipeline(cfg, until_caught_up=True, interval=0.05)
    assert final["error"] is None
    rows = read_jsonl(out)[1:]
    assert [r["op"] for r in rows if r["op"] != "ddl"] == ["read"] * 251
    execute(root, f"UPDATE {t} SET s = 'streamed' WHERE id = 2000")
    final = run_pipeline(cfg, until_caught_up=True, interval=0.05)
    rows = read_jsonl(out)[1:]
    assert rows[-1]["op"] == "update" and rows[-1]["after"]["s"] == "streamed"
    state = apply_strict(rows)
    assert_tables_match(state, root, t)


def test_example_config_parses() -> None:
    from dbus_ray.config import load_config

    path = Path(__file__).resolve().parents[2] / "configs" / "mysql-snapshot.yaml"
    cfg = load_config(path, {"DBUS_MYSQL_PASSWORD": "pw"})
    assert cfg.source.options.snapshot == "initial" and cfg.source.options.chunk_rows == 10_000
