"""Checkpoint stores. A checkpoint is the source position before which every row reached every sink;
it is saved in order (never backwards) and read back on the next start.

`file` (the default) keeps it on the local disk under the pipeline's data dir; `gcs` keeps it in Ray's
GCS key-value store (in memory unless GCS fault tolerance is on). A `kafka` store, committing the
checkpoint in the same transaction as the rows, implements the same interface.
"""

from __future__ import annotations

import json
import os
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from dbus_ray.constants import checkpoint_key
from dbus_ray.storage.kv_store import GcsKV, KVStore


class CheckpointStore(ABC):
    @abstractmethod
    def load(self) -> dict[str, Any] | None:
        """The last saved checkpoint, or None when the pipeline never committed one."""

    @abstractmethod
    def save(self, checkpoint: dict[str, Any]) -> None:
        """Durably replace the checkpoint."""

    def describe(self) -> str:
        return type(self).__name__


class FileCheckpointStore(CheckpointStore):
    """`<data_dir>/<pipeline>/checkpoint.json`, replaced atomically (write, fsync, rename)."""

    def __init__(self, pipeline_dir: str | os.PathLike[str]) -> None:
        self.path = Path(pipeline_dir) / "checkpoint.json"

    def load(self) -> dict[str, Any] | None:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{self.path}: checkpoint file is corrupt: {exc}") from None

    def save(self, checkpoint: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".checkpoint.")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(checkpoint, f, separators=(",", ":"))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def describe(self) -> str:
        return f"file {self.path}"


class GcsCheckpointStore(CheckpointStore):
    """Ray's GCS internal KV, namespace `dbus`, key `checkpoint:<pipeline>`."""

    def __init__(self, pipeline: str, kv: KVStore | None = None) -> None:
        self.key = checkpoint_key(pipeline)
        self.kv = kv or GcsKV()

    def load(self) -> dict[str, Any] | None:
        value = self.kv.get(self.key)
        return None if value is None else json.loads(value)

    def save(self, checkpoint: dict[str, Any]) -> None:
        self.kv.put(self.key, json.dumps(checkpoint).encode())

    def describe(self) -> str:
        return f"gcs {self.key}"


STORES = ("file", "gcs", "kafka")


def open_store(kind: str, pipeline: str, pipeline_dir: str | os.PathLike[str], cfg: Any = None) -> CheckpointStore:
    """The store `kind` of a pipeline; `kafka` needs the pipeline config `cfg` (it uses the kafka sink's brokers)."""
    if kind == "kafka":
        from dbus_ray.kafka.checkpoints import store_for

        return store_for(pipeline, cfg)
    if kind == "file":
        return FileCheckpointStore(pipeline_dir)
    if kind == "gcs":
        return GcsCheckpointStore(pipeline)
    raise ValueError(f"unknown checkpoint store {kind!r}")
