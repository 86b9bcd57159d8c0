"""Density: memory per idle pipeline in each placement (`flow.placement: fused | spread`).

Starts `n` mock pipelines (a slow endless source, a null sink) on the local Ray, waits until each has
delivered rows, then sums the PSS (`/proc/<pid>/smaps_rollup`: pages shared between processes, such as
libraries, split among them) of every actor process of those pipelines and divides by `n`. Run by
`benchmarks/run.py`, or alone: `python benchmarks/density.py [N]`."""

from __future__ import annotations

import json
import sys
import tempfile
import time
from typing import Any

import ray
from ray._private import state

from dbus_ray.config import parse_config
from dbus_ray.pipeline import Pipeline, connect_ray

TARGET_PSS_MB = 60  # per idle pipeline, fused


def _pss_kb(pid: int) -> int:
    try:
        for line in open(f"/proc/{pid}/smaps_rollup"):
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def density(n: int, placement: str) -> dict[str, Any]:
    data = tempfile.mkdtemp(prefix="dbus-density-")
    pipelines = []
    started = time.monotonic()
    try:
        for i in range(n):
            cfg = parse_config({
                "name": f"density-{placement}-{i}", "data_dir": data,
                "source": {"type": "mock", "rows": None, "rate": 10, "keys": 10},
                "sinks": [{"name": "null", "type": "null"}],
                "flow": {"read_batch_rows": 100, "max_rows_in_flight": 1000, "placement": placement},
            }, "density", {})
            pipeline = Pipeline(cfg)
            pipeline.start()
            pipelines.append(pipeline)
        start_s = time.monotonic() - started
        deadline = time.monotonic() + 120
        while any(p.status()["rows_delivered"] == 0 for p in pipelines):
            if time.monotonic() > deadline:
                raise RuntimeError("pipelines did not deliver within 120 s")
            time.sleep(0.5)
        prefix = f"dbus:density-{placement}-"
        pids = {int(a["Pid"]) for a in state.actors().values()
                if (a.get("Name") or "").startswith(prefix) and a.get("State") == "ALIVE" and a.get("Pid")}
        pss_mb = sum(_pss_kb(pid) for pid in pids) / 1024
        return {"pipelines": n, "placement": placement, "processes": len(pids),
                "pss_mb_total": round(pss_mb, 1), "pss_mb_per_pipeline": round(pss_mb / n, 1),
                "start_s": round(start_s, 1)}
    finally:
        for p in pipelines:
            try:
                p.stop(timeout=30)
            except Exception:  # noqa: BLE001 - killed either way
                p.kill()


def density_bench(fused_n: int, spread_n: int) -> dict[str, Any]:
    out = {"fused": density(fused_n, "fused"), "spread": density(spread_n, "spread")}
    out["target_pss_mb_per_pipeline"] = TARGET_PSS_MB
    out["met"] = out["fused"]["pss_mb_per_pipeline"] <= TARGET_PSS_MB
    return out


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    connect_ray(num_cpus=2)
    print(json.dumps(density_bench(n, n), indent=2))
    ray.shutdown()
