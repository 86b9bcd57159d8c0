"""The controller's durable state: a copy of its desired state that outlives the Ray cluster (GCS fault
tolerance or not), chosen by `dbus controller --state URL`.

- `file:///dir` (`FileKV`): one file per key in a directory (on shared storage for a multi-node cluster),
  each replaced atomically (write, fsync, rename, fsync the directory).
- `kafka://host:port[,host:port]/topic` (`KafkaKV`): a compacted topic, one record per key, a tombstone
  per deleted key (like Kafka Connect's config topic); read whole once when opened, then written through.

`MirroredKV` puts the two together for the controller: every write of a controller key goes to the durable
store first, then to Ray's GCS KV; reads come from the GCS KV. `restore()` refills an empty GCS (a cluster
rebuilt from nothing) from the durable store. The `gcs` checkpoints of pipelines are copied by `mirror()`
(the controller calls it every reconcile step), so they are restored with the rest: at worst a pipeline
resumes from a checkpoint a few seconds older than its last one (rows again, never rows lost).

What is written: pipeline records (spec with its `${VAR}`s, never their values: those stay in memory, see
`Supervisor.secrets`), the controller's epoch counter and the `gcs` checkpoints.
"""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from dbus_ray.constants import KV_CHECKPOINT_PREFIX, KV_CONTROLLER_EPOCH, KV_PIPELINE_PREFIX
from dbus_ray.storage.kv_store import KVStore

#: the keys a durable store keeps: the controller's records and epoch, and `gcs` checkpoints
MIRRORED = (KV_PIPELINE_PREFIX, KV_CONTROLLER_EPOCH, KV_CHECKPOINT_PREFIX)
#: what `--state` accepts (the one-line error of a bad URL names it)
STATE_URLS = "file:///path/to/dir or kafka://host:port/topic"


class FileKV:
    """A KVStore in a directory: key `k` in file `<dir>/<k, %-quoted>`, replaced atomically."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()

    def _path(self, key: str) -> Path:
        return self.root / quote(key, safe="")

    def get(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            return None

    def put(self, key: str, value: bytes) -> None:
        with self.lock:
            fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".tmp.")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(value)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self._path(key))
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            self._sync_dir()

    def delete(self, key: str) -> None:
        with self.lock:
            self._path(key).unlink(missing_ok=True)
            self._sync_dir()

    def keys(self, prefix: str) -> list[str]:
        found = (unquote(p.name) for p in self.root.iterdir() if not p.name.startswith(".tmp."))
        return sorted(k for k in found if k.startswith(prefix))

    def _sync_dir(self) -> None:
        fd = os.open(self.root, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def describe(self) -> str:
        return f"file://{self.root}"


class KafkaKV:
    """A KVStore in a compacted Kafka topic (one partition, created when missing): the whole topic is read
    once when opened; every put or delete is produced (a tombstone for a delete) and acknowledged
    (`acks=all`) before it returns."""

    def __init__(self, bootstrap: str, topic: str, timeout_s: float = 30.0) -> None:
        from confluent_kafka import Producer
        from confluent_kafka.admin import AdminClient

        from dbus_ray.kafka.client import client_config, create_topic, producer_config, topic_partitions

        self.bootstrap, self.topic, self.timeout_s = bootstrap, topic, timeout_s
        self.lock = threading.Lock()
        from confluent_kafka import KafkaException

        admin = AdminClient(client_config(bootstrap))
        try:
            partitions = topic_partitions(admin, topic, timeout_s)
            if partitions is None:
                create_topic(admin, topic, 1, config={"cleanup.policy": "compact"}, timeout_s=timeout_s)
                partitions = [0]
        except (KafkaException, RuntimeError) as exc:
            raise RuntimeError(f"controller state kafka://{bootstrap}/{topic}: {exc}") from None
        self.data = self._read(partitions)
        self.producer = Producer(producer_config(bootstrap, tuning={"linger.ms": 0}))

    def _read(self, partitions: list[int]) -> dict[str, bytes]:
        from dbus_ray.kafka.client import client_config, read_to_end

        data: dict[str, bytes] = {}
        for msg in read_to_end(client_config(self.bootstrap), self.topic, partitions, self.timeout_s,
                               "controller state kafka"):
            key = msg.key().decode()
            if msg.value() is None:
                data.pop(key, None)
            else:
                data[key] = msg.value()
        return data

    def _produce(self, key: str, value: bytes | None) -> None:
        errors: list[str] = []
        acked: list[bool] = []

        def done(err: Any, _msg: Any) -> None:
            (errors.append(err.str()) if err is not None else acked.append(True))

        self.producer.produce(self.topic, value, key.encode(), on_delivery=done)
        self.producer.flush(self.timeout_s)
        if errors or not acked:
            raise RuntimeError(f"controller state kafka: writing {key} to {self.topic} failed: "
                               f"{errors[0] if errors else 'not acknowledged in time'}")

    def get(self, key: str) -> bytes | None:
        return self.data.get(key)

    def put(self, key: str, value: bytes) -> None:
        with self.lock:
            if self.data.get(key) != value:
                self._produce(key, value)
                self.data[key] = value

    def delete(self, key: str) -> None:
        with self.lock:
            if key in self.data:
                self._produce(key, None)
                del self.data[key]

    def keys(self, prefix: str) -> list[str]:
        return sorted(k for k in list(self.data) if k.startswith(prefix))

    def describe(self) -> str:
        return f"kafka://{self.bootstrap}/{self.topic}"


def open_state(url: str) -> FileKV | KafkaKV:
    """The durable store of `--state URL` (ValueError naming the URL and what is accepted otherwise)."""
    parts = urlsplit(url)
    if parts.scheme == "file" and parts.path and not parts.netloc:
        return FileKV(parts.path)
    if parts.scheme == "kafka" and parts.netloc and parts.path.strip("/") and "/" not in parts.path.strip("/"):
        return KafkaKV(parts.netloc, parts.path.strip("/"))
    raise ValueError(f"controller state {url!r}: not a state URL (use {STATE_URLS})")


def _mirrored(key: str) -> bool:
    return key.startswith(MIRRORED)


class MirroredKV:
    """The controller's KVStore: Ray's GCS KV (`primary`) with every controller key written through to
    `durable` first (a write the durable store refuses fails before the GCS changes)."""

    def __init__(self, primary: KVStore, durable: Any) -> None:
        self.primary, self.durable = primary, durable

    def get(self, key: str) -> bytes | None:
        return self.primary.get(key)

    def put(self, key: str, value: bytes) -> None:
        if _mirrored(key):
            self.durable.put(key, value)
        self.primary.put(key, value)

    def delete(self, key: str) -> None:
        if _mirrored(key):
            self.durable.delete(key)
        self.primary.delete(key)

    def keys(self, prefix: str) -> list[str]:
        return self.primary.keys(prefix)

    def restore(self) -> list[str]:
        """Copy into the GCS KV every durable key it lacks, and into the durable store every controller key
        of the GCS it lacks (a durable state given to a running cluster's new controller); the epoch counter
        gets the higher of the two on both sides, so no epoch is handed out twice. The keys restored."""
        restored = self._fill(self.durable, self.primary)
        self._fill(self.primary, self.durable)
        return restored

    @staticmethod
    def _fill(source: Any, target: Any) -> list[str]:
        restored = []
        for key in source.keys(""):
            if not _mirrored(key):
                continue
            value, current = source.get(key), target.get(key)
            if value is None:
                continue
            if key == KV_CONTROLLER_EPOCH:
                if current is not None and int(current) >= int(value):
                    continue
            elif current is not None:
                continue
            target.put(key, value)
            restored.append(key)
        return restored

    def mirror(self, key: str) -> bool:
        """Copy `key` (a `gcs` checkpoint, written by the pipeline's reader) from the GCS KV to the durable
        store when it changed; True when it was copied."""
        value = self.primary.get(key)
        if value is None or self.durable.get(key) == value:
            return False
        self.durable.put(key, value)
        return True

    def describe(self) -> str:
        return self.durable.describe()

