"""Names the bus gives things in Ray: the namespace of its actors and KV keys, the actor names and the key
prefixes of Ray's GCS key-value store. Every name is built here (like Ray Serve's `constants.py`).

Actors: `dbus:controller` (one per cluster) and `dbus:<pipeline>:<role>[:<part>]`, e.g. `dbus:orders:reader`,
`dbus:orders:writer:kafka` (part = sink name), `dbus:orders:snapshot:0` (part = worker index), and
`dbus:host:<n>`, a host actor running several `flow.placement: shared` pipelines (`dbus_ray.actors.host`).
KV keys (namespace `dbus`, see `dbus_ray.storage.kv_store`): `controller:pipeline:<name>` (the controller's
record of a pipeline), `controller:epoch` (its last epoch), `epoch:<pipeline>` (the epoch a pipeline's
actors must carry) `checkpoint:<pipeline>` (checkpoint store `gcs`), `host:pipeline:<pipeline>` (the host actor a shared
pipeline runs in, written by that host) and `host:next` (the number the next host actor is named by).
"""

from __future__ import annotations

#: The Ray namespace of every actor and of every KV key of the bus.
NAMESPACE = "dbus"
CONTROLLER_NAME = "dbus:controller"

# Roles of a pipeline's actors.
READER = "reader"
ROUTER = "router"
BATCHER = "batcher"
WRITER = "writer"
SNAPSHOT = "snapshot"
#: the name of every host actor starts with `dbus:host:` (so a pipeline may not be named `host`)
HOST = "host"
HOST_PREFIX = f"dbus:{HOST}:"

# KV key prefixes.
KV_PIPELINE_PREFIX = "controller:pipeline:"
KV_CONTROLLER_EPOCH = "controller:epoch"
KV_EPOCH_PREFIX = "epoch:"
KV_CHECKPOINT_PREFIX = "checkpoint:"
KV_HOSTED_PREFIX = "host:pipeline:"
KV_HOST_NEXT = "host:next"


def actor_prefix(pipeline: str) -> str:
    """What the name of every actor of `pipeline` starts with."""
    return f"dbus:{pipeline}:"


def actor_name(pipeline: str, role: str, part: str | None = None) -> str:
    """`dbus:<pipeline>:<role>[:<part>]`."""
    return actor_prefix(pipeline) + role + (f":{part}" if part else "")


def epoch_key(pipeline: str) -> str:
    return KV_EPOCH_PREFIX + pipeline


def checkpoint_key(pipeline: str) -> str:
    return KV_CHECKPOINT_PREFIX + pipeline


def host_name(n: int) -> str:
    """`dbus:host:<n>`: the host actor number `n` (numbers are never reused, see `KV_HOST_NEXT`)."""
    return f"{HOST_PREFIX}{n}"


def hosted_key(pipeline: str) -> str:
    return KV_HOSTED_PREFIX + pipeline
