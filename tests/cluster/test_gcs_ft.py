"""GCS fault tolerance on a private Redis (Debian's `redis-server` on loopback): a two-node Ray cluster on this
machine whose head keeps the GCS in Redis (RAY_REDIS_ADDRESS, as `ray-cluster.yaml` starts it). The head's
`gcs_server` is killed with SIGKILL under a MariaDB workload and started again (what systemd or KubeRay does
for a dead head process): the controller keeps its pipelines and epochs, the pipelines keep running through
the outage (same epoch, never restarted), their `gcs` checkpoints survive, 0 rows lost. Prints the time to
recover. Runs in its own pytest process (it starts its own Ray cluster)."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
from ray._private import ray_constants
from ray.cluster_utils import Cluster

from dbus_ray.actors.controller import get_controller
from dbus_ray.devstack import MariaDB
from tests.cluster.test_head_loss import PW_VAR, delivered_all, ids, insert, spec, state
from tests.support.helpers import execute, position, table_name, wait_for
from tests.support.redis import Redis


@pytest.fixture()
def ft_cluster(mariadb: MariaDB) -> Iterator[Cluster]:
    assert not ray.is_initialized(), "tests/cluster must run in a pytest process of its own (see Makefile)"
    redis = Redis().start()
    os.environ[PW_VAR] = mariadb.password
    os.environ["RAY_REDIS_ADDRESS"] = redis.address  # read by the head's Node, as `ray start --head` does
    try:
        c = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 1, "redis_password": redis.password,
            "_system_config": {"gcs_rpc_server_reconnect_timeout_s": 120}})
        c.add_node(num_cpus=1)
        ray.init(address=c.address, namespace="dbus")
        c.wait_for_nodes()
        yield c
        ray.shutdown()
        c.shutdown()
    finally:
        del os.environ["RAY_REDIS_ADDRESS"], os.environ[PW_VAR]
        redis.stop()


def answers(controller: Any) -> bool:
    try:
        ray.get(controller.info.remote(), timeout=5)
        return True
    except Exception:  # noqa: BLE001 - GCS or controller not back yet
        return False


def test_gcs_server_kill_9_loses_nothing(ft_cluster: Cluster, mariadb: MariaDB, root: Any, tmp_path: Path) -> None:
    table = table_name("ft")
    execute(root, f"CREATE TABLE {table} (id INT PRIMARY KEY, v VARCHAR(20))")
    start = position(root)
    insert(root, table, 1, 2000)
    controller = get_controller()  # no --state: GCS FT on, so checkpoint store gcs is accepted
    assert ray.get(controller.info.remote())["gcs_storage"] == "redis"
    names = {"ft-gcs": "gcs", "ft-file": "file"}
    for name, store in names.items():
        ray.get(controller.submit.remote(spec(tmp_path, mariadb, name, table, start, store)))
    expected = set(range(1, 2001))
    for name in names:
        wait_for(lambda n=name: delivered_all(tmp_path / f"{n}.jsonl", table, expected), timeout=90,
                 what=f"{name}: the first rows")
        wait_for(lambda n=name: state(controller, n)["checkpointed"], what=f"{name}: a saved checkpoint")
    before = {n: state(controller, n) for n in names}
    checkpoint = ray.get(controller.checkpoint.remote("ft-gcs"))

    head = ft_cluster.head_node
    gcs = head.all_processes[ray_constants.PROCESS_TYPE_GCS_SERVER][0].process
    os.kill(gcs.pid, signal.SIGKILL)
    killed = time.monotonic()
    gcs.wait(timeout=30)
    head.kill_gcs_server(check_alive=False)  # forget the dead process
    insert(root, table, 2001, 2000)  # rows go on while the GCS is down
    time.sleep(2)  # the GCS stays down a while (a supervisor's restart delay): nothing to wait for
    head.start_gcs_server()
    wait_for(lambda: answers(controller), timeout=120, what="the controller answering after the GCS restart")
    answered = time.monotonic() - killed

    expected = set(range(1, 4001))
    for name in names:
        wait_for(lambda n=name: delivered_all(tmp_path / f"{n}.jsonl", table, expected), timeout=120,
                 what=f"{name}: the rows written during the outage")
    caught_up = time.monotonic() - killed
    insert(root, table, 4001, 1000)
    expected = set(range(1, 5001))
    for name in names:
        wait_for(lambda n=name: delivered_all(tmp_path / f"{n}.jsonl", table, expected), timeout=60,
                 what=f"{name}: rows after the outage")
        record = state(controller, name)
        assert record["state"] == "running" and record["version"] == before[name]["version"], record
        assert record["epoch"] == before[name]["epoch"], f"{name} was restarted: the outage should not stop it"
        seen = ids(tmp_path / f"{name}.jsonl", table)
        assert set(seen) == expected, f"{name}: rows lost or foreign"
        dups = sum(c - 1 for c in Counter(seen).values())
        print(f"{name} (checkpoint store {names[name]}): epoch {before[name]['epoch']} -> {record['epoch']}, "
              f"{len(expected)} rows, 0 lost, {dups} duplicates")
    after = ray.get(controller.checkpoint.remote("ft-gcs"))
    assert after is not None and after != checkpoint, "the gcs checkpoint did not survive or did not advance"
    print(f"gcs_server kill -9 (down 2 s): controller answering {answered:.1f}s after the kill, "
          f"every pipeline caught up {caught_up:.1f}s after it")
    for name in names:
        ray.get(controller.remove.remote(name))
    ray.kill(controller, no_restart=True)
