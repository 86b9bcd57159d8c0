"""Epochs: each assignment of a pipeline to a node gets a new, higher epoch, kept in Ray's GCS KV by
the controller. A reader started under an older epoch (a zombie after a rebalance, a split brain)
finds out before it commits a checkpoint, and refuses to commit."""

from __future__ import annotations

NAMESPACE = "dbus"


def _key(pipeline: str) -> bytes:
    return f"epoch:{pipeline}".encode()


def current_epoch(pipeline: str) -> int | None:
    from ray.experimental import internal_kv

    value = internal_kv._internal_kv_get(_key(pipeline), namespace=NAMESPACE)
    return None if value is None else int(value)


def set_epoch(pipeline: str, epoch: int) -> None:
    from ray.experimental import internal_kv

    internal_kv._internal_kv_put(_key(pipeline), str(epoch).encode(), overwrite=True, namespace=NAMESPACE)


def clear_epoch(pipeline: str) -> None:
    from ray.experimental import internal_kv

    internal_kv._internal_kv_del(_key(pipeline), namespace=NAMESPACE)
