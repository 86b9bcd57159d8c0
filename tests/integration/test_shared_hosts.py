"""Shared hosts (`flow.placement: shared`) on a real Ray: one health call per host serves all its pipelines
and a kill removes one pipeline alone; under the controller, pipelines packed into one host actor answer as
their reader would (status, peek, dag figures, backfill, stop of one alone); an exception in
one hosted pipeline's sink fails and restarts that pipeline alone while its neighbour in the host keeps
delivering; a kill -9 of a host holding three pipelines restarts each in a new host from its own checkpoint."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import ray

from dbus_ray.checkpoints import FileCheckpointStore
from dbus_ray.client import Bus
from dbus_ray.config import parse_config
from dbus_ray.errors import DbusError
from dbus_ray.hosting import HostedReader, reader_handle
from dbus_ray.pipeline import _HOST_HEALTH, Pipeline
from tests.support.helpers import kill_when, small_tmpfs, wait_for

pytestmark = pytest.mark.usefixtures("ray_session")


def spec(tmp_path: Path, name: str, out: Path | None = None, **source: Any) -> dict[str, Any]:
    return {"name": name, "project": "hosted", "data_dir": str(tmp_path / "data"),
            "source": {"type": "mock", "rows": None, "rate": 1000, "keys": 50, **source},
            "sinks": [{"name": "file", "type": "jsonl", "path": str(out or tmp_path / f"{name}.jsonl"),
                       "fsync": False}],
            "flow": {"read_batch_rows": 100, "max_rows_in_flight": 1000, "placement": "shared"},
            "checkpoint": {"every_ms": 100}}


def state(controller: Any, name: str) -> dict[str, Any]:
    return ray.get(controller.get.remote(name))


def running(controller: Any, *names: str) -> bool:
    return all(state(controller, n)["state"] == "running" and reader_handle(n) is not None for n in names)


def identity(name: str) -> dict[str, Any]:
    return ray.get(reader_handle(name).identity.remote(), timeout=10)


def offsets(path: Path) -> list[int]:
    return [json.loads(line)["pos"]["offset"] for line in path.read_text().splitlines()]


def delivered(controller: Any, name: str) -> int:
    return state(controller, name)["status"].get("rows_delivered", 0)


def test_one_health_call_per_host_and_a_kill_removes_one_pipeline(tmp_path: Path) -> None:
    names = ["o-a", "o-b", "o-c"]
    pipelines = [Pipeline(parse_config(spec(tmp_path, n), n, {})) for n in names]
    for p in pipelines:
        p.start()
    try:
        host = pipelines[0].host
        assert all(p.host_name == pipelines[0].host_name for p in pipelines), "packed into the one host of this process"
        wait_for(lambda: all(p.health()["rows_delivered"] > 100 for p in pipelines), what="rows through each")
        # the three health checks of one pass (as the controller's) cost one call to the host, not three
        _HOST_HEALTH.clear()
        before = ray.get(host.info.remote())["health_calls"]
        statuses = [p.health() for p in pipelines]
        assert [s["pipeline"] for s in statuses] == names and all(s["state"] == "running" for s in statuses)
        assert ray.get(host.info.remote())["health_calls"] == before + 1
        # a kill of one hosted pipeline removes it alone; its sink sees no write after the kill returns
        pipelines[1].kill()
        assert reader_handle("o-b") is None
        size = (tmp_path / "o-b.jsonl").stat().st_size
        others = (pipelines[0], pipelines[2])
        marks = {p.cfg.name: p.status()["rows_delivered"] for p in others}
        wait_for(lambda: all(p.status()["rows_delivered"] > marks[p.cfg.name] + 200 for p in others),
                 what="the other two go on")
        assert (tmp_path / "o-b.jsonl").stat().st_size == size
        assert ray.get(host.info.remote())["pipelines"] == ["o-a", "o-c"]
    finally:
        for p in pipelines:
            if p.host is not None:
                p.stop()
    assert not [a for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith("dbus:host:")]


def test_hosted_pipelines_share_a_host_and_answer_as_readers(controller: Any, tmp_path: Path) -> None:
    names = ["h-a", "h-b", "h-c"]
    for n in names:
        ray.get(controller.submit.remote(spec(tmp_path, n)))
    wait_for(lambda: running(controller, *names), what="three running pipelines")
    readers = {n: reader_handle(n) for n in names}
    assert all(isinstance(r, HostedReader) for r in readers.values())
    assert len({r.host_name for r in readers.values()}) == 1, "packed into one host"
    assert len({identity(n)["pid"] for n in names}) == 1
    assert {identity(n)["epoch"] for n in names} == {state(controller, n)["epoch"] for n in names}
    bus = Bus(controller)
    wait_for(lambda: all(delivered(controller, n) > 200 for n in names), what="rows through each")
    rows = bus.peek_rows("h-b", 5)
    assert len(rows) == 5 and {r["pipeline"] for r in rows} == {"h-b"}
    _, flow = bus.flow("h-a", 1.0)
    assert flow.read > 0 and flow.sinks["file"] > 0
    with pytest.raises(DbusError, match="pipeline h-c has a mock source, which cannot backfill"):
        bus.backfill("h-c", ["mock.items"])
    assert bus.samples("h-a", 1)
    # stopping one removes it alone
    ray.get(controller.stop.remote("h-b"))
    wait_for(lambda: state(controller, "h-b")["state"] == "stopped", what="h-b stopped")
    assert reader_handle("h-b") is None
    final = state(controller, "h-b")["status"]
    assert sorted(offsets(tmp_path / "h-b.jsonl")) == list(range(final["checkpoint"]["source"]["next"]))
    before = {n: delivered(controller, n) for n in ("h-a", "h-c")}
    wait_for(lambda: all(delivered(controller, n) > before[n] + 200 for n in before), what="the others go on")
    # a restarted controller re-attaches the hosted pipelines instead of restarting them
    epochs = {n: state(controller, n)["epoch"] for n in ("h-a", "h-c")}
    os.kill(ray.get(controller.info.remote())["pid"], signal.SIGKILL)
    wait_for(lambda: _loops(controller) >= 3, what="the restarted controller's loops")
    assert {n: state(controller, n)["epoch"] for n in epochs} == epochs
    assert all(state(controller, n)["state"] == "running" for n in epochs)


def _loops(controller: Any) -> int:
    try:
        return ray.get(controller.info.remote(), timeout=5)["loops"]
    except Exception:  # noqa: BLE001 - still restarting
        return 0


def test_a_failing_sink_fails_and_restarts_its_pipeline_alone(controller: Any, tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    with small_tmpfs(disk, "256k"):
        filler = disk / "filler"
        filler.write_bytes(b"x" * 232 * 1024)  # a few pages left: the sink's disk fills up
        ray.get(controller.submit.remote(spec(tmp_path, "h-ok")))
        ray.get(controller.submit.remote(spec(tmp_path, "h-full", disk / "out.jsonl", rows=600, rate=200)))
        wait_for(lambda: running(controller, "h-ok", "h-full"), what="both running")
        assert identity("h-ok")["pid"] == identity("h-full")["pid"], "one host"
        host_pid, ok_epoch, full_epoch = identity("h-ok")["pid"], *(state(controller, n)["epoch"]
                                                                     for n in ("h-ok", "h-full"))
        wait_for(lambda: "No space left on device" in (state(controller, "h-full")["error"] or ""),
                 what="h-full failing")
        # restarted alone, again and again while the disk is full; its neighbour runs on in the same host
        wait_for(lambda: state(controller, "h-full")["epoch"] >= full_epoch + 2, timeout=90, what="two restarts")
        mark = delivered(controller, "h-ok")
        wait_for(lambda: delivered(controller, "h-ok") > mark + 500, what="h-ok delivering")
        assert state(controller, "h-ok")["epoch"] == ok_epoch
        assert identity("h-ok")["pid"] == host_pid
        filler.unlink()  # room again: the next restart resumes from its checkpoint and delivers the rest
        wait_for(lambda: set(offsets(disk / "out.jsonl")) == set(range(600)), timeout=120, what="all 600 rows")
        seen = offsets(disk / "out.jsonl")
        print(f"h-full: {len(seen)} lines for 600 rows, restarted {state(controller, 'h-full')['epoch'] - full_epoch}"
              " times")
        assert state(controller, "h-ok")["epoch"] == ok_epoch and identity("h-ok")["pid"] == host_pid
        ray.get(controller.remove.remote("h-full"))


def test_kill_9_of_a_host_restarts_each_pipeline_from_its_checkpoint(controller: Any, tmp_path: Path) -> None:
    total = 6000
    names = ["k-a", "k-b", "k-c"]
    for n in names:
        ray.get(controller.submit.remote(spec(tmp_path, n, rows=total, rate=600)))
    wait_for(lambda: running(controller, *names), what="three running pipelines")
    old = {identity(n)["pid"] for n in names}
    assert len(old) == 1
    epochs = {n: state(controller, n)["epoch"] for n in names}
    stores = {n: FileCheckpointStore(tmp_path / "data" / n) for n in names}
    files = {n: tmp_path / f"{n}.jsonl" for n in names}
    frozen: dict[str, tuple[int, int]] = {}

    def ready() -> bool:  # with the host frozen: each checkpointed >= 500 rows and not done
        frozen.clear()
        for n in names:
            saved = stores[n].load()
            at = saved["source"]["next"] if saved else 0
            if not 500 <= at < total:
                return False
            frozen[n] = (at, files[n].read_bytes().count(b"\n"))
        return True

    kill_when(old.pop(), ready, "every pipeline of the host checkpointed and not done", timeout=60)
    killed = time.monotonic()
    for n in names:  # each restarted, in a new host, under a new epoch
        wait_for(lambda n=n: state(controller, n)["epoch"] > epochs[n] and running(controller, n), timeout=90,
                 what=f"{n} restarted")
    print(f"kill -9 of the host: its 3 pipelines running again in a new host after {time.monotonic() - killed:.1f} s")
    assert len({identity(n)["pid"] for n in names}) == 1
    for n in names:
        checkpoint, lines = frozen[n]
        expected = lines + total - checkpoint  # the new owner resumed exactly at its own checkpoint
        wait_for(lambda n=n, e=expected: files[n].read_bytes().count(b"\n") >= e, timeout=120, what=f"{n} done")
        seen = offsets(files[n])
        assert set(seen) == set(range(total)), f"{n}: a row was lost"
        assert len(seen) == expected, f"{n}: {len(seen)} lines, {expected} expected"
        print(f"{n}: checkpoint {checkpoint} at the kill, {lines - checkpoint} rows again, 0 lost")
