"""What the multi-node tests share: a Ray cluster of three one-core raylets on this machine."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import ray
from ray.cluster_utils import Cluster


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """Three raylets (the head and two more, one CPU each), this process its driver in namespace `dbus`."""
    assert not ray.is_initialized(), "tests/cluster must run in a pytest process of its own (see Makefile)"
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    c.add_node(num_cpus=1)
    c.add_node(num_cpus=1)
    ray.init(address=c.address, namespace="dbus")
    c.wait_for_nodes()
    yield c
    ray.shutdown()
    c.shutdown()
