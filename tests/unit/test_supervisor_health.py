"""The controller's batched health check (one `health_many` per reconcile step) and its loop times, with the
fake runtime of test_supervisor: no Ray."""

from __future__ import annotations

import pytest

from dbus_ray.controller import LoopTimes, Supervisor
from dbus_ray.storage.kv_store import MemoryKV
from tests.unit.test_supervisor import Clock, FakeRuntime, spec

NAMES = [f"p{i:02d}" for i in range(12)]


@pytest.fixture
def running():
    kv, runtime, clock = MemoryKV(), FakeRuntime({"a": 1, "b": 1}), Clock()
    sup = Supervisor(kv, runtime, "sticky", clock)
    for n in NAMES:
        sup.submit(spec(n))
    sup.reconcile()  # starts them all (nothing to check yet)
    assert sorted(runtime.live) == NAMES
    runtime.health_batches.clear()
    return runtime, clock, sup


def test_one_health_call_a_step_covers_every_running_pipeline(running) -> None:
    runtime, clock, sup = running
    sup.set_desired("p03", "paused")
    sup.reconcile()
    sup.reconcile()
    expected = [n for n in NAMES if n != "p03"]
    assert runtime.health_batches == [expected, expected]  # the paused one is not checked
    assert all(sup.get(n)["status"]["state"] == "running" for n in expected)


def test_one_dead_pipeline_in_the_batch_restarts_alone(running) -> None:
    runtime, clock, sup = running
    epochs = {n: sup.get(n)["epoch"] for n in NAMES}
    del runtime.live["p05"]  # its actor died
    sup.reconcile()
    starts = [e[1] for e in runtime.events if e[0] == "start"]
    assert starts.count("p05") == 2 and all(starts.count(n) == 1 for n in NAMES if n != "p05")
    assert sup.get("p05")["epoch"] > epochs["p05"]
    assert {n: sup.get(n)["epoch"] for n in NAMES if n != "p05"} == {n: epochs[n] for n in NAMES if n != "p05"}


def test_a_failed_pipeline_in_the_batch_fails_alone(running) -> None:
    runtime, clock, sup = running
    runtime.live["p07"].update(state="failed", error="sink refused the batch")
    sup.reconcile()
    assert sup.get("p07")["state"] == "failed" and sup.get("p07")["error"] == "sink refused the batch"
    assert ("kill", "p07", None) in runtime.events
    assert {sup.get(n)["state"] for n in NAMES if n != "p07"} == {"running"}


def test_a_failed_batch_judges_no_pipeline(running) -> None:
    runtime, clock, sup = running
    epochs = {n: sup.get(n)["epoch"] for n in NAMES}
    runtime.batch_error = RuntimeError("GCS unreachable")
    sup.reconcile()
    assert not [e for e in runtime.events if e[0] in ("kill", "stop")]
    runtime.batch_error = None
    del runtime.live["p04"]
    sup.reconcile()  # the next step checks again
    assert [e[1] for e in runtime.events if e[0] == "kill"] == ["p04"]
    assert {n: sup.get(n)["epoch"] for n in NAMES if n != "p04"} == {n: epochs[n] for n in NAMES if n != "p04"}
    assert len(runtime.health_batches) == 2


def test_a_pipeline_missing_from_the_answer_counts_as_unhealthy(running) -> None:
    runtime, clock, sup = running
    answer = runtime.health_many

    def partial(handles):
        out = answer(handles)
        out.pop("p02")
        return out

    runtime.health_many = partial
    epochs = {n: sup.get(n)["epoch"] for n in NAMES}
    sup.reconcile()  # killed, then started again in the same step under a new epoch
    assert [e[1] for e in runtime.events if e[0] == "kill"] == ["p02"]
    assert sup.get("p02")["epoch"] > epochs["p02"]
    assert {n: sup.get(n)["epoch"] for n in NAMES if n != "p02"} == {n: epochs[n] for n in NAMES if n != "p02"}


def test_loop_times_summary() -> None:
    clock = Clock()
    times = LoopTimes(keep=100, clock=clock)
    assert times.summary()["p99_ms"] is None
    for ms in range(1, 201):  # only the last 100 are kept: 101..200 ms, one a second
        clock.now += 1
        times.add(ms / 1000)
    s = times.summary()
    assert s == {"loops": 100, "p50_ms": 151.0, "p99_ms": 200.0, "max_ms": 200.0, "last_ms": 200.0}
    recent = times.summary(since=clock.now - 9)  # the last ten: 191..200 ms
    assert recent == {"loops": 10, "p50_ms": 196.0, "p99_ms": 200.0, "max_ms": 200.0, "last_ms": 200.0}
    assert times.summary(since=clock.now + 1)["loops"] == 0


def test_a_step_starts_many_pipelines_at_once() -> None:
    import threading

    kv, runtime, clock = MemoryKV(), FakeRuntime({"a": 1}), Clock()
    sup = Supervisor(kv, runtime, "sticky", clock)
    names = [f"s{i}" for i in range(6)]
    for n in names:
        sup.submit(spec(n))
    together = threading.Barrier(len(names), timeout=10)  # broken unless all six starts wait at once
    start = runtime.start

    def slow_start(cfg, *args):
        together.wait()
        return start(cfg, *args)

    runtime.start = slow_start
    runtime.fail_start["s4"] = "sink cannot open"
    sup.reconcile()
    assert {sup.get(n)["state"] for n in names if n != "s4"} == {"running"}
    assert sorted(runtime.live) == [n for n in names if n != "s4"]
    assert sup.get("s4")["state"] == "failed" and sup.get("s4")["error"] == "sink cannot open"
    assert len({sup.get(n)["epoch"] for n in names}) == len(names)
