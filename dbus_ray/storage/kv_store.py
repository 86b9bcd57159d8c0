"""The key-value stores of the bus (like Ray Serve's `storage/kv_store.py`): `KVStore` is what the
controller, the epoch fencing and checkpoint store `gcs` need; `GcsKV` keeps it in Ray's GCS internal KV
under namespace `dbus` (the only module that touches `ray.experimental.internal_kv`); `MemoryKV` keeps it
in a dict (unit tests). Keys are text (see `dbus_ray.constants` for the prefixes), values bytes."""

from __future__ import annotations

from typing import Protocol

from ray.experimental import internal_kv

from dbus_ray.constants import NAMESPACE


class KVStore(Protocol):
    def get(self, key: str) -> bytes | None: ...
    def put(self, key: str, value: bytes) -> None: ...
    def delete(self, key: str) -> None: ...
    def keys(self, prefix: str) -> list[str]: ...


class MemoryKV:
    """A KVStore in a dict (unit tests)."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    def get(self, key: str) -> bytes | None:
        return self.data.get(key)

    def put(self, key: str, value: bytes) -> None:
        self.data[key] = value

    def delete(self, key: str) -> None:
        self.data.pop(key, None)

    def keys(self, prefix: str) -> list[str]:
        return [k for k in self.data if k.startswith(prefix)]


class GcsKV:
    """Ray's GCS internal key-value store, namespace `dbus` (needs a connected Ray: `ray.init` or an actor)."""

    def __init__(self, namespace: str = NAMESPACE) -> None:
        self.namespace = namespace

    def get(self, key: str) -> bytes | None:
        return internal_kv._internal_kv_get(key.encode(), namespace=self.namespace)

    def put(self, key: str, value: bytes) -> None:
        internal_kv._internal_kv_put(key.encode(), value, overwrite=True, namespace=self.namespace)

    def delete(self, key: str) -> None:
        internal_kv._internal_kv_del(key.encode(), namespace=self.namespace)

    def keys(self, prefix: str) -> list[str]:
        found = internal_kv._internal_kv_list(prefix.encode(), namespace=self.namespace)
        return [k.decode() if isinstance(k, bytes) else k for k in found]


#: Where the head records the backend of its GCS (Ray's usage tag `gcs_storage`, written by every head at
#: start whether usage stats are on or not: `redis` when RAY_REDIS_ADDRESS is set, `rocksdb`, or `memory`).
_GCS_STORAGE_KEY = b"extra_usage_tag_gcs_storage"
_USAGE_NAMESPACE = "usage_stats"


def gcs_storage() -> str | None:
    """The backend of the cluster's GCS: `memory` (no fault tolerance: the GCS' data dies with the head),
    `redis` or `rocksdb` (GCS fault tolerance), None when the head did not say (needs a connected Ray)."""
    value = internal_kv._internal_kv_get(_GCS_STORAGE_KEY, namespace=_USAGE_NAMESPACE)
    return value.decode() if value else None
