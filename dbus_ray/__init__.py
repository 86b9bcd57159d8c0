"""dbus-ray: a change-data-capture bus on Ray."""

from __future__ import annotations

import sys
from typing import Any

__version__ = "0.1.0"

if sys.argv and sys.argv[0].endswith("default_worker.py"):  # a Ray worker process (a pipeline's actor)
    from dbus_ray import heap

    heap.without_pandas()  # before any of its modules converts a list with pyarrow (see dbus_ray.heap)


def connect(address: str | None = None, create: bool = True) -> Any:
    """`bus = dbus_ray.connect()`: a handle on the cluster's controller (see dbus_ray.client)."""
    from dbus_ray.client import connect as _connect

    return _connect(address, create)
