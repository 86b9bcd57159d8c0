"""Multi-node behaviour on `ray.cluster_utils.Cluster` (three raylets on this machine): a node dies
while rows flow -> its pipelines move and nothing is lost; a node joins -> sticky placement evens
the load out by moving as few pipelines as possible.

Runs in its own pytest process (`make test` does so): it starts its own Ray cluster."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import ray
from ray.cluster_utils import Cluster

from dbus_ray.actors.controller import get_controller
from tests.support.helpers import wait_for


def spec(tmp_path: Path, name: str) -> dict[str, Any]:
    return {"name": name, "data_dir": str(tmp_path / "data"),
            "source": {"type": "mock", "rows": None, "rate": 1000, "keys": 40},
            "sinks": [{"name": "file", "type": "jsonl", "path": str(tmp_path / f"{name}.jsonl"), "fsync": False}],
            "flow": {"read_batch_rows": 100, "max_rows_in_flight": 1000, "placement": "spread"},
            "checkpoint": {"store": "gcs"}}


def records(controller: Any) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in ray.get(controller.list.remote())}


def all_running(controller: Any, names: list[str], alive: set[str]) -> bool:
    recs = records(controller)
    return all(recs[n]["state"] == "running" and recs[n]["node"] in alive for n in names)


def assert_actors_on_their_node(controller: Any) -> None:
    """Every live actor of a pipeline runs on the pipeline's node, and all four of them are up."""
    from ray._private.state import actors  # from this cluster's GCS (not the dashboard's state API)

    nodes = {name: r["node"] for name, r in records(controller).items()}

    def check() -> bool:
        roles: dict[str, set[str]] = {name: set() for name in nodes}
        for actor in actors().values():
            parts = (actor.get("Name") or "").split(":")
            if actor["State"] == "ALIVE" and parts[0] == "dbus" and parts[1] in nodes:
                assert actor["Address"]["NodeID"] == nodes[parts[1]], f"{actor['Name']} is not on its node"
                roles[parts[1]].add(parts[2])
        return all(r == {"reader", "router", "batcher", "writer"} for r in roles.values())

    wait_for(check, timeout=20, what="every pipeline's actors alive on its node")


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def alive_nodes() -> set[str]:
    return {n["NodeID"] for n in ray.nodes() if n["Alive"]}


def test_node_loss_moves_pipelines_without_losing_rows(cluster: Cluster, tmp_path: Path) -> None:
    # checkpoint store gcs without GCS fault tolerance: only with a durable state (the gcs checkpoints are copied there)
    controller = get_controller(strategy="sticky", state=f"file://{tmp_path / 'state'}")
    info = ray.get(controller.info.remote())
    names = [f"n-{i}" for i in range(4)]
    for name in names:
        ray.get(controller.submit.remote(spec(tmp_path, name)))
    wait_for(lambda: all_running(controller, names, alive_nodes()), what="all running")
    spread = Counter(r["node"] for r in records(controller).values())
    assert len(spread) == 3, f"sticky placement should use every node: {spread}"

    # a worker node that holds pipelines and not the controller
    victim_id = next(n for n in spread if n != info["node"] and n != cluster.head_node.node_id)
    victim = next(node for node in cluster.worker_nodes if node.node_id == victim_id)
    epochs = {n: r["epoch"] for n, r in records(controller).items()}
    moved = [n for n, r in records(controller).items() if r["node"] == victim_id]
    assert_actors_on_their_node(controller)
    wait_for(lambda: all(_lines(tmp_path / f"{n}.jsonl") > 100 for n in moved), what="rows on the victim's pipelines")
    cluster.remove_node(victim)
    started = time.monotonic()
    wait_for(lambda: all_running(controller, names, alive_nodes() - {victim_id}), timeout=45, what="moved")
    recovery = time.monotonic() - started
    print(f"pipelines of the removed node running elsewhere after {recovery:.1f}s")
    assert recovery < 30
    after = records(controller)
    assert {n for n in names if after[n]["epoch"] != epochs[n]} == set(moved), "only the lost node's pipelines move"
    assert_actors_on_their_node(controller)
    lines = {n: _lines(tmp_path / f"{n}.jsonl") for n in moved}
    wait_for(lambda: all(_lines(tmp_path / f"{n}.jsonl") > lines[n] + 100 for n in moved), what="rows on the new nodes")

    for name in names:
        ray.get(controller.stop.remote(name))
    wait_for(lambda: all(r["state"] == "stopped" for r in records(controller).values()), what="stopped")
    for name, record in records(controller).items():
        delivered = record["status"]["checkpoint"]["source"]["next"]
        seen = [json.loads(line)["pos"]["offset"] for line in (tmp_path / f"{name}.jsonl").read_text().splitlines()]
        assert set(range(delivered)) <= set(seen), f"{name}: rows lost"
        print(f"{name}: {delivered} rows, {len(seen) - len(set(seen))} duplicates")
    for name in names:
        ray.get(controller.remove.remote(name))

    # a node joins: sticky placement evens the load with as few moves as possible
    for name in names:
        ray.get(controller.submit.remote(spec(tmp_path, "j" + name)))
    jnames = ["j" + n for n in names]
    wait_for(lambda: all_running(controller, jnames, alive_nodes()), what="running on two nodes")
    before = {n: r["node"] for n, r in records(controller).items()}
    cluster.add_node(num_cpus=1)
    wait_for(lambda: len(alive_nodes()) == 3, what="new node")
    wait_for(lambda: len({r["node"] for r in records(controller).values() if r["state"] == "running"}) == 3
             and all_running(controller, jnames, alive_nodes()), timeout=45, what="rebalanced onto the new node")
    after = {n: r["node"] for n, r in records(controller).items()}
    moves = sum(before[n] != after[n] for n in jnames)
    assert moves == 1, f"4 pipelines over 3 nodes need one move, made {moves}"
    for name in jnames:
        ray.get(controller.remove.remote(name))
