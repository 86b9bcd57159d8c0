"""Epochs: each assignment of a pipeline to a node gets a new, higher epoch, kept in Ray's GCS KV (key
`epoch:<pipeline>`) by the controller. A reader started under an older epoch (a zombie after a rebalance, a
split brain) finds out before it commits a checkpoint, and refuses to commit."""

from __future__ import annotations

from dbus_ray.constants import epoch_key
from dbus_ray.storage.kv_store import GcsKV, KVStore


def current_epoch(pipeline: str, kv: KVStore | None = None) -> int | None:
    value = (kv or GcsKV()).get(epoch_key(pipeline))
    return None if value is None else int(value)


def set_epoch(pipeline: str, epoch: int, kv: KVStore | None = None) -> None:
    (kv or GcsKV()).put(epoch_key(pipeline), str(epoch).encode())


def clear_epoch(pipeline: str, kv: KVStore | None = None) -> None:
    (kv or GcsKV()).delete(epoch_key(pipeline))
