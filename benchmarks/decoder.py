"""Decoder benchmark: our `mysql` source (MysqlSource.open/poll in-process, no Ray) against stock
python-mysql-replication (BinLogStreamReader, every row's `.values` dict) on the same binlog.

Two workloads on one 7-column table (BIGINT, INT, DECIMAL(12,2), VARCHAR, TEXT, DATETIME(6), JSON):
- `one_row_txn`: every row its own transaction (GTID + TABLE_MAP + WRITE_ROWS + XID per row);
- `multi_row`: INSERTs of 1,000 rows each (one WRITE_ROWS event per ~8 KB of rows).

Both readers read the same binlog range, from the position before the first row to the position after
the last, over TCP from the private MariaDB; each is run `repeat` times, alternately, and the best run counts,
by wall time and by the reader process's CPU time (`speedup_cpu`: what a loaded machine disturbs least).
`python benchmarks/decoder.py [rows]` runs it alone (with a profile: DBUS_BENCH_PROFILE=1).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

COLUMNS_DDL = (
    "id BIGINT PRIMARY KEY, n INT, amount DECIMAL(12,2), name VARCHAR(64), note TEXT, at DATETIME(6), doc JSON"
)


def _position(conn: Any) -> tuple[str, int]:
    with conn.cursor() as cur:
        cur.execute("SHOW MASTER STATUS")
        file, pos = cur.fetchone()[:2]
    return str(file), int(pos)


def write_workload(mariadb: Any, table: str, rows: int, one_row_txn: bool, db: str = "dbus_test") -> dict[str, Any]:
    """Create `table` and write `rows` rows; the binlog range they occupy."""
    conn = mariadb.root_connect(db)
    try:
        with conn.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {table}")
            cur.execute(f"CREATE TABLE {table} ({COLUMNS_DDL})")
            start = _position(conn)
            t0 = time.monotonic()
            if one_row_txn:
                # a procedure loop with autocommit: every INSERT is its own transaction in the binlog
                cur.execute(f"DROP PROCEDURE IF EXISTS fill_{table}")
                cur.execute(
                    f"CREATE PROCEDURE fill_{table}(n INT) BEGIN DECLARE i INT DEFAULT 0; "
                    f"WHILE i < n DO INSERT INTO {table} VALUES (i, i * 7, i / 100, CONCAT('name-', i), "
                    "REPEAT('note ', 1 + i % 8), TIMESTAMP('2024-05-01 12:00:00.123456') + INTERVAL i SECOND, "
                    "JSON_OBJECT('k', i, 's', 'x', 'a', JSON_ARRAY(1, 2))); SET i = i + 1; END WHILE; END"
                )
                cur.execute(f"CALL fill_{table}({rows})")
                cur.execute(f"DROP PROCEDURE fill_{table}")
            else:
                chunk = 1000
                for base in range(0, rows, chunk):
                    values = ",".join(
                        f"({i}, {i * 7}, {i / 100:.2f}, 'name-{i}', '{'note ' * (1 + i % 8)}', "
                        f"TIMESTAMP('2024-05-01 12:00:00.123456') + INTERVAL {i} SECOND, "
                        f"'{{\"k\": {i}, \"s\": \"x\", \"a\": [1, 2]}}')"
                        for i in range(base, min(rows, base + chunk))
                    )
                    cur.execute(f"INSERT INTO {table} VALUES {values}")
            write_s = time.monotonic() - t0
            end = _position(conn)
    finally:
        conn.close()
    return {"table": table, "rows": rows, "start": start, "end": end, "write_s": write_s}


def read_ours(mariadb: Any, wl: dict[str, Any], batch_rows: int = 20_000, server_id: int = 8101) -> float:
    """Seconds for MysqlSource to hand out every row of the workload as Arrow batches."""
    from dbus_ray.mysql.source import MysqlOptions, MysqlSource

    file, pos = wl["start"]
    db = "dbus_test"
    opts = MysqlOptions(dsn=mariadb.dsn, server_id=server_id, start=f"{file}:{pos}", include=[f"{db}.{wl['table']}"])
    src = MysqlSource("bench", opts)
    t0 = time.monotonic()
    src.open(None)
    got = 0
    seq = 0
    try:
        while got < wl["rows"]:
            seq += 1
            batch = src.poll(batch_rows, seq)
            if batch is None:
                if src.caught_up() and got < wl["rows"]:
                    raise RuntimeError(f"our source caught up after {got} of {wl['rows']} rows")
                continue
            got += batch.num_rows
    finally:
        src.close()
    if got != wl["rows"]:
        raise RuntimeError(f"our source read {got} rows, expected {wl['rows']}")
    return time.monotonic() - t0


def read_stock(mariadb: Any, wl: dict[str, Any], server_id: int = 8102) -> float:
    """Seconds for stock BinLogStreamReader to decode every row of the workload (`.rows`, each row's
    `values` dict), same binlog range, table filter, blocking off."""
    from pymysqlreplication import BinLogStreamReader
    from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

    file, pos = wl["start"]
    t0 = time.monotonic()
    stream = BinLogStreamReader(
        connection_settings=mariadb.connection_settings(),
        server_id=server_id,
        log_file=file,
        log_pos=pos,
        resume_stream=True,
        blocking=False,
        only_events=[WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent],
        only_tables=[wl["table"]],
        enable_logging=False,
    )
    got = 0
    try:
        for event in stream:
            for row in event.rows:
                got += 1
                if row["values"] is None:
                    raise RuntimeError("no values")
            if got >= wl["rows"]:
                break
    finally:
        stream.close()
    if got != wl["rows"]:
        raise RuntimeError(f"stock reader read {got} rows, expected {wl['rows']}")
    return time.monotonic() - t0


def _timed(read: Any, mariadb: Any, wl: dict[str, Any]) -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds) of one read of the workload."""
    cpu = time.process_time()
    wall = read(mariadb, wl)
    return wall, time.process_time() - cpu


def decoder_bench(mariadb: Any, rows: int, repeat: int = 2) -> dict[str, Any]:
    """Best of `repeat` runs each, by wall time; also the CPU seconds of each reader's process (`*_cpu_s`,
    `speedup_cpu`: the figure that a loaded machine disturbs least), best of the same runs."""
    out: dict[str, Any] = {"rows": rows, "repeat": repeat, "columns": COLUMNS_DDL}
    for name, one in (("one_row_txn", True), ("multi_row", False)):
        wl = write_workload(mariadb, f"bench_dec_{name}", rows, one)
        ours_runs, stock_runs = [], []
        for _ in range(repeat):  # alternated, so both see the same conditions
            ours_runs.append(_timed(read_ours, mariadb, wl))
            stock_runs.append(_timed(read_stock, mariadb, wl))
        ours, stock = min(w for w, _ in ours_runs), min(w for w, _ in stock_runs)
        ours_cpu, stock_cpu = min(c for _, c in ours_runs), min(c for _, c in stock_runs)
        out[name] = {
            "ours_rows_per_s": round(rows / ours),
            "stock_rows_per_s": round(rows / stock),
            "speedup": round(stock / ours, 2),
            "ours_s": round(ours, 3),
            "stock_s": round(stock, 3),
            "ours_cpu_s": round(ours_cpu, 3),
            "stock_cpu_s": round(stock_cpu, 3),
            "speedup_cpu": round(stock_cpu / ours_cpu, 2),
            "write_s": round(wl["write_s"], 2),
        }
    return out


def main() -> int:
    import json

    from dbus_ray.devstack import MariaDB

    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    db = MariaDB().start()
    try:
        if os.environ.get("DBUS_BENCH_PROFILE"):
            import cProfile
            import pstats

            for name, one in (("one_row_txn", True), ("multi_row", False)):
                wl = write_workload(db, f"bench_dec_{name}", rows, one)
                prof = cProfile.Profile()
                prof.enable()
                took = read_ours(db, wl)
                prof.disable()
                print(f"--- {name}: {rows / took:,.0f} rows/s (profiled)")
                pstats.Stats(prof).sort_stats("tottime").print_stats(25)
        else:
            print(json.dumps(decoder_bench(db, rows), indent=2))
    finally:
        db.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
