"""dbus-ray: a change-data-capture bus on Ray."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def connect(address: str | None = None, create: bool = True) -> Any:
    """`bus = dbus_ray.connect()`: a handle on the cluster's controller (see dbus_ray.client)."""
    from dbus_ray.client import connect as _connect

    return _connect(address, create)
