"""What the multi-node tests share: a Ray cluster of three one-core raylets on this machine."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import ray
from ray.cluster_utils import Cluster

from tests.support.ray_cluster import start_cluster


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """Three raylets (the head and two more, one CPU each), this process its driver in namespace `dbus`."""
    c = start_cluster(2)
    yield c
    ray.shutdown()
    c.shutdown()
