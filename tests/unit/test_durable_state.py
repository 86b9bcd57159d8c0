"""The controller's durable state (`dbus_ray.storage.durable`) with a fake runtime: no Ray. A "cluster rebuilt
from nothing" is a new, empty in-memory GCS KV and a new runtime pointed at the same state directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dbus_ray.constants import checkpoint_key
from dbus_ray.controller import Supervisor
from dbus_ray.errors import DbusError
from dbus_ray.storage.durable import FileKV, MirroredKV, open_state
from dbus_ray.storage.kv_store import MemoryKV
from tests.unit.test_supervisor import Clock, FakeRuntime, spec


def test_file_kv_keeps_keys_across_reopening(tmp_path: Path) -> None:
    kv = FileKV(tmp_path / "state")
    kv.put("controller:pipeline:a/b c", b"1")
    kv.put("controller:epoch", b"7")
    kv.put("checkpoint:x", b"{}")
    kv.put("controller:epoch", b"8")
    kv.delete("checkpoint:x")
    kv.delete("never-there")
    again = FileKV(tmp_path / "state")
    assert again.keys("controller:") == ["controller:epoch", "controller:pipeline:a/b c"]
    assert again.get("controller:epoch") == b"8" and again.get("checkpoint:x") is None
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == [
        "controller%3Aepoch", "controller%3Apipeline%3Aa%2Fb%20c"]  # one file per key, no temp file left


@pytest.mark.parametrize("url", ["file://relative/dir", "file:", "kafka://host:9092", "kafka://h:1/a/b",
                                 "s3://bucket/x", "/plain/path"])
def test_bad_state_urls_are_one_line_errors(url: str) -> None:
    with pytest.raises(ValueError) as err:
        open_state(url)
    assert str(err.value) == (f"controller state {url!r}: not a state URL "
                              "(use file:///path/to/dir or kafka://host:port/topic)")


def test_open_state_file(tmp_path: Path) -> None:
    store = open_state(f"file://{tmp_path}/s")
    assert isinstance(store, FileKV) and store.root == tmp_path / "s" and (tmp_path / "s").is_dir()


def cluster(state: Path, clock: Clock, **kw: Any) -> tuple[MemoryKV, FakeRuntime, Supervisor]:
    """A fresh cluster: an empty GCS KV, two nodes of its own, a controller on the durable state `state`."""
    gcs, runtime = MemoryKV(), FakeRuntime({"n1": 1, "n2": 1})
    return gcs, runtime, Supervisor(MirroredKV(gcs, FileKV(state)), runtime, "sticky", clock, **kw)


def test_a_rebuilt_cluster_resumes_every_pipeline(tmp_path: Path) -> None:
    clock, state = Clock(), tmp_path / "state"
    gcs, runtime, sup = cluster(state, clock)
    sup.submit(spec("p1"))
    sup.submit(spec("p2", rate=10))
    sup.submit(spec("p2", rate=20))  # version 2
    sup.submit(spec("p3"))
    sup.set_desired("p3", "paused")
    sup.reconcile()
    runtime.kill("p1")  # a restart under a new epoch
    sup.reconcile()
    sup.reconcile()
    runtime.live["p2"]["checkpoint_saved"] = True
    sup.reconcile()
    before = {p["name"]: p for p in sup.list()}
    assert before["p1"]["epoch"] == 3 and before["p2"]["version"] == 2 and before["p2"]["checkpointed"]
    assert gcs.get("controller:epoch") == b"3"

    # the whole cluster is gone: a new one, its GCS empty, pointed at the same state
    gcs2, runtime2, sup2 = cluster(state, clock)
    after = {p["name"]: p for p in sup2.list()}
    assert {n: (p["version"], p["desired"], p["epoch"], p["checkpointed"]) for n, p in after.items()} == {
        n: (p["version"], p["desired"], p["epoch"], p["checkpointed"]) for n, p in before.items()}
    assert sup2.spec("p2") == spec("p2", rate=20)
    sup2.reconcile()
    assert sorted(runtime2.live) == ["p1", "p2"]  # p3 stays paused
    assert runtime2.live["p2"]["expect_checkpoint"], "p2 saved a checkpoint: it must resume from it"
    new_epochs = {n: sup2.get(n)["epoch"] for n in ("p1", "p2")}
    assert min(new_epochs.values()) > 3, f"epochs handed out again after the rebuild: {new_epochs}"
    assert runtime2.epochs == new_epochs


def test_gcs_checkpoints_are_mirrored_and_restored(tmp_path: Path) -> None:
    clock, state = Clock(), tmp_path / "state"
    gcs, runtime, sup = cluster(state, clock)
    sup.submit({**spec("g"), "checkpoint": {"store": "gcs"}})
    sup.submit(spec("f"))  # store file: nothing of it to mirror
    sup.reconcile()
    gcs.put(checkpoint_key("g"), b'{"source": {"next": 41}}')  # what the reader saved
    gcs.put(checkpoint_key("f"), b"not mine")
    sup.reconcile()
    durable = FileKV(state)
    assert durable.get(checkpoint_key("g")) == b'{"source": {"next": 41}}'
    assert durable.get(checkpoint_key("f")) is None
    gcs.put(checkpoint_key("g"), b'{"source": {"next": 42}}')
    sup.set_desired("g", "stopped")
    sup.reconcile()
    assert durable.get(checkpoint_key("g")) == b'{"source": {"next": 42}}'

    gcs2, _, sup2 = cluster(state, clock)
    assert gcs2.get(checkpoint_key("g")) == b'{"source": {"next": 42}}'
    assert sup2.get("g")["desired"] == "stopped"
    # a GCS that kept its own (newer) checkpoint is not overwritten by the durable copy
    gcs3 = MemoryKV()
    gcs3.put(checkpoint_key("g"), b'{"source": {"next": 50}}')
    MirroredKV(gcs3, FileKV(state)).restore()
    assert gcs3.get(checkpoint_key("g")) == b'{"source": {"next": 50}}'


def test_removed_pipelines_leave_the_durable_state(tmp_path: Path) -> None:
    clock, state = Clock(), tmp_path / "state"
    _, _, sup = cluster(state, clock)
    sup.submit(spec("gone"))
    sup.reconcile()
    sup.remove("gone")
    assert FileKV(state).keys("controller:pipeline:") == []
    assert cluster(state, clock)[2].list() == []


def test_secrets_stay_out_of_the_durable_state(tmp_path: Path) -> None:
    clock, state = Clock(), tmp_path / "state"
    _, runtime, sup = cluster(state, clock)
    secret = "Pw9SecretValueXq"
    sup.submit({**spec("s"), "source": {"type": "mock", "db": "${DURABLE_TEST_PW}"}}, {"DURABLE_TEST_PW": secret})
    sup.reconcile()
    assert runtime.live["s"]["secrets"] == {"DURABLE_TEST_PW": secret}
    written = b"".join(p.read_bytes() for p in state.iterdir())
    assert b"${DURABLE_TEST_PW}" in written and secret.encode() not in written
    # a rebuilt cluster does not know the value: the pipeline fails asking for it, then runs once it is given
    _, runtime2, sup2 = cluster(state, clock)
    sup2.reconcile()
    assert sup2.get("s")["state"] == "failed" and "DURABLE_TEST_PW" in sup2.get("s")["error"]
    sup2.submit({**spec("s"), "source": {"type": "mock", "db": "${DURABLE_TEST_PW}"}}, {"DURABLE_TEST_PW": secret})
    sup2.reconcile()
    assert sup2.get("s")["state"] == "running" and runtime2.live["s"]["secrets"] == {"DURABLE_TEST_PW": secret}


def test_gcs_store_refused_when_it_would_die_with_the_head(tmp_path: Path) -> None:
    sup = Supervisor(MemoryKV(), FakeRuntime({"n": 1}), volatile_gcs="GCS fault tolerance is off")
    with pytest.raises(DbusError) as err:
        sup.submit({**spec("v"), "checkpoint": {"store": "gcs"}})
    assert str(err.value) == "pipeline v: checkpoint store gcs refused: GCS fault tolerance is off"
    assert sup.list() == []
    assert sup.submit({**spec("v"), "checkpoint": {"store": "file"}})["name"] == "v"


def test_a_durable_write_that_fails_leaves_the_gcs_unchanged(tmp_path: Path) -> None:
    class Broken(FileKV):
        def put(self, key: str, value: bytes) -> None:
            raise OSError(f"{self.root}: read-only file system")

    gcs = MemoryKV()
    sup = Supervisor(MirroredKV(gcs, Broken(tmp_path)), FakeRuntime({"n": 1}))
    with pytest.raises(OSError):
        sup.submit(spec("w"))
    assert gcs.keys("") == [] and sup.list() == []


def test_a_durable_state_given_later_is_seeded_from_the_gcs(tmp_path: Path) -> None:
    """A cluster that ran without --state gets a controller with one: its pipelines and epoch are written there
    at once (not at their next change), so a rebuild from that state finds them."""
    clock, gcs, runtime = Clock(), MemoryKV(), FakeRuntime({"n1": 1})
    sup = Supervisor(gcs, runtime, "sticky", clock)
    sup.submit(spec("early"))
    sup.reconcile()
    Supervisor(MirroredKV(gcs, FileKV(tmp_path / "state")), runtime, "sticky", clock)  # the new controller
    durable = FileKV(tmp_path / "state")
    assert durable.keys("") == ["controller:epoch", "controller:pipeline:early"]
    assert durable.get("controller:epoch") == gcs.get("controller:epoch") == b"1"
    _, _, rebuilt = cluster(tmp_path / "state", clock)
    assert [p["name"] for p in rebuilt.list()] == ["early"]
