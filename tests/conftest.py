"""Fixtures shared by every test: one local Ray per test session (started on first use)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    """A local Ray (2 CPUs, no dashboard) for the whole session; pipeline actors need no CPU."""
    import ray

    if not ray.is_initialized():
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            namespace="dbus",
            _temp_dir=tempfile.mkdtemp(prefix="ray", dir="/tmp"),
            object_store_memory=200 * 1024**2,
        )
    yield
