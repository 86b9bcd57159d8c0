"""The controller's logic with a fake runtime and an in-memory KV: no Ray."""

from __future__ import annotations

from typing import Any

import pytest

from dbus_ray.controller import Supervisor
from dbus_ray.errors import DbusError
from dbus_ray.storage.kv_store import MemoryKV


class FakeRuntime:
    def __init__(self, nodes: dict[str, float]) -> None:
        self.node_map = dict(nodes)
        self.events: list[tuple[str, str, Any]] = []
        self.live: dict[str, dict[str, Any]] = {}  # pipeline -> {"epoch", "node", "state", "error"}
        self.epochs: dict[str, int] = {}
        self.fail_start: dict[str, str] = {}
        self.health_batches: list[list[str]] = []  # the pipelines of each health_many call
        self.batch_error: Exception | None = None

    def nodes(self) -> dict[str, float]:
        return dict(self.node_map)

    def start(self, cfg: Any, epoch: int, node: str, secrets: dict[str, str] | None = None,
              expect_checkpoint: bool = False) -> str:
        if cfg.name in self.fail_start:
            self.events.append(("failed", cfg.name, epoch))
            raise DbusError(self.fail_start[cfg.name])
        assert cfg.name not in self.live, "started while an older owner still runs"
        self.live[cfg.name] = {"epoch": epoch, "node": node, "state": "running", "error": None,
                               "secrets": dict(secrets or {}), "expect_checkpoint": expect_checkpoint,
                               "checkpoint_saved": False}
        self.events.append(("start", cfg.name, node))
        return cfg.name

    def attach(self, cfg: Any, epoch: int) -> str | None:
        live = self.live.get(cfg.name)
        return cfg.name if live and live["epoch"] == epoch else None

    def secrets(self, pipeline: str, epoch: int) -> dict[str, str] | None:
        live = self.live.get(pipeline)
        return dict(live["secrets"]) if live and live["epoch"] == epoch else None

    def health(self, handle: str) -> dict[str, Any]:
        live = self.live.get(handle)
        if live is None or live["node"] not in self.node_map:
            raise RuntimeError("actor died")
        return {"state": live["state"], "error": live["error"], "checkpoint_saved": live["checkpoint_saved"]}

    def health_many(self, handles: dict[str, str]) -> dict[str, Any]:
        self.health_batches.append(sorted(handles))
        if self.batch_error is not None:
            raise self.batch_error
        out: dict[str, Any] = {}
        for name, handle in handles.items():
            try:
                out[name] = self.health(handle)
            except Exception as exc:  # noqa: BLE001 - that pipeline's answer
                out[name] = exc
        return out

    def stop(self, handle: str) -> dict[str, Any]:
        self.events.append(("stop", handle, self.live.pop(handle, {}).get("node")))
        return {"state": "stopped"}

    def kill(self, handle: str) -> None:
        self.events.append(("kill", handle, None))
        self.live.pop(handle, None)

    def set_epoch(self, pipeline: str, epoch: int) -> None:
        self.epochs[pipeline] = epoch

    def clear_epoch(self, pipeline: str) -> None:
        self.epochs.pop(pipeline, None)


def spec(name: str, **source: Any) -> dict[str, Any]:
    return {"name": name, "source": {"type": "mock", **source}, "sinks": [{"name": "n", "type": "null"}]}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def parts():
    kv, runtime, clock = MemoryKV(), FakeRuntime({"a": 1, "b": 1}), Clock()
    return kv, runtime, clock, Supervisor(kv, runtime, "sticky", clock)


def test_submit_starts_and_places(parts) -> None:
    kv, runtime, clock, sup = parts
    for n in ("p1", "p2"):
        sup.submit(spec(n))
    sup.reconcile()
    assert {sup.get(n)["state"] for n in ("p1", "p2")} == {"running"}
    assert {runtime.live["p1"]["node"], runtime.live["p2"]["node"]} == {"a", "b"}
    assert runtime.epochs["p1"] == sup.get("p1")["epoch"]


def test_restarted_controller_reattaches_without_restart(parts) -> None:
    kv, runtime, clock, sup = parts
    sup.submit(spec("p1"))
    sup.reconcile()
    starts = [e for e in runtime.events if e[0] == "start"]
    again = Supervisor(kv, runtime, "sticky", clock)  # a new controller process, same KV
    again.reconcile()
    again.reconcile()
    assert [e for e in runtime.events if e[0] == "start"] == starts
    assert again.get("p1")["state"] == "running"


def test_dead_pipeline_restarts_under_new_epoch(parts) -> None:
    kv, runtime, clock, sup = parts
    sup.submit(spec("p1"))
    sup.reconcile()
    epoch = sup.get("p1")["epoch"]
    del runtime.live["p1"]  # actor died
    sup.reconcile()
    assert sup.get("p1")["epoch"] > epoch and runtime.live["p1"]["epoch"] == sup.get("p1")["epoch"]


def test_node_loss_moves_only_its_pipelines(parts) -> None:
    kv, runtime, clock, sup = parts
    for n in ("p1", "p2", "p3", "p4"):
        sup.submit(spec(n))
    sup.reconcile()
    on_b = {n for n in ("p1", "p2", "p3", "p4") if runtime.live[n]["node"] == "b"}
    del runtime.node_map["b"]
    runtime.events.clear()
    sup.reconcile()
    assert {e[1] for e in runtime.events if e[0] == "start"} == on_b
    assert all(v["node"] == "a" for v in runtime.live.values())


def test_rebalance_is_two_phase(parts) -> None:
    kv, runtime, clock, sup = parts
    for n in ("p1", "p2", "p3", "p4"):
        sup.submit(spec(n))
    sup.reconcile()
    runtime.node_map["c"] = 1
    runtime.events.clear()
    sup.reconcile()
    moved = [e for e in runtime.events if e[0] in ("stop", "start")]
    assert len(moved) == 2 and moved[0][0] == "stop" and moved[1][0] == "start" and moved[1][2] == "c"


def test_failure_is_a_state_with_backoff(parts) -> None:
    kv, runtime, clock, sup = parts
    runtime.fail_start["p1"] = "access denied for dbus@127.0.0.1"
    sup.submit(spec("p1"))
    sup.reconcile()
    record = sup.get("p1")
    assert record["state"] == "failed" and record["error"] == "access denied for dbus@127.0.0.1"
    sup.reconcile()  # still backing off: no new attempt
    assert sup.get("p1")["attempts"] == 1
    clock.now += 2.5
    sup.reconcile()
    assert sup.get("p1")["attempts"] == 2
    del runtime.fail_start["p1"]
    clock.now += 10
    sup.reconcile()
    assert sup.get("p1")["state"] == "running" and sup.get("p1")["error"] is None
    clock.now += 31  # stable for a while: the backoff starts anew
    sup.reconcile()
    assert sup.get("p1")["attempts"] == 0


def test_update_restarts_from_checkpoint_and_same_spec_is_a_no_op(parts) -> None:
    kv, runtime, clock, sup = parts
    sup.submit(spec("p1"))
    sup.reconcile()
    assert sup.submit(spec("p1"))["version"] == 1
    runtime.events.clear()
    assert sup.submit(spec("p1", rate=5))["version"] == 2
    sup.reconcile()
    assert [e[0] for e in runtime.events] == ["stop", "start"]


def test_pause_resume_remove(parts) -> None:
    kv, runtime, clock, sup = parts
    sup.submit(spec("p1"))
    sup.reconcile()
    sup.set_desired("p1", "paused")
    sup.reconcile()
    assert sup.get("p1")["state"] == "paused" and "p1" not in runtime.live
    sup.set_desired("p1", "running")
    sup.reconcile()
    assert sup.get("p1")["state"] == "running"
    sup.remove("p1")
    assert sup.list() == [] and kv.keys(Supervisor.PREFIX) == [] and "p1" not in runtime.epochs
    with pytest.raises(DbusError, match="no pipeline named 'p1'"):
        sup.get("p1")


def test_projects_filter_the_list(parts) -> None:
    kv, runtime, clock, sup = parts
    sup.submit({**spec("p1"), "project": "shop"})
    sup.submit({**spec("p2"), "project": "ads"})
    assert [r["name"] for r in sup.list("shop")] == ["p1"]


def test_secrets_stay_in_memory_and_a_restarted_controller_gets_them_from_the_pipeline(parts) -> None:
    kv, runtime, clock, sup = parts
    seen_paths: list[str] = []
    start = runtime.start

    def start_and_look(cfg: Any, epoch: int, node: str, secrets: dict[str, str], expect: bool) -> str:
        seen_paths.append(cfg.sinks[0].options.path)
        return start(cfg, epoch, node, secrets, expect)

    runtime.start = start_and_look
    spec_ = {"name": "s1", "source": {"type": "mock"},
             "sinks": [{"name": "f", "type": "jsonl", "path": "${SECRET_DIR}/out.jsonl"}]}
    sup.submit(spec_, {"SECRET_DIR": "/hunter2"})
    sup.reconcile()
    assert seen_paths == ["/hunter2/out.jsonl"]
    assert all(b"hunter2" not in value for value in kv.data.values())
    assert sup.submit(spec_, {"SECRET_DIR": "/hunter2"})["version"] == 1  # the same again: nothing changes

    again = Supervisor(kv, runtime, "sticky", clock)  # a restarted controller: the spec, not the secret
    again.reconcile()
    assert again.get("s1")["state"] == "running"  # re-attached, the secret taken back from the live reader
    assert all(b"hunter2" not in value for value in kv.data.values())
    del runtime.live["s1"]  # then the reader dies: restarted with the secret it had
    again.reconcile()
    again.reconcile()
    assert again.get("s1")["state"] == "running" and seen_paths[-1] == "/hunter2/out.jsonl"
    assert again.get("s1")["error"] is None


def test_a_restarted_controller_without_the_secrets_fails_the_pipeline_in_one_line(parts, caplog) -> None:
    kv, runtime, clock, sup = parts
    spec_ = {"name": "s1", "source": {"type": "mysql", "dsn": "mysql://u:${PW}@db1:3306"},
             "sinks": [{"name": "f", "type": "null"}]}
    sup.submit(spec_, {"PW": "hunter2"})
    sup.reconcile()
    del runtime.live["s1"]  # the pipeline died with the controller
    again = Supervisor(kv, runtime, "sticky", clock)
    with caplog.at_level("DEBUG"):
        for _ in range(3):
            again.reconcile()  # never raises
    logged = [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
    assert len(logged) == 1 and not any(r.exc_info for r in caplog.records), [r.getMessage() for r in logged]
    record = again.get("s1")
    assert record["state"] == "failed"
    assert record["error"] == ("environment variable PW unknown to the controller (secrets are kept in memory "
                               "only, by the controller and the pipeline's reader, and both were lost): submit "
                               "the pipeline again")
    again.submit(spec_, {"PW": "hunter2"})
    again.reconcile()
    assert again.get("s1")["state"] == "running" and runtime.live["s1"]["secrets"] == {"PW": "hunter2"}


def test_defaults_of_variables_work_through_the_controller(parts, monkeypatch) -> None:
    kv, runtime, clock, sup = parts
    monkeypatch.delenv("DBUS_TEST_UNSET", raising=False)
    seen: list[tuple[str, str]] = []
    start = runtime.start

    def start_and_look(cfg: Any, epoch: int, node: str, secrets: dict[str, str], expect: bool) -> str:
        seen.append((cfg.sinks[0].options.path, cfg.data_dir))
        return start(cfg, epoch, node, secrets, expect)

    runtime.start = start_and_look
    sup.submit({"name": "d1", "source": {"type": "mock"}, "data_dir": "${DBUS_TEST_UNSET:-/tmp/dflt}",
                "sinks": [{"name": "f", "type": "jsonl", "path": "${DBUS_TEST_UNSET:-/tmp/x.jsonl}"}]})
    sup.reconcile()
    assert seen == [("/tmp/x.jsonl", "/tmp/dflt")]
    assert sup.get("d1")["state"] == "running"


def test_a_pipeline_that_saved_checkpoints_is_started_expecting_one(parts) -> None:
    kv, runtime, clock, sup = parts
    sup.submit(spec("c1"))
    sup.reconcile()
    assert runtime.live["c1"]["expect_checkpoint"] is False
    runtime.live["c1"]["checkpoint_saved"] = True
    sup.reconcile()
    assert sup.get("c1")["checkpointed"] is True
    again = Supervisor(kv, runtime, "sticky", clock)  # known across a controller restart too
    runtime.live["c1"]["state"], runtime.live["c1"]["error"] = "failed", "boom"
    again.reconcile()
    clock.now += 100
    again.reconcile()
    assert runtime.live["c1"]["expect_checkpoint"] is True


def test_a_config_that_no_longer_parses_fails_the_pipeline_instead_of_raising(parts) -> None:
    kv, runtime, clock, sup = parts
    sup.submit(spec("b1"))
    record = sup.records["b1"]
    record.spec = {**record.spec, "flow": {"read_batch_rows": 0}}  # e.g. a spec a newer version rejects
    sup.reconcile()
    assert sup.get("b1")["state"] == "failed"
    assert "read_batch_rows" in sup.get("b1")["error"]


def test_stop_and_resume_answer_while_a_reconcile_step_is_slow(parts) -> None:
    """A reconcile step holds the controller's lock for as long as a start takes; stop and resume record
    the wish and answer at once (the next reconcile acts on it)."""
    import threading

    kv, runtime, clock, sup = parts
    sup.submit(spec("p1"))
    sup.submit(spec("slow"))
    sup.reconcile()
    sup.set_desired("slow", "stopped")
    sup.reconcile()
    sup.set_desired("slow", "running")
    entered, release = threading.Event(), threading.Event()
    start = runtime.start

    def slow_start(cfg: Any, epoch: int, node: str, secrets: dict[str, str], expect: bool) -> str:
        entered.set()
        assert release.wait(30)
        return start(cfg, epoch, node, secrets, expect)

    runtime.start = slow_start
    step = threading.Thread(target=sup.reconcile)
    step.start()
    try:
        assert entered.wait(10), "the reconcile step did not start the pipeline"
        answered: list[Any] = []
        caller = threading.Thread(target=lambda: answered.append(sup.set_desired("p1", "stopped")))
        caller.start()
        caller.join(2)
        assert answered and answered[0]["desired"] == "stopped", "stop waited for the reconcile step"
    finally:
        release.set()
        step.join(30)
    sup.reconcile()
    assert sup.get("p1")["state"] == "stopped" and sup.get("slow")["state"] == "running"
