"""Shared hosts on `ray.cluster_utils.Cluster` (three raylets on this machine): the controller packs the
`flow.placement: shared` pipelines assigned to a node into a host actor on that node, one host per node.

Runs in its own pytest process (`make test` does so): it starts its own Ray cluster."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import ray
from ray.cluster_utils import Cluster

from dbus_ray.actors.controller import get_controller
from dbus_ray.hosting import reader_handle
from tests.support.helpers import wait_for


def spec(tmp_path: Path, name: str) -> dict[str, Any]:
    return {"name": name, "data_dir": str(tmp_path / "data"),
            "source": {"type": "mock", "rows": None, "rate": 200, "keys": 40},
            "sinks": [{"name": "null", "type": "null"}],
            "flow": {"read_batch_rows": 100, "max_rows_in_flight": 1000, "placement": "shared"}}


def test_shared_pipelines_are_packed_per_node(cluster: Cluster, tmp_path: Path) -> None:
    controller = get_controller()
    names = [f"s{i}" for i in range(6)]
    for n in names:
        ray.get(controller.submit.remote(spec(tmp_path, n)))

    def placed() -> dict[str, dict[str, Any]] | None:
        recs = {r["name"]: r for r in ray.get(controller.list.remote())}
        if not all(recs[n]["state"] == "running" and reader_handle(n) is not None for n in names):
            return None
        return recs

    recs = wait_for(placed, timeout=120, what="six running pipelines")
    hosts_of_node: dict[str, set[str]] = defaultdict(set)
    for n in names:
        identity = ray.get(reader_handle(n).identity.remote(), timeout=10)
        assert identity["node"] == recs[n]["node"], f"{n} runs off its node"
        hosts_of_node[recs[n]["node"]].add(reader_handle(n).host_name)
    assert len(hosts_of_node) == 3, f"sticky placement uses every node: {dict(hosts_of_node)}"
    assert all(len(h) == 1 for h in hosts_of_node.values()), f"one host per node: {dict(hosts_of_node)}"
    for n in names:
        ray.get(controller.remove.remote(n))
    wait_for(lambda: not [a for a in ray.util.list_named_actors(all_namespaces=True)
                          if a["name"].startswith("dbus:host:")], what="the emptied hosts gone")
