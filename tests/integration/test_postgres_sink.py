"""The `postgres` sink against a real MariaDB and PostgreSQL: a mysql pipeline's inserts, updates, primary-key
changes, deletes, NULLs and common types end in a PostgreSQL table equal to the MariaDB table row for row;
ADD/DROP COLUMN follow the source; other DDL stops the sink; an initial snapshot; kill -9 of the pipeline's
actor mid-stream (once right after a commit, once while the sink's transaction is open), then resume: still
equal, every change applied once (an audit trigger on the target records each applied row version), and
the bookkeeping checkpoint is the end of what was applied."""

from __future__ import annotations

import datetime as dt
import decimal
import random
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from dbus_ray.config import build, parse_config
from dbus_ray.mysql.source import MysqlOptions, MysqlSource
from dbus_ray.pipeline import Pipeline, actor_name, run_pipeline
from dbus_ray.sinks.postgres import PostgresCheckpointStore, PostgresOptions
from dbus_ray.validation import Invalid
from tests.support.helpers import drain, execute, kill_when, position, table_name, wait_for

pytestmark = pytest.mark.integration
DB = "dbus_test"

COLUMNS = """id INT PRIMARY KEY, counter INT NOT NULL DEFAULT 0, s VARCHAR(40), n DECIMAL(12,3), f DOUBLE,
    r FLOAT, d DATE, ts DATETIME(3), b VARBINARY(16), tm TIME, u BIGINT UNSIGNED, e ENUM('a','b'), j JSON,
    t TINYINT, y YEAR"""
#: the PostgreSQL types the sink creates for COLUMNS (the documented mapping, `dbus_ray.sinks.postgres_types`)
PG_TYPES = {"id": "integer", "counter": "integer", "s": "text", "n": "numeric(12,3)", "f": "double precision",
            "r": "real", "d": "text", "ts": "text", "b": "bytea", "tm": "interval", "u": "numeric(20,0)",
            "e": "text", "j": "text", "t": "smallint", "y": "integer"}


def normalise(value: Any) -> Any:
    """A MariaDB value as the type mapping documents it in PostgreSQL: dates as ISO text."""
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, bytearray):
        return bytes(value)
    return value


def mariadb_rows(server: Any, table: str) -> list[tuple[Any, ...]]:
    conn = server.root_connect(DB)
    try:
        with conn.cursor() as cur:
            cur.execute(f"SELECT * FROM {table} ORDER BY id")
            names = [c[0] for c in cur.description]
            return [names, *(tuple(normalise(v) for v in row) for row in cur.fetchall())]
    finally:
        conn.close()


def postgres_rows(pg: Any, schema: str, table: str) -> list[Any]:
    with pg.connect() as conn:
        cur = conn.execute(f'SELECT * FROM "{schema}"."{table}" ORDER BY id')
        names = [c.name for c in cur.description]
        rows = [tuple(float(v) if isinstance(v, float) else v for v in row) for row in cur.fetchall()]
    return [names, *rows]


def assert_equal(server: Any, pg: Any, schema: str, table: str) -> None:
    source, target = mariadb_rows(server, table), postgres_rows(pg, schema, table)
    assert source[0] == target[0], f"columns differ: {source[0]} vs {target[0]}"
    src = {row[0]: row for row in source[1:]}
    dst = {row[0]: row for row in target[1:]}
    assert src.keys() == dst.keys(), (f"keys only at the source {sorted(src.keys() - dst.keys())[:10]}, only in "
                                      f"PostgreSQL {sorted(dst.keys() - src.keys())[:10]}")
    for key, row in src.items():
        assert row == dst[key], f"row {key}: MariaDB {row} != PostgreSQL {dst[key]}"


def config(name: str, server: Any, pg: Any, tmp_path: Path, start: str, tables: list[str],
           source: dict[str, Any] | None = None, **sink: Any) -> Any:
    raw = {
        "name": name,
        "source": {"type": "mysql", "dsn": server.dsn, "start": start, "include": [f"{DB}.{t}" for t in tables],
                   "server_id": random.randint(20_000, 60_000), **(source or {})},
        "sinks": [{"name": "pg", "type": "postgres", "dsn": pg.conninfo(), "schema": f"copy_{name}", **sink}],
        "checkpoint": {"store": "postgres"},
        "flow": {"read_batch_rows": 200, "max_rows_in_flight": 2000, "sink_batch_rows": 500, "linger_ms": 20},
        "data_dir": str(tmp_path / "data"),
    }
    return parse_config(raw, f"{name}.yaml", {})


def workload(conn: Any, table: str, rounds: int, first_id: int, rng: random.Random,
             without: tuple[str, ...] = ()) -> int:
    """Inserts, updates (counter + 1), primary-key changes, deletes and NULLs; returns the next free id."""
    nid = first_id
    for _ in range(rounds):
        with conn.cursor() as cur:
            for _ in range(5):
                row = {"id": nid, "s": rng.choice([None, f"s{nid}", "ünïcødé ✓", ""]),
                       "n": rng.choice([None, decimal.Decimal(rng.randint(-10**8, 10**8)) / 1000]),
                       "f": rng.choice([None, rng.random() * 1e6, -0.5]), "r": rng.choice([None, 0.1, 2.5]),
                       "d": rng.choice([None, "2024-02-29", "1999-12-31"]),
                       "ts": rng.choice([None, "2024-01-02 03:04:05.678", "2001-01-01 00:00:00"]),
                       "b": rng.choice([None, b"\x00\x01\xff", b""]),
                       "tm": rng.choice([None, "-838:59:59", "12:34:56"]), "u": rng.choice([None, 2**64 - 1, 0]),
                       "e": rng.choice([None, "a", "b"]), "j": rng.choice([None, '{"k": [1, 2]}']),
                       "t": rng.choice([None, -128, 127]), "y": rng.choice([None, 2024, 1901])}
                names = [c for c in row if c not in without]
                cur.execute(f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join(['%s'] * len(names))})",
                            [row[c] for c in names])
                nid += 1
            cur.execute(f"UPDATE {table} SET counter = counter + 1, s = CONCAT(IFNULL(s, ''), 'x') "
                        f"ORDER BY RAND() LIMIT 3")
            cur.execute(f"UPDATE {table} SET counter = counter + 1, n = NULL, b = NULL "
                        f"WHERE id % 7 = {nid % 7} LIMIT 5")
            cur.execute(f"UPDATE {table} SET id = id + 1000000, counter = counter + 1 WHERE id < 1000000 "
                        f"ORDER BY RAND() LIMIT 1")  # a primary-key change
            cur.execute(f"DELETE FROM {table} ORDER BY RAND() LIMIT 1")
    return nid


def test_options_errors_name_the_key() -> None:
    with pytest.raises(Invalid) as exc:
        build(PostgresOptions, {"dsn": "host=x", "ddl": "maybe"}, "sinks[0]")
    assert exc.value.key == "sinks[0].ddl"
    with pytest.raises(Invalid) as exc:
        build(PostgresOptions, {"dsn": "host=x", "table": "{nope}"}, "sinks[0]")
    assert exc.value.key == "sinks[0].table" and "{db} and {table}" in exc.value.reason


@pytest.mark.usefixtures("ray_session")
def test_pipeline_keeps_an_equal_copy_and_follows_add_drop_column(mariadb: Any, postgres: Any, tmp_path: Path) -> None:
    t = table_name("pgcopy")
    conn = mariadb.root_connect(DB)
    try:
        execute(conn, "SET time_zone = '+00:00'", f"CREATE TABLE {t} ({COLUMNS})")
        start = position(conn)
        conn.autocommit(True)
        nid = workload(conn, t, 20, 1, random.Random(1))
    finally:
        conn.close()
    name = f"pg{uuid.uuid4().hex[:6]}"
    cfg = config(name, mariadb, postgres, tmp_path, start, [t], ddl="follow")
    final = run_pipeline(cfg, until_caught_up=True, interval=0.1)
    assert final["error"] is None, final
    schema = f"copy_{name}"
    assert_equal(mariadb, postgres, schema, t)
    with postgres.connect() as pconn:
        types = dict(pconn.execute("SELECT column_name, CASE WHEN data_type = 'numeric' THEN "
                                   "format('numeric(%%s,%%s)', numeric_precision, numeric_scale) ELSE data_type END "
                                   "FROM information_schema.columns WHERE table_schema = %s AND table_name = %s",
                                   (schema, t)).fetchall())
    assert types == PG_TYPES
    saved = PostgresCheckpointStore(name, postgres.conninfo()).load()
    assert saved is not None and saved["source"] == final["checkpoint"]["source"]

    conn = mariadb.root_connect(DB)
    try:
        execute(conn, f"ALTER TABLE {t} ADD COLUMN extra INT NOT NULL DEFAULT 7, ADD COLUMN note VARCHAR(10)",
                f"ALTER TABLE {t} DROP COLUMN r")
        conn.autocommit(True)
        nid = workload(conn, t, 5, nid, random.Random(2), without=("r",))
        execute(conn, f"UPDATE {t} SET extra = extra + 1, note = 'n' WHERE id % 2 = 0")
    finally:
        conn.close()
    final = run_pipeline(cfg, until_caught_up=True, interval=0.1)
    assert final["error"] is None, final
    assert_equal(mariadb, postgres, schema, t)

    # NOT NULL columns added without a DEFAULT: MySQL gives the existing rows its implicit 0 and '', so must
    # the target (the server's own SELECT is the oracle)
    conn = mariadb.root_connect(DB)
    try:
        execute(conn, f"ALTER TABLE {t} ADD COLUMN zero INT NOT NULL, ADD COLUMN blank VARCHAR(4) NOT NULL")
    finally:
        conn.close()
    final = run_pipeline(cfg, until_caught_up=True, interval=0.1)
    assert final["error"] is None, final
    assert_equal(mariadb, postgres, schema, t)

    conn = mariadb.root_connect(DB)
    try:
        execute(conn, f"ALTER TABLE {t} MODIFY COLUMN s VARCHAR(80)")
    finally:
        conn.close()
    final = run_pipeline(cfg, until_caught_up=True, interval=0.1)
    assert final["error"] is not None and "MODIFY COLUMN s VARCHAR(80)" in final["error"], final
    assert "dbus checkpoint set" in final["error"] and "\n" not in final["error"]


@pytest.mark.usefixtures("ray_session")
def test_snapshot_then_stream_keeps_an_equal_copy(mariadb: Any, postgres: Any, tmp_path: Path) -> None:
    t = table_name("pgsnap")
    conn = mariadb.root_connect(DB)
    try:
        execute(conn, "SET time_zone = '+00:00'", f"CREATE TABLE {t} ({COLUMNS})")
        conn.autocommit(True)
        nid = workload(conn, t, 30, 1, random.Random(4))  # rows the snapshot reads
    finally:
        conn.close()
    name = f"ps{uuid.uuid4().hex[:6]}"
    cfg = config(name, mariadb, postgres, tmp_path, "latest", [t], source={"snapshot": "initial", "chunk_rows": 40})
    final = run_pipeline(cfg, until_caught_up=True, interval=0.1)
    assert final["error"] is None, final
    assert_equal(mariadb, postgres, f"copy_{name}", t)
    conn = mariadb.root_connect(DB)
    try:
        conn.autocommit(True)
        workload(conn, t, 10, nid, random.Random(5))
    finally:
        conn.close()
    final = run_pipeline(cfg, until_caught_up=True, interval=0.1)
    assert final["error"] is None, final
    assert_equal(mariadb, postgres, f"copy_{name}", t)


def open_transaction(pg: Any, application: str) -> bool:
    with pg.connect() as conn:
        return bool(conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND "
                                 "xact_start IS NOT NULL AND state <> 'active'", (application,)).fetchone()[0])


@pytest.mark.usefixtures("ray_session")
def test_kill_9_mid_stream_then_resume_applies_each_change_once(mariadb: Any, postgres: Any, tmp_path: Path) -> None:
    t = table_name("pgkill")
    name = f"pk{uuid.uuid4().hex[:6]}"
    schema = f"copy_{name}"
    conn = mariadb.root_connect(DB)
    try:
        execute(conn, "SET time_zone = '+00:00'", f"CREATE TABLE {t} ({COLUMNS})")
        start = position(conn)
    finally:
        conn.close()
    # an existing target table (checked for compatibility, not created) with an audit trigger: each row
    # version (id, counter) the sink applies is recorded; applied twice = recorded twice
    cols = ", ".join(f'"{c}" {ty}' for c, ty in PG_TYPES.items()).replace('"id" integer', '"id" bigint')
    with postgres.connect() as pconn:
        pconn.execute(f'CREATE SCHEMA "{schema}"')
        pconn.execute(f'CREATE TABLE "{schema}"."{t}" ({cols}, PRIMARY KEY (id))')
        pconn.execute(f'CREATE TABLE "{schema}".audit (id bigint, counter integer)')
        pconn.execute(f'CREATE FUNCTION "{schema}".audit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN '
                      f'INSERT INTO "{schema}".audit VALUES (NEW.id, NEW.counter); RETURN NEW; END $$')
        pconn.execute(f'CREATE TRIGGER audit AFTER INSERT OR UPDATE ON "{schema}"."{t}" FOR EACH ROW '
                      f'EXECUTE FUNCTION "{schema}".audit()')
    cfg = config(name, mariadb, postgres, tmp_path, start, [t])
    stop = threading.Event()
    rounds = [0]

    def write() -> None:
        wconn = mariadb.root_connect(DB)
        wconn.autocommit(True)
        rng, nid = random.Random(3), 1
        try:
            while not stop.is_set() and rounds[0] < 200:
                nid = workload(wconn, t, 1, nid, rng)
                rounds[0] += 1
        finally:
            wconn.close()

    writer = threading.Thread(target=write, daemon=True)
    t0 = time.monotonic()
    pipeline = Pipeline(cfg)
    pipeline.start()
    try:
        writer.start()
        for kill in range(2):
            wait_for(lambda k=kill: rounds[0] >= 40 * (k + 1), 60, "the workload to go on")
            if kill == 0:  # right after a commit
                before = PostgresCheckpointStore(name, postgres.conninfo()).load()
                kill_when(actor_name(name, "reader"),
                          lambda b=before: PostgresCheckpointStore(name, postgres.conninfo()).load() != b,
                          "a new checkpoint committed")
            else:  # while the sink's transaction is open (rows staged or applied, not committed)
                kill_when(actor_name(name, "reader"), lambda: open_transaction(postgres, f"dbus-{name}-pg"),
                          "the sink's transaction open")
            pipeline.kill()
            pipeline = Pipeline(cfg)
            pipeline.start()
        writer.join(60)
        final = pipeline.stop()
    finally:
        stop.set()
        pipeline.kill()
    assert final["error"] is None, final
    t1 = time.monotonic()
    final = run_pipeline(cfg, until_caught_up=True, interval=0.1)
    assert final["error"] is None, final
    assert_equal(mariadb, postgres, schema, t)
    print(f"\npostgres sink, kill -9 x2: {rounds[0]} workload rounds, {len(mariadb_rows(mariadb, t)) - 1} rows; "
          f"runs with kills {t1 - t0:.1f} s, resume {time.monotonic() - t1:.1f} s")
    with postgres.connect() as pconn:
        twice = pconn.execute(f'SELECT id, counter, count(*) FROM "{schema}".audit GROUP BY 1, 2 '
                              'HAVING count(*) > 1 LIMIT 5').fetchall()
        applied = pconn.execute(f'SELECT count(*) FROM "{schema}".audit').fetchone()[0]
    assert applied > 0 and not twice, f"row versions applied twice (id, counter, times): {twice}"
    # the bookkeeping checkpoint is the end of what was applied: resuming from it reads no change of the table
    saved = PostgresCheckpointStore(name, postgres.conninfo()).load()
    src = MysqlSource("pg-after", MysqlOptions(dsn=mariadb.dsn, server_id=random.randint(60_001, 70_000),
                                               include=[f"{DB}.{t}"]))
    src.open(saved["source"])
    try:
        left = sum(b.num_rows for b in drain(src))
    finally:
        src.close()
    assert left == 0, f"{left} row changes after the bookkeeping checkpoint {saved}"


def test_store_loads_what_the_sink_committed_and_saves_only_operator_checkpoints(postgres: Any) -> None:
    name = f"st{uuid.uuid4().hex[:6]}"
    store = PostgresCheckpointStore(name, postgres.conninfo(), "bk.checkpoints")
    assert store.load() is None  # no bookkeeping table yet
    store.save({"source": {"file": "b.000001", "offset": 4}, "seq": 3, "time": 1.0})  # the reader's: a no-op
    assert store.load() is None
    store.save({"source": {"file": "b.000002", "offset": 9}, "seq": 0, "time": 2.0, "set_by": "operator"})
    with postgres.connect() as conn:
        row = conn.execute("SELECT checkpoint FROM bk.checkpoints WHERE pipeline = %s", (name,)).fetchone()
    assert row[0]["source"] == {"file": "b.000002", "offset": 9}
    assert store.load() == row[0]
