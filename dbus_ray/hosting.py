"""Finding a pipeline's reader, whatever its placement. A spread or fused pipeline's reader is the actor
`dbus:<pipeline>:reader`; a shared one (`flow.placement: shared`) runs as an object inside a host actor
`dbus:host:<n>` (`dbus_ray.actors.host`), which records where in Ray's GCS KV (`host:pipeline:<pipeline>`,
with the host's actor id) when it adds the pipeline and deletes it when it removes it. `reader_handle(name)`
returns the reader actor, or for a hosted pipeline a `HostedReader` whose `method.remote(*args)` is the
host's `call.remote(pipeline, method, *args)`: callers use either the same way.

A record left by a host that died (kill -9) names an actor that no longer exists (host names are never
reused), so the lookup finds nothing, as for a dead reader actor."""

from __future__ import annotations

import json
from typing import Any

import ray

from dbus_ray.constants import NAMESPACE, READER, actor_name, hosted_key
from dbus_ray.storage.kv_store import GcsKV, KVStore


class HostedReader:
    """Stands for the reader actor of pipeline `pipeline`, hosted by the actor `host` (named `host_name`)."""

    def __init__(self, host: Any, pipeline: str, host_name: str) -> None:
        self.host = host
        self.pipeline = pipeline
        self.host_name = host_name

    def __getattr__(self, method: str) -> _HostedMethod:
        if method.startswith("_"):
            raise AttributeError(method)
        return _HostedMethod(self, method)

    def __repr__(self) -> str:
        return f"HostedReader({self.pipeline} in {self.host_name})"


class _HostedMethod:
    def __init__(self, reader: HostedReader, method: str) -> None:
        self.reader = reader
        self.method = method

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        return self.reader.host.call.remote(self.reader.pipeline, self.method, *args, **kwargs)


def record_hosted(pipeline: str, host: str, actor_id: str, kv: KVStore | None = None) -> None:
    """Pipeline `pipeline` runs in host actor `host` (actor id `actor_id`)."""
    (kv or GcsKV()).put(hosted_key(pipeline), json.dumps({"host": host, "actor_id": actor_id}).encode())


def forget_hosted(pipeline: str, actor_id: str, kv: KVStore | None = None) -> None:
    """Pipeline `pipeline` left the host `actor_id` (a record naming another host stays)."""
    kv = kv or GcsKV()
    entry = hosted_entry(pipeline, kv)
    if entry is not None and entry.get("actor_id") == actor_id:
        kv.delete(hosted_key(pipeline))


def hosted_entry(pipeline: str, kv: KVStore | None = None) -> dict[str, Any] | None:
    """{"host": name, "actor_id": hex} of the host that last took `pipeline`, None without one."""
    value = (kv or GcsKV()).get(hosted_key(pipeline))
    return json.loads(value) if value else None


def hosted_reader(pipeline: str) -> HostedReader | None:
    """The reader of `pipeline` in its live host, None when no live host holds it."""
    entry = hosted_entry(pipeline)
    if entry is None:
        return None
    try:
        host = ray.get_actor(entry["host"], namespace=NAMESPACE)
    except ValueError:  # the host is gone
        return None
    if host._actor_id.hex() != entry["actor_id"]:
        return None
    return HostedReader(host, pipeline, entry["host"])


def reader_handle(pipeline: str) -> Any | None:
    """The reader of `pipeline`: its actor `dbus:<pipeline>:reader`, or a `HostedReader` when it runs in a host
    actor; None when it is not running."""
    try:
        return ray.get_actor(actor_name(pipeline, READER), namespace=NAMESPACE)
    except ValueError:
        return hosted_reader(pipeline)
