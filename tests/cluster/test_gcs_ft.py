"""GCS fault tolerance on a private Redis (Debian's `redis-server` on loopback): a Ray cluster on this
machine whose head keeps the GCS in Redis (RAY_REDIS_ADDRESS, as `ray-cluster.yaml` starts it). The head's
`gcs_server` is killed with SIGKILL under a MariaDB workload and started again (what systemd or KubeRay does
for a dead head process): the controller keeps its pipelines and epochs, the pipelines keep running through
the outage (same epoch, never restarted), their `gcs` checkpoints survive, 0 rows lost and, since none restarts,
0 duplicated. Then every process of the head node is killed (GCS, raylet, the controller and two pipelines on
it) and the head comes back at its address: the controller restarts on a live node, only the head's pipelines
move, 0 rows lost. Each test runs an exactly-once pipeline (a transactional `kafka` sink, its checkpoint in
Kafka) beside the at-least-once ones (`jsonl`, checkpoint `gcs` or `file`): read committed, it holds every row
exactly once, 0 duplicated, also when it moved off the dead head. Prints the times to recover. Runs in its own
pytest process (it starts its own Ray clusters)."""

from __future__ import annotations

import json
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
from tests.cluster.test_head_loss import PW_VAR, ids, insert, spec, state
from tests.support.helpers import execute, position, table_name, wait_for
from tests.support.ray_cluster import start_cluster
from tests.support.redis import Redis
from tests.support.topics import read_topic


@pytest.fixture()
def ft_cluster(request: pytest.FixtureRequest, mariadb: MariaDB) -> Iterator[Cluster]:
    """A head with its GCS on a private Redis and `request.param` (default 1) worker nodes."""
    redis = Redis().start()
    os.environ[PW_VAR] = mariadb.password
    os.environ["RAY_REDIS_ADDRESS"] = redis.address  # read by the head's Node, as `ray start --head` does
    try:
        c = start_cluster(getattr(request, "param", 1), redis_password=redis.password,
                          _system_config={"gcs_rpc_server_reconnect_timeout_s": 120})
        yield c
        ray.shutdown()
        c.shutdown()
    finally:
        del os.environ["RAY_REDIS_ADDRESS"], os.environ[PW_VAR]
        redis.stop()


def eos_spec(tmp_path: Path, mariadb: MariaDB, broker: Any, name: str, table: str, start: str) -> dict[str, Any]:
    """A pipeline delivering exactly once: a transactional `kafka` sink (topic `name`) whose checkpoint is
    committed in Kafka with its rows."""
    return {**spec(tmp_path, mariadb, name, table, start, "kafka"),
            "sinks": [{"name": "k", "type": "kafka", "bootstrap": broker.bootstrap, "topic": name,
                       "delivery": "exactly_once", "partitions": 1}]}


def committed_ids(broker: Any, topic: str, table: str) -> list[int]:
    """The ids of the inserts of `table` a read_committed consumer sees in `topic`, duplicates included."""
    rows = [json.loads(m.value()) for m in read_topic(broker.bootstrap, topic, committed=True, missing_ok=True)]
    return [r["key"]["id"] for r in rows if r["op"] == "insert" and r["table"].endswith(table)]


def seen_ids(tmp_path: Path, broker: Any, name: str, table: str, eos: bool) -> list[int]:
    return committed_ids(broker, name, table) if eos else ids(tmp_path / f"{name}.jsonl", table)


def answers(controller: Any) -> bool:
    try:
        ray.get(controller.info.remote(), timeout=5)
        return True
    except Exception:  # noqa: BLE001 - GCS or controller not back yet
        return False


def test_gcs_server_kill_9_loses_nothing(ft_cluster: Cluster, mariadb: MariaDB, broker: Any, root: Any,
                                        tmp_path: Path) -> None:
    table = table_name("ft")
    execute(root, f"CREATE TABLE {table} (id INT PRIMARY KEY, v VARCHAR(20))")
    start = position(root)
    insert(root, table, 1, 2000)
    controller = get_controller()  # no --state: GCS FT on, so checkpoint store gcs is accepted
    assert ray.get(controller.info.remote())["gcs_storage"] == "redis"
    names = {"ft-gcs": "gcs", "ft-file": "file", "ft-eos": "kafka"}
    for name, store in names.items():
        eos = store == "kafka"
        made = eos_spec(tmp_path, mariadb, broker, name, table, start) if eos else spec(tmp_path, mariadb, name,
                                                                                       table, start, store)
        ray.get(controller.submit.remote(made))

    def delivered(name: str, expected: set[int]) -> bool:
        return set(seen_ids(tmp_path, broker, name, table, names[name] == "kafka")) >= expected

    expected = set(range(1, 2001))
    for name in names:
        wait_for(lambda n=name: delivered(n, expected), timeout=90, what=f"{name}: the first rows")
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
        wait_for(lambda n=name: delivered(n, expected), timeout=120, what=f"{name}: the rows written during the outage")
    caught_up = time.monotonic() - killed
    insert(root, table, 4001, 1000)
    expected = set(range(1, 5001))
    for name in names:
        wait_for(lambda n=name: delivered(n, expected), timeout=60, what=f"{name}: rows after the outage")
        record = state(controller, name)
        assert record["state"] == "running" and record["version"] == before[name]["version"], record
        assert record["epoch"] == before[name]["epoch"], f"{name} was restarted: the outage should not stop it"
        seen = seen_ids(tmp_path, broker, name, table, names[name] == "kafka")
        assert set(seen) == expected, f"{name}: rows lost or foreign"
        dups = sum(c - 1 for c in Counter(seen).values())
        assert dups == 0, f"{name}: {dups} rows duplicated by a pipeline that never restarted"
        print(f"{name} (checkpoint store {names[name]}): epoch {before[name]['epoch']} -> {record['epoch']}, "
              f"{len(expected)} rows, 0 lost, {dups} duplicates")
    after = ray.get(controller.checkpoint.remote("ft-gcs"))
    assert after is not None and after != checkpoint, "the gcs checkpoint did not survive or did not advance"
    print(f"gcs_server kill -9 (down 2 s): controller answering {answered:.1f}s after the kill, "
          f"every pipeline caught up {caught_up:.1f}s after it")
    for name in names:
        ray.get(controller.remove.remote(name))
    ray.kill(controller, no_restart=True)


def alive_nodes() -> set[str]:
    return {n["NodeID"] for n in ray.nodes() if n["Alive"]}


@pytest.mark.parametrize("ft_cluster", [0], indirect=True)
def test_head_node_kill_9_moves_its_pipelines(ft_cluster: Cluster, mariadb: MariaDB, broker: Any, root: Any,
                                              tmp_path: Path) -> None:
    """Every process of the head node is killed with SIGKILL (GCS, raylet, the controller and the pipelines on
    it); the head comes back at its address (its GCS from Redis, a new raylet): the pipelines of the other nodes
    run on under their epochs (0 duplicated), the controller restarts on a live node, the head's pipelines move,
    0 lost; the exactly-once one that moved, 0 duplicated too."""
    import psutil

    head = ft_cluster.head_node
    table = table_name("hd")
    execute(root, f"CREATE TABLE {table} (id INT PRIMARY KEY, v VARCHAR(20))")
    start = position(root)
    insert(root, table, 1, 2000)
    controller = get_controller()  # created while the head is the only node: on the head, lost with it
    first = ray.get(controller.info.remote())
    assert first["node"] == head.node_id and first["gcs_storage"] == "redis"
    for _ in range(2):
        ft_cluster.add_node(num_cpus=1)
    wait_for(lambda: len(alive_nodes()) == 3, what="two worker nodes")
    # at-least-once (jsonl, checkpoint gcs) and exactly-once (kafka) in turn: placed one by one on the least
    # loaded node, in node order, the first three take one node each and the next three again, so each node
    # (the head too) holds one of either kind. Each runs before the next is submitted: pipelines not running
    # yet are placed together in one reconcile step, in name order, and that order mixes the kinds.
    names = {f"hd-{i}" if i % 2 == 0 else f"hd-eos-{i}": i % 2 == 1 for i in range(6)}
    for name, eos in names.items():
        made = eos_spec(tmp_path, mariadb, broker, name, table, start) if eos else spec(tmp_path, mariadb, name,
                                                                                       table, start, "gcs")
        ray.get(controller.submit.remote(made))
        wait_for(lambda n=name: state(controller, n)["state"] == "running", what=f"{name}: running")

    def delivered(name: str, expected: set[int]) -> bool:
        return set(seen_ids(tmp_path, broker, name, table, names[name])) >= expected

    expected = set(range(1, 2001))
    for name in names:
        wait_for(lambda n=name: delivered(n, expected), timeout=120, what=f"{name}: the first rows")
        wait_for(lambda n=name: state(controller, n)["checkpointed"], what=f"{name}: a saved checkpoint")
    before = {n: state(controller, n) for n in names}
    assert Counter(r["node"] for r in before.values()) == Counter({n: 2 for n in alive_nodes()}), before
    on_head = [n for n, r in before.items() if r["node"] == head.node_id]
    assert sorted(names[n] for n in on_head) == [False, True], f"one of each kind on the head: {on_head}"

    processes = [info.process for infos in head.all_processes.values() for info in infos]
    workers = [c for p in processes for c in psutil.Process(p.pid).children(recursive=True)]
    for proc in [*processes, *workers]:
        try:
            os.kill(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    killed = time.monotonic()
    for proc in processes:
        proc.wait(timeout=30)
    head.kill_gcs_server(check_alive=False)  # forget the dead processes
    head.kill_raylet(check_alive=False)
    insert(root, table, 2001, 2000)
    time.sleep(2)  # the machine reboots: nothing to wait for
    head.start_gcs_server()  # the head's `ray start --head` again: the GCS from Redis, at its address
    ft_cluster.add_node(num_cpus=1)  # and its raylet (a new node id)
    # this driver ran on the head node (Ray marks its job finished with the node): connect again, as a new
    # `dbus` command would, to a live node
    ray.shutdown()
    ray.init(address=ft_cluster.address, namespace="dbus")
    controller = get_controller(create=False)
    wait_for(lambda: answers(controller), timeout=180, what="the controller answering")
    answered = time.monotonic() - killed
    info = ray.get(controller.info.remote())
    assert info["pid"] != first["pid"] and info["node"] != head.node_id, info

    expected = set(range(1, 4001))
    for name in names:
        wait_for(lambda n=name: state(controller, n)["state"] == "running"
                 and state(controller, n)["node"] in alive_nodes(), timeout=120, what=f"{name} running")
        wait_for(lambda n=name: delivered(n, expected), timeout=120,
                 what=f"{name}: the rows written while the head was down")
    caught_up = time.monotonic() - killed
    for name in names:
        record, seen = state(controller, name), seen_ids(tmp_path, broker, name, table, names[name])
        assert set(seen) == expected, f"{name}: rows lost or foreign"
        moved = record["epoch"] != before[name]["epoch"]
        assert moved == (name in on_head), f"{name}: moved {moved}, on the head {name in on_head}"
        dups = sum(c - 1 for c in Counter(seen).values())
        if names[name] or not moved:  # exactly once, or never restarted: nothing may come twice
            assert dups == 0, f"{name}: {dups} rows duplicated (moved: {moved}, exactly once: {names[name]})"
        print(f"{name}{' (on the head)' if name in on_head else ''}: epoch {before[name]['epoch']} -> "
              f"{record['epoch']}, {len(expected)} rows, 0 lost, {dups} duplicates")
    print(f"head node kill -9 (down 2 s): controller answering on another node {answered:.1f}s after the kill, "
          f"every pipeline caught up {caught_up:.1f}s after it")
    for name in names:
        ray.get(controller.remove.remote(name))
    ray.kill(controller, no_restart=True)
