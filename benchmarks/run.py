"""`make bench`: measured figures, printed as JSON and written to bench-results.json (a short table on
stderr). `DBUS_BENCH_QUICK=1`: small row counts (well under 2 minutes).

- decoder (benchmarks/decoder.py): our `mysql` source (MysqlSource.open/poll in this process, no Ray)
  vs stock python-mysql-replication (BinLogStreamReader, `.rows`) on the same binlog, for one-row
  transactions and multi-row events; rows/s and the speed-up.
- transport: mock source -> router -> batcher -> writer (null sink) through real Ray actors on a local
  Ray; rows/s measured over the steady part of the run (from the first delivered row to the last).
- scale out (benchmarks/scale.py, in a process of its own: it starts a two-node Ray cluster): one
  pipeline on one node vs two pipelines on two nodes, each node one CPU core; rows/s and the ratio.
- density (benchmarks/density.py): memory (summed PSS of their actor processes) per idle mock pipeline,
  `flow.placement: fused` (one process a pipeline) vs `spread` (one per stage).
- snapshot (benchmarks/snapshot.py): the mysql source's snapshot read rate, parallelism 1 and 2.
- e2e (benchmarks/e2e.py): MariaDB -> Ray pipeline -> Apache Kafka: catch-up rows/s of pre-written
  rows and the pipeline's memory meanwhile (peak of the summed PSS of its four actor processes: shared
  pages such as libraries counted once; the summed RSS counts them four times); commit -> Kafka latency
  percentiles at a steady write rate (5,000 rows/s).

Every figure is measured in this run; the MariaDB and the broker are private ones started here.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from dbus_ray.config import parse_config  # noqa: E402
from dbus_ray.pipeline import connect_ray, run_pipeline  # noqa: E402

QUICK = os.environ.get("DBUS_BENCH_QUICK", "") not in ("", "0")
ROWS = int(os.environ.get("DBUS_BENCH_ROWS", "200000" if QUICK else "10000000"))
DECODER_ROWS = int(os.environ.get("DBUS_BENCH_DECODER_ROWS", "50000" if QUICK else "200000"))
CATCHUP_ROWS = int(os.environ.get("DBUS_BENCH_CATCHUP_ROWS", "50000" if QUICK else "1000000"))
LATENCY_RATE = int(os.environ.get("DBUS_BENCH_LATENCY_RATE", "5000"))
SCALE_ROWS = int(os.environ.get("DBUS_BENCH_SCALE_ROWS", "4000000" if QUICK else "10000000"))
DENSITY_PIPELINES = int(os.environ.get("DBUS_BENCH_DENSITY_PIPELINES", "5" if QUICK else "20"))
LATENCY_SECONDS = float(os.environ.get("DBUS_BENCH_LATENCY_SECONDS", "5" if QUICK else "20"))


def transport(rows: int, read_batch: int, sink_batch: int, in_flight: int) -> dict[str, Any]:
    data = tempfile.mkdtemp(prefix="dbus-bench-")
    cfg = parse_config({
        "name": f"bench-{read_batch}",
        "source": {"type": "mock", "rows": rows, "keys": 100_000},
        "sinks": [{"name": "null", "type": "null"}],
        "flow": {"read_batch_rows": read_batch, "sink_batch_rows": sink_batch, "max_rows_in_flight": in_flight},
        "data_dir": data,
    }, "bench", {})
    marks: list[tuple[float, int]] = []
    started = time.monotonic()
    final = run_pipeline(cfg, until_caught_up=True, interval=0.02,
                         on_progress=lambda s: marks.append((time.monotonic(), s["rows_delivered"])))
    wall = time.monotonic() - started
    moving = [(t, n) for t, n in marks if n > 0]
    (t0, n0), (t1, n1) = moving[0], moving[-1]
    steady = (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0
    return {
        "rows": final["rows_delivered"],
        "read_batch_rows": read_batch,
        "sink_batch_rows": sink_batch,
        "max_rows_in_flight": in_flight,
        "rows_per_s_steady": round(steady),
        "rows_per_s_wall": round(final["rows_delivered"] / wall),
        "wall_s": round(wall, 2),
    }


def scale_out(rows: int) -> dict[str, Any]:
    import subprocess

    here = Path(__file__).parent
    proc = subprocess.run([sys.executable, str(here / "scale.py"), str(rows)], capture_output=True, text=True,
                          timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"scale.py exited with {proc.returncode}: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def section(results: dict[str, Any], name: str, fn: Any, *args: Any) -> Any:
    """Run one benchmark; a failure is recorded (and makes the run exit non-zero), the rest still run."""
    started = time.monotonic()
    print(f"[bench] {name} ...", file=sys.stderr, flush=True)
    try:
        value = fn(*args)
    except Exception as exc:  # noqa: BLE001 - reported in the results
        traceback.print_exc()
        results.setdefault("errors", {})[name] = f"{type(exc).__name__}: {exc}"
        return None
    print(f"[bench] {name} done in {time.monotonic() - started:.1f}s", file=sys.stderr, flush=True)
    return value


def table(results: dict[str, Any]) -> str:
    lines = ["", "figure                                          value"]

    def row(label: str, value: Any, unit: str = "") -> None:
        if isinstance(value, (int, float)):
            value = f"{value:,.2f}" if isinstance(value, float) and value < 100 else f"{value:,.0f}"
        lines.append(f"{label:<46}  {value} {unit}".rstrip())

    dec = results.get("decoder") or {}
    for case in ("one_row_txn", "multi_row"):
        if case in dec:
            d = dec[case]
            row(f"decoder {case}: ours", d["ours_rows_per_s"], "rows/s")
            row(f"decoder {case}: stock", d["stock_rows_per_s"], "rows/s")
            row(f"decoder {case}: speed-up", d["speedup"], "x")
    if "transport_best_rows_per_s" in results:
        row("transport mock->null (best)", results["transport_best_rows_per_s"], "rows/s")
    scale = results.get("scale_out") or {}
    if "ratio" in scale:
        row("scale out: 1 pipeline, 1 node (1 core)", scale["one_pipeline_one_node_rows_per_s"], "rows/s")
        row("scale out: 2 pipelines, 2 nodes (1 core each)", scale["two_pipelines_total_rows_per_s"], "rows/s")
        row("scale out: ratio", scale["ratio"], "x")
    e2e = results.get("e2e") or {}
    if "catch_up" in e2e:
        c = e2e["catch_up"]
        row(f"e2e catch-up {c['rows']:,} rows: steady", c["rows_per_s_steady"], "rows/s")
        row(f"e2e catch-up {c['rows']:,} rows: wall", c["rows_per_s_wall"], "rows/s")
        row(f"peak PSS sum of the actors ({c['rows']:,} rows)", c["peak_pss_mb"], "MB")
        row("  PSS sum at start", c.get("pss_at_start_mb"), "MB")
        row("  peak RSS sum (shared pages counted per process)", c["peak_rss_mb"], "MB")
    if "latency" in e2e:
        lat = e2e["latency"]
        row(f"commit->Kafka p50 at {lat['rows_per_s_written']:,} rows/s", lat["p50_ms"], "ms")
        row(f"commit->Kafka p99 at {lat['rows_per_s_written']:,} rows/s", lat["p99_ms"], "ms")
    dens = results.get("density") or {}
    for mode in ("fused", "spread"):
        if mode in dens:
            d = dens[mode]
            row(f"idle pipeline PSS, {mode} ({d['pipelines']} pipelines, {d['processes']} processes)",
                d["pss_mb_per_pipeline"], "MB")
    snap = results.get("snapshot") or {}
    for p in (1, 2):
        if f"parallelism_{p}" in snap:
            row(f"snapshot {snap['rows']:,} rows, parallelism {p}", snap[f"parallelism_{p}"]["rows_per_s"], "rows/s")
    targets = [("transport", results.get("transport_best_rows_per_s"), ">=",
                results.get("transport_target_rows_per_s")),
               ("e2e catch-up", (e2e.get("catch_up") or {}).get("rows_per_s_steady"), ">=",
                results.get("e2e_target_rows_per_s")),
               ("p99 latency ms", (e2e.get("latency") or {}).get("p99_ms"), "<", results.get("latency_target_p99_ms")),
               ("memory (peak PSS MB)", (e2e.get("catch_up") or {}).get("peak_pss_mb"), "<",
                results.get("memory_target_mb")),
               ("idle fused pipeline PSS MB", (dens.get("fused") or {}).get("pss_mb_per_pipeline"), "<=",
                dens.get("target_pss_mb_per_pipeline"))]
    for what, value, cmp, target in targets:
        if value is not None and target is not None:
            met = value >= target if cmp == ">=" else value <= target if cmp == "<=" else value < target
            lines.append(f"target {what} {cmp} {target:,}: {'met' if met else 'NOT met'} ({value:,})")
    for name, err in (results.get("errors") or {}).items():
        lines.append(f"FAILED {name}: {err}")
    return "\n".join(lines)


def main() -> int:
    from decoder import decoder_bench
    from density import density_bench
    from e2e import catch_up, latency
    from snapshot import snapshot_bench

    from dbus_ray.devstack import Broker, MariaDB

    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "quick": QUICK,
    }
    started = time.monotonic()
    mariadb = MariaDB().start()
    broker = None
    try:
        results["decoder"] = section(results, "decoder", decoder_bench, mariadb, DECODER_ROWS, 1)
        if results["decoder"]:
            results["decoder_target_speedup"] = 4

        connect_ray(num_cpus=2)
        results["transport_mock_to_null"] = []
        for read_batch, sink_batch, in_flight in ((5_000, 20_000, 200_000), (20_000, 50_000, 400_000),
                                                   (100_000, 200_000, 800_000), (200_000, 400_000, 1_600_000)):
            r = section(results, f"transport-{read_batch}", transport, ROWS, read_batch, sink_batch, in_flight)
            if r:
                results["transport_mock_to_null"].append(r)
        if results["transport_mock_to_null"]:
            best = max(r["rows_per_s_steady"] for r in results["transport_mock_to_null"])
            results["transport_best_rows_per_s"] = best
            results["transport_target_rows_per_s"] = 2_000_000
        results["density"] = section(results, "density", density_bench, DENSITY_PIPELINES, DENSITY_PIPELINES)
        results["scale_out"] = section(results, "scale-out", scale_out, SCALE_ROWS)
        results["snapshot"] = section(results, "snapshot", snapshot_bench, mariadb)

        broker = Broker().start()
        e2e: dict[str, Any] = {}
        e2e["catch_up"] = section(results, "e2e-catch-up", catch_up, mariadb, broker, CATCHUP_ROWS)
        e2e["latency"] = section(results, "e2e-latency", latency, mariadb, broker, LATENCY_RATE, LATENCY_SECONDS)
        results["e2e"] = e2e
        results["memory_target_mb"] = 500
        results["e2e_target_rows_per_s"] = 50_000
        results["latency_target_p99_ms"] = 1000
    finally:
        if broker is not None:
            broker.stop()
        mariadb.stop()
    results["bench_wall_s"] = round(time.monotonic() - started, 1)
    Path("bench-results.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    print(table(results), file=sys.stderr)
    return 1 if results.get("errors") else 0


if __name__ == "__main__":
    sys.exit(main())
