"""Checkpoint stores. A checkpoint is the source position before which every row reached every sink;
it is saved in order (never backwards) and read back on the next start.

Stores are plugins by `checkpoint.store:` (`dbus_ray.registry`, `@checkpoint_store`): `file` (the default)
keeps it on the local disk under the pipeline's data dir; `gcs` keeps it in Ray's GCS key-value store (in
memory unless GCS fault tolerance is on; a controller with a durable state copies it there, and refuses it
without either); `kafka` (`dbus_ray.kafka.checkpoints`) in a compacted topic,
committed in the same transaction as the rows by an exactly-once kafka sink.
"""

from __future__ import annotations

import json
import os
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

from dbus_ray import registry
from dbus_ray.constants import checkpoint_key
from dbus_ray.registry import checkpoint_store
from dbus_ray.storage.kv_store import GcsKV, KVStore


class CheckpointStore(ABC):
    type_name: ClassVar[str]

    @classmethod
    @abstractmethod
    def for_pipeline(cls, pipeline: str, pipeline_dir: str | os.PathLike[str], cfg: Any = None) -> CheckpointStore:
        """The store of a pipeline: its name, its data dir and its config (None when the store needs none)."""

    @abstractmethod
    def load(self) -> dict[str, Any] | None:
        """The last saved checkpoint, or None when the pipeline never committed one."""

    @abstractmethod
    def save(self, checkpoint: dict[str, Any]) -> None:
        """Durably replace the checkpoint."""

    def describe(self) -> str:
        return type(self).__name__


@checkpoint_store("file")
class FileCheckpointStore(CheckpointStore):
    """On the local disk: `<data_dir>/<pipeline>/checkpoint.json`, replaced atomically (write, fsync, rename)."""

    def __init__(self, pipeline_dir: str | os.PathLike[str]) -> None:
        self.path = Path(pipeline_dir) / "checkpoint.json"

    @classmethod
    def for_pipeline(cls, pipeline: str, pipeline_dir: str | os.PathLike[str], cfg: Any = None) -> CheckpointStore:
        return cls(pipeline_dir)

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


@checkpoint_store("gcs")
class GcsCheckpointStore(CheckpointStore):
    """In Ray's GCS key-value store: namespace `dbus`, key `checkpoint:<pipeline>`."""

    def __init__(self, pipeline: str, kv: KVStore | None = None) -> None:
        self.key = checkpoint_key(pipeline)
        self.kv = kv or GcsKV()

    @classmethod
    def for_pipeline(cls, pipeline: str, pipeline_dir: str | os.PathLike[str], cfg: Any = None) -> CheckpointStore:
        return cls(pipeline)

    def load(self) -> dict[str, Any] | None:
        value = self.kv.get(self.key)
        return None if value is None else json.loads(value)

    def save(self, checkpoint: dict[str, Any]) -> None:
        self.kv.put(self.key, json.dumps(checkpoint).encode())

    def describe(self) -> str:
        return f"gcs {self.key}"


def open_store(kind: str, pipeline: str, pipeline_dir: str | os.PathLike[str], cfg: Any = None) -> CheckpointStore:
    """The store `kind` of a pipeline; `kafka` needs the pipeline config `cfg` (it uses the kafka sink's brokers)."""
    try:
        cls = registry.store_class(kind)
    except KeyError:
        raise ValueError(f"unknown checkpoint store {kind!r}") from None
    return cls.for_pipeline(pipeline, pipeline_dir, cfg)
