"""Scale out: one pipeline on one node vs two pipelines on two nodes, mock -> router -> batcher ->
writer (null sink), on a `ray.cluster_utils.Cluster` of two raylets on this machine.

Each simulated node gets one CPU core of its own: every thread of every actor process of a pipeline
is pinned (sched_setaffinity) to that node's core, so node A's pipeline runs on core 0 and node B's
on core 1, as on two one-core machines. Rows/s of each pipeline are measured over the steady part of
its run (first to last delivered row, from the reader's status every 20 ms); for two pipelines only
the window in which both were delivering counts. The ratio is (rows/s of both) / (rows/s of one).

Run as a script (its own process: it starts its own Ray cluster); prints one JSON object."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def pin(pid: int, core: int) -> None:
    """Every thread of process `pid` onto `core` (threads started later inherit it)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            os.sched_setaffinity(int(task.name), {core})
        except OSError:
            pass  # a thread that ended meanwhile


def start(name: str, node_id: str, core: int, rows: int, data: str) -> Any:
    import ray

    from dbus_ray.config import parse_config
    from dbus_ray.pipeline import Pipeline

    cfg = parse_config({
        "name": name,
        "source": {"type": "mock", "rows": rows, "keys": 100_000},
        "sinks": [{"name": "null", "type": "null"}],
        "flow": {"read_batch_rows": 100_000, "sink_batch_rows": 200_000, "max_rows_in_flight": 800_000},
        "data_dir": data,
    }, "bench", {})
    pipeline = Pipeline(cfg, node_id=node_id)
    pipeline.start()
    for handle in pipeline.actors:
        pin(ray.get(handle.__ray_call__.remote(lambda self: os.getpid()), timeout=60), core)
    return pipeline


def run(pipelines: list[Any]) -> list[list[tuple[float, int]]]:
    """Poll until every pipeline is caught up; (time, rows delivered) marks of each."""
    marks: list[list[tuple[float, int]]] = [[] for _ in pipelines]
    done = [False] * len(pipelines)
    while not all(done):
        for i, p in enumerate(pipelines):
            if done[i]:
                continue
            status = p.status()
            if status["state"] == "failed":
                raise RuntimeError(f"{p.cfg.name} failed: {status['error']}")
            marks[i].append((time.monotonic(), status["rows_delivered"]))
            done[i] = status["caught_up"]
        time.sleep(0.02)
    for p in pipelines:
        p.stop()
    return marks


def rate(marks: list[tuple[float, int]], lo: float = 0.0, hi: float = float("inf")) -> float:
    moving = [(t, n) for t, n in marks if n > 0 and lo <= t <= hi]
    if len(moving) < 2:
        raise RuntimeError("too few progress marks to measure a rate: give the pipelines more rows")
    (t0, n0), (t1, n1) = moving[0], moving[-1]
    return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0


def main(rows: int) -> dict[str, Any]:
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    cluster.add_node(num_cpus=2)
    ray.init(address=cluster.address, namespace="dbus")
    cluster.wait_for_nodes()
    try:
        nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
        data = tempfile.mkdtemp(prefix="dbus-bench-scale-")
        [one] = run([start("scale-one", nodes[0], 0, rows, data)])
        single = rate(one)
        a, b = run([start("scale-a", nodes[0], 0, rows, data), start("scale-b", nodes[1], 1, rows, data)])
        # the window in which both delivered
        lo = max(next(t for t, n in m if n > 0) for m in (a, b))
        hi = min(max(t for t, _ in m) for m in (a, b))
        both = [rate(a, lo, hi), rate(b, lo, hi)]
        return {
            "rows_per_pipeline": rows,
            "cores": os.cpu_count(),
            "one_pipeline_one_node_rows_per_s": round(single),
            "two_pipelines_two_nodes_rows_per_s": [round(x) for x in both],
            "two_pipelines_total_rows_per_s": round(sum(both)),
            "ratio": round(sum(both) / single, 2) if single else None,
            "overlap_s": round(hi - lo, 2),
        }
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]) if len(sys.argv) > 1 else 5_000_000)))
