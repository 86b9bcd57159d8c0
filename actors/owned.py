"""Worker actors a pipeline's reader starts and owns (snapshot workers, decoders; they end with it): each
under its name, in place of one an earlier reader of the pipeline left."""

from __future__ import annotations

import time
from typing import Any

import ray

from dbus_ray.constants import NAMESPACE
from dbus_ray.errors import DbusError


def start_owned(actor: Any, what: str, name: str, where: Any, *args: Any) -> Any:
    """Start `actor` (a Ray actor class; `what` it is, for the error) as `name` with scheduling strategy
    `where`, passing `args`."""
    try:  # one left by an earlier reader of this pipeline
        ray.kill(ray.get_actor(name, namespace=NAMESPACE), no_restart=True)
    except ValueError:
        pass
    for _ in range(50):
        try:
            return actor.options(name=name, namespace=NAMESPACE, scheduling_strategy=where).remote(*args)
        except ValueError:  # the name is freed a moment after the old actor died
            time.sleep(0.1)
    raise DbusError(f"{what} {name} cannot start: the name stays taken")
