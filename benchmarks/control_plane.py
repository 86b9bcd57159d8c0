"""The control plane at `n` pipelines without `n` pipeline processes (issue "Density", item 3).

`n` stand-in pipelines: handles whose reader is one of a few `StandIn` actors on the local Ray answering
`status()` with a reader-shaped status (a checkpoint, a snapshot progress), so every health call is a real
Ray call, as one per fused pipeline (or one per host, for hosted ones) is. Measured:
- `health_batched_ms`: `RayRuntime.health_many` over all `n` (p50/p99 of `ROUNDS` rounds), beside
  `health_in_turn_ms`: one `ray.get` per pipeline in turn, as the controller did before;
- `reconcile_ms`: a `Supervisor` step (in this process, an in-memory KV, the real `health_many`) over the
  `n` running pipelines, p50/p99;
- `status_ms`: `Bus.rows()` (what `dbus status` prints) from an actor answering `list()` with the
  supervisor's `n` records, p50/max.
"""

from __future__ import annotations

import statistics
import time
from types import SimpleNamespace
from typing import Any

import ray

from dbus_ray.actors.controller import RayRuntime
from dbus_ray.client import Bus
from dbus_ray.controller import LoopTimes, Supervisor
from dbus_ray.storage.kv_store import MemoryKV

ROUNDS = 20
STAND_INS = 4


@ray.remote(num_cpus=0, max_concurrency=64)
class StandIn:
    def status(self) -> dict[str, Any]:
        return {"pipeline": "p", "state": "running", "rows_read": 123_456, "rows_delivered": 123_456,
                "rows_in_flight": 0, "max_rows_in_flight": 100_000, "caught_up": True, "lag_seconds": 0.0,
                "checkpoint": {"source": {"file": "mysql-bin.000042", "offset": 123_456_789,
                                          "gtid": "0-1-123456", "index": 0}, "seq": 1234, "ts": time.time(),
                               "set_by": None},
                "checkpoint_saved": True, "source_host": "127.0.0.1:3306", "errors": 0, "error": None,
                "snapshot": {"state": "done", "tables_done": 1, "tables_total": 1, "chunks": 10, "rows": 10_000,
                             "rows_per_second": 50_000.0, "eta_seconds": 0.0}}

    def stats(self) -> dict[str, Any]:
        return {"rows": 0}


@ray.remote(num_cpus=0)
class Records:
    """Answers `list()` as the controller does, with fixed records."""

    def __init__(self, records: list[dict[str, Any]]) -> None:
        self.records = records

    def list(self, project: str | None = None) -> list[dict[str, Any]]:
        return self.records


class StandInRuntime(RayRuntime):
    """`RayRuntime` whose pipelines are stand-in handles (its `health_many` is the real one)."""

    def __init__(self, stand_ins: list[Any]) -> None:
        self.stand_ins = stand_ins
        self.count = 0

    def nodes(self) -> dict[str, float]:
        return {"node": 1.0}

    def start(self, cfg: Any, epoch: int, node: str, secrets: dict[str, str], expect_checkpoint: bool) -> Any:
        reader = self.stand_ins[self.count % len(self.stand_ins)]
        self.count += 1
        return SimpleNamespace(reader=reader, actors=[reader], host=None, host_name=None)

    def attach(self, cfg: Any, epoch: int) -> None:
        return None

    def secrets(self, pipeline: str, epoch: int) -> None:
        return None

    def stop(self, handle: Any) -> None:
        return None

    def kill(self, handle: Any) -> None:
        pass

    def set_epoch(self, pipeline: str, epoch: int) -> None:
        pass

    def clear_epoch(self, pipeline: str) -> None:
        pass


def _summary(seconds: list[float]) -> dict[str, float]:
    times = LoopTimes(len(seconds))
    for s in seconds:
        times.add(s)
    out = times.summary()
    return {"p50_ms": out["p50_ms"], "p99_ms": out["p99_ms"], "max_ms": out["max_ms"]}


def _timed(fn: Any, rounds: int = ROUNDS) -> list[float]:
    out = []
    for _ in range(rounds):
        began = time.monotonic()
        fn()
        out.append(time.monotonic() - began)
    return out


def control_plane(n: int = 200) -> dict[str, Any]:
    stand_ins = [StandIn.remote() for _ in range(STAND_INS)]
    ray.get([s.stats.remote() for s in stand_ins])
    runtime = StandInRuntime(stand_ins)
    sup = Supervisor(MemoryKV(), runtime, "sticky")
    for i in range(n):
        sup.submit({"name": f"cp-{i:03d}", "source": {"type": "mock"}, "sinks": [{"name": "n", "type": "null"}]})
    sup.reconcile()  # starts all
    sup.reconcile()  # first health: records get their status
    handles = dict(sup.handles)
    assert len(handles) == n and all(r.status.get("state") == "running" for r in sup.records.values())

    def in_turn() -> None:
        for h in handles.values():
            ray.get([h.reader.status.remote()] + [a.stats.remote() for a in h.actors[1:]], timeout=10)

    batched = _timed(lambda: runtime.health_many(handles))
    turn = _timed(in_turn)
    batched_again = _timed(lambda: runtime.health_many(handles))  # alternated: before/after in the same conditions
    reconcile = _timed(sup.reconcile)
    bus = Bus(Records.remote(sup.list()))
    rows = len(bus.rows())
    status = _timed(bus.rows, 5)
    for a in [*stand_ins, bus.controller]:
        ray.kill(a)
    return {"pipelines": n, "stand_in_actors": STAND_INS, "rounds": ROUNDS,
            "health_batched_ms": _summary(batched + batched_again), "health_in_turn_ms": _summary(turn),
            "reconcile_ms": _summary(reconcile),
            "status_ms_p50": round(1000 * statistics.median(status), 1),
            "status_ms_max": round(1000 * max(status), 1), "status_rows": rows}


if __name__ == "__main__":
    import json
    import os
    import sys

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    from dbus_ray.pipeline import connect_ray

    connect_ray(num_cpus=2)
    print(json.dumps(control_plane(int(sys.argv[1]) if len(sys.argv) > 1 else 200), indent=2))
