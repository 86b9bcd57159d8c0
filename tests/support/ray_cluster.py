"""A multi-node Ray cluster on this machine for the tests of tests/cluster: one-core raylets, this process
its driver in namespace `dbus`."""

from __future__ import annotations

from typing import Any

import ray
from ray.cluster_utils import Cluster


def start_cluster(nodes: int = 1, **head: Any) -> Cluster:
    """A head (one CPU, `head` added to its node arguments) and `nodes` more raylets of one CPU each, all
    registered, with `ray.init` connected to it. Stop it with `ray.shutdown()` and `cluster.shutdown()`."""
    assert not ray.is_initialized(), "tests/cluster must run in a pytest process of its own (see Makefile)"
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, **head})
    for _ in range(nodes):
        c.add_node(num_cpus=1)
    ray.init(address=c.address, namespace="dbus")
    c.wait_for_nodes()
    return c
