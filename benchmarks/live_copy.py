"""Catch-up into the live-copy sinks: `rows` rows pre-written (INSERTs of 1,000 rows into the 7-column table of
the decoder benchmark), then a pipeline started at the position before them runs until caught up into
- `postgres`: the postgres sink (COPY into a staging table, one INSERT ... ON CONFLICT per table per batch, the
  checkpoint in the same transaction; `checkpoint.store: postgres`) on a private PostgreSQL;
- `delta`: the delta sink (one Delta MERGE per table per batch, the checkpoint in the commit info;
  `checkpoint.store: delta`) into a local directory.
rows/s over the steady part (first to last delivered row, from the reader's status every 100 ms) and over the
wall time (pipeline start to caught up); the target's row count is checked against `rows` at the end.

`python benchmarks/live_copy.py [rows]` runs both alone (default 100,000 rows) against a private MariaDB and
PostgreSQL.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from typing import Any

from decoder import write_workload
from e2e import run_to_rows

from dbus_ray.config import parse_config

DB = "dbus_test"


def _sink(kind: str, pg: Any, data: str, name: str) -> dict[str, Any]:
    if kind == "postgres":
        return {"name": "copy", "type": "postgres", "dsn": pg.conninfo(), "schema": f"bench_{name}".replace("-", "_")}
    return {"name": "copy", "type": "delta", "path": os.path.join(data, "lake")}


def copy_catch_up(mariadb: Any, pg: Any, kind: str, rows: int) -> dict[str, Any]:
    from dbus_ray.pipeline import Pipeline

    table = f"copy_catchup_{kind}_{rows}"
    wl = write_workload(mariadb, table, rows, one_row_txn=False)
    file, pos = wl["start"]
    data = tempfile.mkdtemp(prefix="dbus-bench-")
    name = f"bench-copy-{kind}-{rows}"
    cfg = parse_config({
        "name": name,
        "source": {"type": "mysql", "dsn": mariadb.dsn, "server_id": 8301 if kind == "postgres" else 8302,
                   "start": f"{file}:{pos}", "include": [f"{DB}.{table}"]},
        "sinks": [_sink(kind, pg, data, name)],
        "checkpoint": {"store": kind},
        "flow": {"read_batch_rows": 10_000, "sink_batch_rows": 50_000, "max_rows_in_flight": 200_000,
                 "linger_ms": 5},
        "data_dir": data,
    }, "bench", {})
    wall, steady, final = run_to_rows(Pipeline(cfg), rows)
    if kind == "postgres":
        with pg.connect() as conn:
            count = conn.execute(f'SELECT count(*) FROM "{cfg.sinks[0].options.schema}"."{table}"').fetchone()[0]
    else:
        from deltalake import DeltaTable

        lake = DeltaTable(os.path.join(data, "lake", DB, table))
        count = lake.to_pyarrow_dataset().count_rows()
    if count != rows:
        raise RuntimeError(f"{kind} target holds {count} rows, not {rows}")
    return {
        "rows": final["rows_delivered"],
        "target_rows": count,
        "rows_per_s_steady": steady,
        "rows_per_s_wall": round(final["rows_delivered"] / wall),
        "wall_s": round(wall, 2),
    }


def main() -> int:
    from dbus_ray.devstack import MariaDB
    from dbus_ray.devstack.postgres import PostgreSQL
    from dbus_ray.pipeline import connect_ray

    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    mariadb = MariaDB().start()
    pg = PostgreSQL().start()
    try:
        connect_ray(num_cpus=2)
        out = {kind: copy_catch_up(mariadb, pg, kind, rows) for kind in ("postgres", "delta")}
        print(json.dumps(out, indent=2))
    finally:
        pg.stop()
        mariadb.stop()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    raise SystemExit(main())
