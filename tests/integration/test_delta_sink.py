"""The `delta` sink against a real MariaDB: an initial snapshot and a stream of inserts, updates, primary-key
changes, deletes and NULLs end in Delta tables equal to `SELECT * FROM` the MariaDB tables row for row and value
for value (the type-fidelity table too, with the documented type mapping), the checkpoint in the newest
commit's info; the writer killed -9 mid-commit (one table of a round committed, the next one's merge running)
and resumed: still equal, the table readable by pandas while rows arrive; compaction leaves one file."""

from __future__ import annotations

import json
import random
import threading
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from deltalake import DeltaTable

from dbus_ray.config import build, parse_config
from dbus_ray.pipeline import Pipeline, actor_name, run_pipeline
from dbus_ray.sinks.delta import DeltaCheckpointStore, DeltaOptions, compact, last_commit
from dbus_ray.validation import Invalid
from tests.integration.test_postgres_sink import COLUMNS, workload
from tests.support.helpers import execute, kill_when, position, table_name, wait_for
from tests.support.live_copy import assert_delta_equal
from tests.support.mysql_types import create_type_table

pytestmark = pytest.mark.integration
DB = "dbus_test"

#: the Delta column types the sink creates for COLUMNS (the documented mapping, `dbus_ray.sinks.delta_types`)
DELTA_TYPES = {"id": pa.int32(), "counter": pa.int32(), "s": pa.string(), "n": pa.decimal128(12, 3),
               "f": pa.float64(), "r": pa.float32(), "d": pa.string(), "ts": pa.string(), "b": pa.binary(),
               "tm": pa.int64(), "u": pa.decimal128(20, 0), "e": pa.string(), "j": pa.string(), "t": pa.int8(),
               "y": pa.int32()}


def config(name: str, server: Any, tmp_path: Path, start: str, tables: list[str],
           source: dict[str, Any] | None = None, flow: dict[str, Any] | None = None, **sink: Any) -> Any:
    raw = {
        "name": name,
        "source": {"type": "mysql", "dsn": server.dsn, "start": start, "include": [f"{DB}.{t}" for t in tables],
                   "server_id": random.randint(20_000, 60_000), **(source or {})},
        "sinks": [{"name": "lake", "type": "delta", "path": str(tmp_path / "lake"), **sink}],
        "checkpoint": {"store": "delta"},
        "flow": {"read_batch_rows": 200, "max_rows_in_flight": 2000, "sink_batch_rows": 500, "linger_ms": 20,
                 **(flow or {})},
        "data_dir": str(tmp_path / "data"),
    }
    return parse_config(raw, f"{name}.yaml", {})


def test_options_errors_name_the_key() -> None:
    with pytest.raises(Invalid) as exc:
        build(DeltaOptions, {"path": "/x", "table": "{nope}"}, "sinks[0]")
    assert exc.value.key == "sinks[0].table" and "{db} and {table}" in exc.value.reason
    with pytest.raises(Invalid) as exc:
        build(DeltaOptions, {"path": "s3://bucket/x"}, "sinks[0]")
    assert exc.value.key == "sinks[0].path"


@pytest.mark.usefixtures("ray_session")
def test_snapshot_then_stream_keeps_equal_copies_with_the_type_mapping(mariadb: Any, tmp_path: Path) -> None:
    t, types = table_name("dlcopy"), table_name("dltypes")
    conn = mariadb.root_connect(DB)
    try:
        execute(conn, "SET time_zone = '+00:00'", f"CREATE TABLE {t} ({COLUMNS})")
        create_type_table(conn, types)
        conn.autocommit(True)
        nid = workload(conn, t, 30, 1, random.Random(4))  # rows the snapshot reads
    finally:
        conn.close()
    name = f"dl{uuid.uuid4().hex[:6]}"
    cfg = config(name, mariadb, tmp_path, "latest", [t, types], source={"snapshot": "initial", "chunk_rows": 40})
    final = run_pipeline(cfg, until_caught_up=True, interval=0.1)
    assert final["error"] is None, final
    lake = tmp_path / "lake" / DB
    assert assert_delta_equal(mariadb, lake / types, types) == 4
    assert_delta_equal(mariadb, lake / t, t)
    schema = pa.schema(DeltaTable(str(lake / t)).schema().to_arrow())
    assert {f.name: f.type for f in schema} == DELTA_TYPES

    conn = mariadb.root_connect(DB)
    try:
        conn.autocommit(True)
        workload(conn, t, 20, nid, random.Random(5))
        execute(conn, f"UPDATE {types} SET id = 10 WHERE id = 1", f"DELETE FROM {types} WHERE id = 2",
                f"UPDATE {types} SET vc = 'changed', bu = 7 WHERE id = 3")
    finally:
        conn.close()
    final = run_pipeline(cfg, until_caught_up=True, interval=0.1)
    assert final["error"] is None, final
    assert assert_delta_equal(mariadb, lake / types, types) == 3
    rows = assert_delta_equal(mariadb, lake / t, t)
    info = last_commit(lake / t, name)
    assert info["operation"] == "MERGE"
    assert DeltaCheckpointStore(name, str(tmp_path / "lake")).load() == json.loads(info["dbus.checkpoint"])
    assert json.loads(info["dbus.checkpoint"])["source"] == final["checkpoint"]["source"]
    # small files: compaction merges the live files into one, vacuum removes the files of older versions
    before = len(list((lake / t).glob("*.parquet")))
    metrics = compact(lake / t, vacuum_hours=0)
    live = DeltaTable(str(lake / t)).file_uris()
    assert before > 1 and len(live) == 1 and len(list((lake / t).glob("*.parquet"))) == 1, (before, metrics)
    assert DeltaTable(str(lake / t)).to_pandas().shape[0] == rows
    assert_delta_equal(mariadb, lake / t, t)


def rounds_of(table: Path, pipeline: str) -> int:
    info = last_commit(table, pipeline) if (table / "_delta_log").is_dir() else None
    return int(info["dbus.batch"]) if info else 0


@pytest.mark.usefixtures("ray_session")
def test_writer_killed_mid_commit_then_resume_keeps_equal_copies(mariadb: Any, tmp_path: Path) -> None:
    a, b = f"a_{uuid.uuid4().hex[:8]}", f"b_{uuid.uuid4().hex[:8]}"  # a round merges a first, then b
    conn = mariadb.root_connect(DB)
    try:
        execute(conn, "SET time_zone = '+00:00'", f"CREATE TABLE {a} ({COLUMNS})", f"CREATE TABLE {b} ({COLUMNS})")
        start = position(conn)
    finally:
        conn.close()
    name = f"dk{uuid.uuid4().hex[:6]}"
    cfg = config(name, mariadb, tmp_path, start, [a, b], flow={"placement": "spread"})
    lake = tmp_path / "lake" / DB
    stop, rounds, seen = threading.Event(), [0], []

    def write() -> None:
        wconn = mariadb.root_connect(DB)
        wconn.autocommit(True)
        rng, nid = random.Random(3), 1
        try:
            while not stop.is_set() and rounds[0] < 150:
                nid = workload(wconn, a, 1, nid, rng)
                workload(wconn, b, 1, nid - 5, rng)
                rounds[0] += 1
        finally:
            wconn.close()

    def read_live() -> None:  # a reader of the live table: pandas sees whole commits only
        while not stop.is_set():
            try:
                seen.append(len(DeltaTable(str(lake / a)).to_pandas()))
            except Exception:  # noqa: BLE001 - the table is not created yet
                pass
            stop.wait(0.2)

    writer, reader = threading.Thread(target=write, daemon=True), threading.Thread(target=read_live, daemon=True)
    pipeline = Pipeline(cfg)
    pipeline.start()
    torn = 0
    try:
        writer.start()
        reader.start()
        for kill in range(3):
            wait_for(lambda k=kill: rounds[0] >= 30 * (k + 1), 90, "the workload to go on")
            # frozen with a's commit of a round done and b's of the same round not: b's merge is running
            kill_when(actor_name(name, "writer", "lake"),
                      lambda: rounds_of(lake / a, name) > rounds_of(lake / b, name), "a round half committed")
            torn += rounds_of(lake / a, name) > rounds_of(lake / b, name)
            pipeline.kill()
            pipeline = Pipeline(cfg)
            pipeline.start()
        writer.join(90)
        final = pipeline.stop()
    finally:
        stop.set()
        pipeline.kill()
    assert final["error"] is None, final
    assert torn == 3
    final = run_pipeline(cfg, until_caught_up=True, interval=0.1)
    assert final["error"] is None, final
    assert_delta_equal(mariadb, lake / a, a)
    assert_delta_equal(mariadb, lake / b, b)
    assert len(seen) > 3 and max(seen) > 0
