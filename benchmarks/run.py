"""`make bench`: measured figures, printed as JSON and written to bench-results.json.

transport: mock source -> router -> batcher -> writer (null sink) through real Ray actors on a local
Ray; rows/s measured over the steady part of the run (from the first delivered row to the last).
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from dbus_ray.config import parse_config  # noqa: E402
from dbus_ray.pipeline import connect_ray, run_pipeline  # noqa: E402

ROWS = int(os.environ.get("DBUS_BENCH_ROWS", "10000000"))


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


def main() -> int:
    connect_ray(num_cpus=2)
    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "transport_mock_to_null": [],
    }
    for read_batch, sink_batch, in_flight in ((5_000, 20_000, 200_000), (20_000, 50_000, 400_000),
                                               (100_000, 200_000, 800_000)):
        r = transport(ROWS, read_batch, sink_batch, in_flight)
        results["transport_mock_to_null"].append(r)
        print(f"transport mock->null  batch {read_batch:>7,}: {r['rows_per_s_steady']:>12,} rows/s steady, "
              f"{r['rows_per_s_wall']:>12,} rows/s wall", file=sys.stderr)
    best = max(r["rows_per_s_steady"] for r in results["transport_mock_to_null"])
    results["transport_best_rows_per_s"] = best
    results["transport_target_rows_per_s"] = 1_000_000
    Path("bench-results.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
