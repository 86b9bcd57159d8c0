"""The whole Ray cluster is lost (head and GCS with it, no GCS fault tolerance) under a MariaDB workload; a
new cluster, built from nothing, gets a controller pointed at the same durable state (`--state file://`),
and every pipeline runs again from its checkpoint: 0 rows lost, against the rows MariaDB holds.

One pipeline keeps its checkpoint in Ray's GCS (`store: gcs`, copied to the durable state by the
controller), one in a file. Runs in its own pytest process (it starts and stops its own Ray clusters)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray

from dbus_ray.actors.controller import get_controller
from dbus_ray.constants import checkpoint_key
from dbus_ray.devstack import MariaDB
from dbus_ray.storage.durable import FileKV
from tests.support.changes import read_jsonl
from tests.support.helpers import execute, position, table_name, wait_for
from tests.support.ray_cluster import start_cluster

PW_VAR = "HA_TEST_MARIADB_PW"  # in the controller's environment: it outlives the cluster, unlike submitted values


@pytest.fixture()
def env(mariadb: MariaDB) -> Iterator[None]:
    os.environ[PW_VAR] = mariadb.password  # before the clusters start: their workers inherit it
    yield
    del os.environ[PW_VAR]
    if ray.is_initialized():
        ray.shutdown()


def spec(tmp_path: Path, mariadb: MariaDB, name: str, table: str, start: str, store: str) -> dict[str, Any]:
    return {"name": name, "data_dir": str(tmp_path / "data"),
            "source": {"type": "mysql", "dsn": f"mysql://{mariadb.user}:${{{PW_VAR}}}@127.0.0.1:{mariadb.port}",
                       "start": start, "include": [f"dbus_test.{table}"]},
            "sinks": [{"name": "file", "type": "jsonl", "path": str(tmp_path / f"{name}.jsonl")}],
            "flow": {"read_batch_rows": 200, "max_rows_in_flight": 2000},
            "checkpoint": {"store": store}}


def insert(conn: Any, table: str, first: int, count: int) -> None:
    for lo in range(first, first + count, 500):
        hi = min(first + count, lo + 500)
        execute(conn, f"INSERT INTO {table} (id, v) VALUES " + ",".join(f"({i}, 'r{i}')" for i in range(lo, hi)))


def ids(path: Path, table: str) -> list[int]:
    return [r["key"]["id"] for r in read_jsonl(path) if r["op"] == "insert" and r["table"].endswith(table)]


def delivered_all(path: Path, table: str, expected: set[int]) -> bool:
    return set(ids(path, table)) >= expected


def state(controller: Any, name: str) -> dict[str, Any]:
    return ray.get(controller.get.remote(name))


def test_a_cluster_rebuilt_from_nothing_resumes_every_pipeline(env: None, mariadb: MariaDB, root: Any,
                                                               tmp_path: Path) -> None:
    table = table_name("ha")
    execute(root, f"CREATE TABLE {table} (id INT PRIMARY KEY, v VARCHAR(20))")
    start = position(root)
    insert(root, table, 1, 3000)
    url = f"file://{tmp_path / 'state'}"
    names = {"ha-gcs": "gcs", "ha-file": "file"}

    first = start_cluster()
    controller = get_controller(state=url)
    for name, store in names.items():
        ray.get(controller.submit.remote(spec(tmp_path, mariadb, name, table, start, store)))
    insert(root, table, 3001, 3000)  # while it runs
    expected = set(range(1, 6001))
    for name in names:
        wait_for(lambda n=name: delivered_all(tmp_path / f"{n}.jsonl", table, expected), timeout=90,
                 what=f"{name}: the first 6,000 rows")
        wait_for(lambda n=name: state(controller, n)["checkpointed"], what=f"{name}: a saved checkpoint")
    durable = FileKV(tmp_path / "state")
    wait_for(lambda: durable.get(checkpoint_key("ha-gcs")), what="the gcs checkpoint copied to the state")
    before = {n: len(ids(tmp_path / f"{n}.jsonl", table)) for n in names}
    epochs = {n: state(controller, n)["epoch"] for n in names}

    # the cluster is gone: head, GCS, every node and actor
    ray.shutdown()
    first.shutdown()
    insert(root, table, 6001, 2000)  # the database goes on without the bus
    expected = set(range(1, 8001))

    started = time.monotonic()
    second = start_cluster()
    cluster_up = time.monotonic() - started
    try:
        done = subprocess.run([sys.executable, "-m", "dbus_ray.cli", "controller", "--state", url,
                               "--address", second.address], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.endswith(f"state {url}\n"), done.stdout
        warnings = [line for line in done.stderr.splitlines() if "GCS fault tolerance is off" in line]
        assert len(warnings) == 1 and warnings[0].startswith("warning: "), done.stderr[-2000:]
        controller = get_controller(create=False)
        controller_up = time.monotonic() - started
        assert {p["name"] for p in ray.get(controller.list.remote())} == set(names)
        assert ray.get(controller.checkpoint.remote("ha-gcs")) is not None, "the gcs checkpoint was not restored"
        for name in names:
            wait_for(lambda n=name: delivered_all(tmp_path / f"{n}.jsonl", table, expected), timeout=120,
                     what=f"{name}: every row after the rebuild")
        recovery = time.monotonic() - started
        insert(root, table, 8001, 1000)  # and it keeps going
        expected = set(range(1, 9001))
        for name in names:
            wait_for(lambda n=name: delivered_all(tmp_path / f"{n}.jsonl", table, expected), timeout=60,
                     what=f"{name}: rows after the rebuild")
            record = state(controller, name)
            assert record["state"] == "running" and record["epoch"] > epochs[name], record
            seen = ids(tmp_path / f"{name}.jsonl", table)
            dups = sum(c - 1 for c in Counter(seen).values())
            assert set(seen) == expected, f"{name}: rows lost or foreign"
            assert dups < before[name], f"{name}: {dups} duplicates: it started over instead of from its checkpoint"
            print(f"{name} (checkpoint store {names[name]}): {len(expected)} rows, 0 lost, {dups} duplicates "
                  f"(replayed after the last checkpoint before the loss)")
        print(f"cluster rebuilt from nothing: Ray up after {cluster_up:.1f}s, controller restored after "
              f"{controller_up:.1f}s, every pipeline caught up after {recovery:.1f}s")
        for name in names:
            ray.get(controller.remove.remote(name))
        ray.kill(controller, no_restart=True)
    finally:
        ray.shutdown()
        second.shutdown()
