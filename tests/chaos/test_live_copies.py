"""Chaos for the live-copy sinks (`postgres`, `delta`): while a workload of inserts, updates, primary-key changes
and deletes runs on two MariaDB tables, kill -9 in turn the reader, router, batcher and writer of a spread
pipeline, and the target: the PostgreSQL server (postmaster and backends, while the sink's transaction is
open; then started again on its data directory) for `postgres`, the writer frozen mid-commit (a round's first
table committed, the second's merge running) for `delta`. After each fault the pipeline is started again
from the checkpoint its sink committed. At the end the target tables equal `SELECT * FROM` the source tables
row for row and value for value; a table of faults, recovery times and rows is printed.

Short form in `make test`: one round (5 faults per sink); `make chaos` runs DBUS_CHAOS_ROUNDS=5.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from dbus_ray.config import parse_config
from dbus_ray.devstack.postgres import PostgreSQL
from dbus_ray.pipeline import Pipeline, actor_name, run_pipeline
from dbus_ray.sinks.delta import last_commit
from dbus_ray.sinks.postgres import PostgresCheckpointStore
from tests.integration.test_postgres_sink import COLUMNS, assert_equal, open_transaction, workload
from tests.support.helpers import actor_pid, execute, kill_when, position, wait_for
from tests.support.live_copy import assert_delta_equal

pytestmark = pytest.mark.usefixtures("ray_session")
ROUNDS = int(os.environ.get("DBUS_CHAOS_ROUNDS", "1"))
DB = "dbus_test"
STAGES = ("reader", "router", "batcher", "writer")


@pytest.fixture(scope="module")
def own_pg() -> Iterator[PostgreSQL]:
    """A private PostgreSQL of this module: it gets killed."""
    server = PostgreSQL().start()
    try:
        yield server
    finally:
        server.stop()


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def kill_postgres_while(pg: PostgreSQL, writer: int, check: Any) -> None:
    """Freeze the writer's process until `check()` holds (its transaction open), then kill -9 PostgreSQL and
    start it again; the writer goes on and finds its connection gone."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        os.kill(writer, signal.SIGSTOP)
        try:
            if check():
                kill_postgres(pg)
                return
        finally:
            os.kill(writer, signal.SIGCONT)
        time.sleep(0.005)
    raise AssertionError("no moment with the sink's transaction open within 120 s")


def kill_postgres(pg: PostgreSQL) -> None:
    """kill -9 the postmaster and every backend, then start the server again on its data directory."""
    procs = [pg.pid, *children(pg.pid)]
    for pid in procs:
        with contextlib.suppress(ProcessLookupError):  # a backend that ended meanwhile
            os.kill(pid, signal.SIGKILL)
    pg._proc.wait(10)
    wait_for(lambda: not any(alive(p) for p in procs), 30, "the killed postgres processes gone")
    (Path(pg.datadir) / "postmaster.pid").unlink(missing_ok=True)
    pg._proc = pg._run(pg._server_args(pg.port), pg.log_path)
    pg._wait_ready(pg._proc)


class Writes(threading.Thread):
    """The workload of tests/integration/test_postgres_sink.py on two tables, round after round."""

    def __init__(self, server: Any, tables: list[str]) -> None:
        super().__init__(daemon=True)
        self.server, self.tables = server, tables
        self.rounds = 0
        self.stop = threading.Event()

    def run(self) -> None:
        conn = self.server.root_connect(DB)
        conn.autocommit(True)
        rng, nid = random.Random(7), 1
        try:
            while not self.stop.is_set():
                for t in self.tables:
                    nid = workload(conn, t, 1, nid, rng)
                self.rounds += 1
                time.sleep(0.01)
        finally:
            conn.close()


def sink_config(kind: str, name: str, tmp_path: Path, pg: PostgreSQL) -> dict[str, Any]:
    if kind == "postgres":
        return {"name": "copy", "type": "postgres", "dsn": pg.conninfo(), "schema": f"copy_{name}",
                "timeout_s": 10}
    return {"name": "copy", "type": "delta", "path": str(tmp_path / "lake")}


def committed(kind: str, name: str, tables: list[Path], pg: PostgreSQL) -> Any:
    """What the sink committed last (changes with each commit)."""
    if kind == "postgres":
        try:
            return PostgresCheckpointStore(name, pg.conninfo(), timeout_s=2).load()
        except RuntimeError:
            return None
    return tuple(last_commit(t, name)["dbus.batch"] if (t / "_delta_log").is_dir() and last_commit(t, name)
                 else None for t in tables)


def rounds_of(table: Path, pipeline: str) -> int:
    info = last_commit(table, pipeline) if (table / "_delta_log").is_dir() else None
    return int(info["dbus.batch"]) if info else 0


@pytest.mark.parametrize("kind", ["postgres", "delta"])
def test_live_copy_equals_the_source_after_kill_9_of_each_actor_and_the_target(
        kind: str, mariadb: Any, own_pg: PostgreSQL, tmp_path: Path) -> None:
    name = f"lc{kind[0]}{uuid.uuid4().hex[:6]}"
    tables = [f"a_{uuid.uuid4().hex[:8]}", f"b_{uuid.uuid4().hex[:8]}"]
    conn = mariadb.root_connect(DB)
    try:
        execute(conn, "SET time_zone = '+00:00'", *(f"CREATE TABLE {t} ({COLUMNS})" for t in tables))
        start = position(conn)
    finally:
        conn.close()
    raw = {"name": name,
           "source": {"type": "mysql", "dsn": mariadb.dsn, "start": start, "include": [f"{DB}.{t}" for t in tables],
                      "server_id": random.randint(20_000, 60_000)},
           "sinks": [sink_config(kind, name, tmp_path, own_pg)], "checkpoint": {"store": kind},
           "flow": {"placement": "spread", "read_batch_rows": 200, "max_rows_in_flight": 2000,
                    "sink_batch_rows": 500, "linger_ms": 20},
           "data_dir": str(tmp_path / "data")}
    cfg = parse_config(raw, f"{name}.yaml", {})
    lake = [tmp_path / "lake" / DB / t for t in tables]
    target = "PostgreSQL kill -9" if kind == "postgres" else "writer kill -9 mid-commit"
    faults = [*(f"kill -9 {s}" for s in STAGES), target] * ROUNDS
    report: list[tuple[str, float, int]] = []
    writes = Writes(mariadb, tables)
    pipeline = Pipeline(cfg)
    pipeline.start()
    try:
        writes.start()
        for fault in faults:
            at = writes.rounds
            wait_for(lambda a=at: writes.rounds >= a + 5, 60, "the workload to go on")
            before = committed(kind, name, lake, own_pg)
            wait_for(lambda b=before: committed(kind, name, lake, own_pg) != b, 60, "a commit before the fault")
            if fault.startswith("kill -9 ") and fault[8:] in STAGES:
                stage = fault[8:]
                actor = actor_name(name, stage, "copy") if stage in ("batcher", "writer") else actor_name(name, stage)
                kill_when(actor, lambda: True, "any moment")
            elif kind == "postgres":
                kill_postgres_while(own_pg, actor_pid(actor_name(name, "writer", "copy")),
                                    lambda: open_transaction(own_pg, f"dbus-{name}-copy"))
            else:
                kill_when(actor_name(name, "writer", "copy"),
                          lambda: rounds_of(lake[0], name) > rounds_of(lake[1], name), "a round half committed",
                          timeout=120)
            t0 = time.monotonic()
            pipeline.kill()
            before = committed(kind, name, lake, own_pg)
            pipeline = Pipeline(cfg)
            pipeline.start()
            wait_for(lambda b=before: committed(kind, name, lake, own_pg) != b, 120, "a commit after the fault")
            report.append((fault, time.monotonic() - t0, writes.rounds))
        writes.stop.set()
        writes.join(60)
        final = pipeline.stop()
    finally:
        writes.stop.set()
        pipeline.kill()
    assert final["error"] is None, final
    final = run_pipeline(cfg, until_caught_up=True, interval=0.1)
    assert final["error"] is None, final
    rows = []
    for t, path in zip(tables, lake):
        if kind == "postgres":
            assert_equal(mariadb, own_pg, f"copy_{name}", t)
            with psycopg.connect(own_pg.conninfo()) as pconn:
                rows.append(pconn.execute(f'SELECT count(*) FROM "copy_{name}"."{t}"').fetchone()[0])
        else:
            rows.append(assert_delta_equal(mariadb, path, t))
    print(f"\n{kind} sink chaos, {len(faults)} faults, {writes.rounds} workload rounds, rows {rows} (equal to the "
          "source):\n" + "\n".join(f"  {f:<28} first commit after restart {s:5.1f} s  (round {r})"
                                   for f, s, r in report))
    assert len(report) == len(faults)

