"""The registry's plugin kinds and abilities, the names the bus gives things in Ray, and the KV-backed state
(epochs, checkpoint store gcs) on an in-memory KV: no Ray."""

from __future__ import annotations

from typing import Any

import pytest

from dbus_ray import fencing, registry
from dbus_ray.checkpoints import FileCheckpointStore, GcsCheckpointStore, open_store
from dbus_ray.constants import actor_name
from dbus_ray.storage.kv_store import MemoryKV


def test_source_abilities_follow_what_it_implements() -> None:
    class Plain(registry.Source):
        type_name = "plain"

    class Backfills(registry.Source):
        def backfill(self, tables: list[str], where: str | None = None) -> dict[str, Any]:
            return {"tables": tables}

    class Reports(registry.Source):
        def snapshot_progress(self) -> dict[str, Any] | None:
            return {"state": "running"}

    class SaysNo(registry.Source):
        supports_backfill = False  # an explicit declaration wins

        def backfill(self, tables: list[str], where: str | None = None) -> dict[str, Any]:
            return {}

    assert (Plain.supports_backfill, Plain.reports_snapshot_progress) == (False, False)
    assert (Backfills.supports_backfill, Backfills.reports_snapshot_progress) == (True, False)
    assert (Reports.supports_backfill, Reports.reports_snapshot_progress) == (False, True)
    assert SaysNo.supports_backfill is False
    assert Plain("p", None).snapshot_progress() is None
    with pytest.raises(ValueError, match="a plain source cannot backfill"):
        Plain("p", None).backfill(["a.b"])
    assert registry.abilities(Backfills) == ["supports_backfill"]


def test_every_kind_has_its_builtins() -> None:
    assert registry.known(registry.SOURCE) == ["binlog_files", "kafka", "mock", "mysql"]
    assert registry.known(registry.STORE) == ["delta", "file", "gcs", "kafka", "postgres"]
    assert registry.store_class("file") is FileCheckpointStore
    assert registry.plugin_class(registry.OPERATOR, "route").type_name == "route"
    with pytest.raises(KeyError):
        registry.plugin_class(registry.SINK, "nope")


def test_open_store_by_name(tmp_path: Any) -> None:
    store = open_store("file", "p", tmp_path / "p")
    assert isinstance(store, FileCheckpointStore) and store.path == tmp_path / "p" / "checkpoint.json"
    with pytest.raises(ValueError, match="unknown checkpoint store 'zk'"):
        open_store("zk", "p", tmp_path)


def test_actor_names() -> None:
    assert actor_name("orders", "reader") == "dbus:orders:reader"
    assert actor_name("orders", "writer", "kafka") == "dbus:orders:writer:kafka"


def test_epochs_and_gcs_checkpoints_in_one_kv() -> None:
    kv = MemoryKV()
    assert fencing.current_epoch("p", kv) is None
    fencing.set_epoch("p", 7, kv)
    assert fencing.current_epoch("p", kv) == 7 and kv.data["epoch:p"] == b"7"
    store = GcsCheckpointStore("p", kv)
    assert store.load() is None
    store.save({"source": {"file": "b.1", "offset": 4}, "seq": 3})
    assert GcsCheckpointStore("p", kv).load() == {"source": {"file": "b.1", "offset": 4}, "seq": 3}
    assert sorted(kv.keys("")) == ["checkpoint:p", "epoch:p"] and store.describe() == "gcs checkpoint:p"
    fencing.clear_epoch("p", kv)
    assert kv.keys("epoch:") == []
