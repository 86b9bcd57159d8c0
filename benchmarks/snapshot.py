"""Snapshot read rate of the `mysql` source: `rows` rows (the 7-column table of the decoder benchmark,
filled with one INSERT ... SELECT from MariaDB's Sequence engine) read by `snapshot: initial` with
`snapshot_parallelism` 1 (the source reads the chunks itself) and 2 (two snapshot worker actors on the
local Ray), through `MysqlSource.open/poll` in this process (no sink: the figure is the snapshot's own).
`rows_per_s`: the snapshot's rows over its own elapsed time (from its consistent snapshot to its last
row); `wall_s`: from `open` (worker actors started) to the last row.

`snapshot_to_kafka`: the same table through a whole pipeline (`snapshot: initial`, `snapshot_parallelism`
2, reader -> router -> batcher -> Kafka writer, `format: json`) into the Apache Kafka broker of the dev
stack; rows/s over the steady part (first to last delivered row, from the reader's status every 100 ms)
and over the wall time (pipeline start to the last row delivered). `DBUS_BENCH_SNAPSHOT_PLACEMENT` sets its
`flow.placement` (default `auto`); `make bench` measures `auto` (spread, for a parallel snapshot) and
`split`.

Standalone: `python benchmarks/snapshot.py [rows]` (starts a private MariaDB, broker and a local Ray).
`DBUS_BENCH_SNAPSHOT_ROWS` sets the rows (of both) under `make bench` (default 200,000 with DBUS_BENCH_QUICK=1,
else 2,000,000).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from dbus_ray.actors.snapshot_worker import WorkerPool
from dbus_ray.mysql.source import MysqlOptions, MysqlSource

DB = "dbus_test"
QUICK = os.environ.get("DBUS_BENCH_QUICK", "") not in ("", "0")
ROWS = int(os.environ.get("DBUS_BENCH_SNAPSHOT_ROWS", "200000" if QUICK else "2000000"))


def fill(mariadb: Any, table: str, rows: int) -> float:
    conn = mariadb.root_connect(DB)
    try:
        with conn.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {table}")
            cur.execute(f"CREATE TABLE {table} (id BIGINT PRIMARY KEY, n INT, amount DECIMAL(12,2), "
                        "name VARCHAR(64), note TEXT, at DATETIME(6), doc JSON)")
            t0 = time.monotonic()
            cur.execute(
                f"INSERT INTO {table} SELECT seq, seq * 7, seq / 100, CONCAT('name-', seq), "
                "REPEAT('note ', 1 + seq % 8), TIMESTAMP('2024-05-01 12:00:00.123456') + INTERVAL seq SECOND, "
                f"JSON_OBJECT('k', seq, 's', 'x', 'a', JSON_ARRAY(1, 2)) FROM seq_1_to_{rows}"
            )
            conn.commit()
            cur.execute(f"ANALYZE TABLE {table}")
            return time.monotonic() - t0
    finally:
        conn.close()


def read_all(mariadb: Any, table: str, parallelism: int) -> dict[str, Any]:
    src = MysqlSource(f"bench-snapshot-{parallelism}", MysqlOptions(
        dsn=mariadb.dsn, server_id=8300 + parallelism, snapshot="initial", include=[f"{DB}.{table}"],
        snapshot_parallelism=parallelism))
    src.worker_pool = WorkerPool  # as the reader actor hands it in
    started = time.monotonic()
    src.open(None)
    try:
        seq = 0
        while (src.snapshot_progress() or {}).get("state") != "done":
            seq += 1
            src.poll(10_000, seq)
        wall = time.monotonic() - started
        progress = src.snapshot_progress() or {}
    finally:
        src.close()
    return {"parallelism": parallelism, "rows": progress["rows"], "chunks": progress["chunks"],
            "rows_per_s": round(progress["rows_per_second"]), "wall_s": round(wall, 2),
            "rows_per_s_wall": round(progress["rows"] / wall)}


def snapshot_to_kafka(mariadb: Any, broker: Any, rows: int = ROWS, parallelism: int = 2,
                      placement: str | None = None) -> dict[str, Any]:
    """Needs the table of `snapshot_bench` (filled by it) and a connected Ray. `placement`: the pipeline's
    `flow.placement` (default DBUS_BENCH_SNAPSHOT_PLACEMENT, else `auto`)."""
    placement = placement or os.environ.get("DBUS_BENCH_SNAPSHOT_PLACEMENT", "auto")
    import tempfile

    from dbus_ray.config import PLACEMENTS, parse_config
    from dbus_ray.pipeline import Pipeline

    table = f"snap_bench_{rows}"
    cfg = parse_config({
        "name": f"bench-snapshot-kafka-{placement}-{rows}",
        "source": {"type": "mysql", "dsn": mariadb.dsn, "server_id": 8310 + PLACEMENTS.index(placement),
                   "snapshot": "initial", "snapshot_parallelism": parallelism, "include": [f"{DB}.{table}"]},
        "sinks": [{"name": "kafka", "type": "kafka", "bootstrap": broker.bootstrap,
                   "topic": f"bench.snapshot.{placement}.{rows}", "partitions": 4}],
        "flow": {"read_batch_rows": 10_000, "sink_batch_rows": 20_000, "max_rows_in_flight": 100_000,
                 "linger_ms": 5, "placement": placement},
        "data_dir": tempfile.mkdtemp(prefix="dbus-bench-"),
    }, "bench", {})
    from e2e import run_to_rows

    wall, steady, final = run_to_rows(Pipeline(cfg), rows, caught_up=False)
    out = {"rows": final["rows_delivered"], "parallelism": parallelism, "placement": placement,
           "rows_per_s_steady": steady,
           "rows_per_s_wall": round(final["rows_delivered"] / wall), "wall_s": round(wall, 2)}
    print(f"snapshot {rows:,} rows into Kafka, parallelism {parallelism}, placement {placement}: "
          f"{out['rows_per_s_steady']:,} rows/s",
          file=sys.stderr, flush=True)
    return out


def snapshot_bench(mariadb: Any, rows: int = ROWS) -> dict[str, Any]:
    """Needs Ray (connected by the caller) for the worker actors of parallelism 2."""
    table = f"snap_bench_{rows}"
    out: dict[str, Any] = {"rows": rows, "fill_s": round(fill(mariadb, table, rows), 2)}
    for parallelism in (1, 2):
        r = read_all(mariadb, table, parallelism)
        out[f"parallelism_{parallelism}"] = r
        print(f"snapshot {rows:,} rows, parallelism {parallelism}: {r['rows_per_s']:,} rows/s "
              f"({r['rows_per_s_wall']:,} rows/s over {r['wall_s']}s wall)", file=sys.stderr, flush=True)
    out["speedup"] = round(out["parallelism_2"]["rows_per_s"] / max(out["parallelism_1"]["rows_per_s"], 1), 2)
    return out


if __name__ == "__main__":
    import json

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    from dbus_ray.devstack import Broker, MariaDB
    from dbus_ray.pipeline import connect_ray

    n = int(sys.argv[1]) if len(sys.argv) > 1 else ROWS
    server = MariaDB().start()
    broker = Broker().start()
    try:
        connect_ray(num_cpus=2)
        result = snapshot_bench(server, n)
        result["into_kafka"] = snapshot_to_kafka(server, broker, n)
        print(json.dumps(result, indent=2))
    finally:
        broker.stop()
        server.stop()
