"""The controller's batched health check on a real Ray (`RayRuntime.health_many`): every pipeline's calls
fired at once and awaited under one timeout, a dead or hung pipeline answered by its own exception."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest
import ray

from dbus_ray.actors.controller import RayRuntime

pytestmark = pytest.mark.usefixtures("ray_session")


@ray.remote(num_cpus=0, max_concurrency=8)
class Stage:
    """Stands for a pipeline actor: `status` (as a reader) and `stats` (as any other stage)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.delay = 0.0

    def hang(self, seconds: float) -> None:
        self.delay = seconds

    def status(self) -> dict[str, Any]:
        time.sleep(self.delay)
        return {"state": "running", "pipeline": self.name}

    def stats(self) -> dict[str, Any]:
        time.sleep(self.delay)
        return {"rows": 0}


def handle(reader: Any, *others: Any) -> Any:
    """What `health_many` reads of a `Pipeline`: its reader and its actors (reader first)."""
    return SimpleNamespace(reader=reader, actors=[reader, *others], host=None, host_name=None)


@ray.remote(num_cpus=0)
class Host:
    """Stands for a host actor of shared pipelines: one `health_all` answers for all it holds."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.calls = 0

    def health_all(self) -> dict[str, Any]:
        self.calls += 1
        return {n: {"state": "running", "pipeline": n} for n in self.names}

    def count(self) -> int:
        return self.calls


def test_health_many_answers_each_pipeline_and_waits_once() -> None:
    readers = [Stage.remote(f"h{i}") for i in range(3)]
    router = Stage.remote("h0-router")
    handles = {"h0": handle(readers[0], router), "h1": handle(readers[1]), "h2": handle(readers[2])}
    ray.get([a.stats.remote() for a in [*readers, router]])  # all up
    runtime = RayRuntime()
    assert runtime.health_many(handles) == {f"h{i}": {"state": "running", "pipeline": f"h{i}"} for i in range(3)}

    ray.kill(readers[1], no_restart=True)
    ray.get(router.hang.remote(30))  # h0's router stops answering
    ray.get(readers[2].hang.remote(1.0))  # h2 answers late but within the timeout
    began = time.monotonic()
    out = runtime.health_many(handles, timeout=3.0)
    took = time.monotonic() - began
    assert isinstance(out["h0"], ray.exceptions.GetTimeoutError)
    assert isinstance(out["h1"], ray.exceptions.RayActorError)
    assert out["h2"] == {"state": "running", "pipeline": "h2"}
    assert 3.0 <= took < 6.0  # one timeout for the batch, not one per pipeline
    assert runtime.health_many({}) == {}


def test_pipelines_of_one_host_cost_one_call() -> None:
    host = Host.remote(["s0", "s1"])
    hosted = {n: SimpleNamespace(reader=None, actors=[], host=host, host_name="dbus:host:9")
              for n in ["s0", "s1", "s2"]}
    out = RayRuntime().health_many(hosted)
    assert out["s0"] == {"state": "running", "pipeline": "s0"} and out["s1"]["pipeline"] == "s1"
    assert "not in its host dbus:host:9" in str(out["s2"])  # the host no longer holds it: unhealthy
    assert ray.get(host.count.remote()) == 1
