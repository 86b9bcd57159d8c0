"""The Kafka writer alone: `KafkaSink.write` in this process (no Ray, no reader), on row batches decoded
beforehand from the 7-column table of the decoder benchmark (BIGINT, INT, DECIMAL, VARCHAR, TEXT,
DATETIME(6), JSON; INSERTs of 1,000 rows), into the Apache Kafka broker of the dev stack.

Figures (rows/s over the timed part only, best of `repeat` runs):
- `serialize`: the sink's per-row JSON path alone (`decimals_as_text`, `TableRows.records` + the json
  serializer's `encode`);
- `at_least_once`: `write(batch)` of every batch (serialize, produce, flush, check the deliveries);
- `exactly_once`: the same with a transactional producer (a transaction per batch with its checkpoint);
- `writer_main_us_per_row`: CPU time of the writing thread per row (at least once, best run): what the
  writer's core spends, less sensitive to a loaded machine than rows/s (librdkafka's own threads not counted);
- `DBUS_BENCH_WRITER_FORMATS` (e.g. `json,avro`; default `json`): the at-least-once figures of each other
  format too (`<format>_at_least_once_rows_per_s`, `<format>_main_us_per_row`; avro without a registry).

`mock_to_kafka`: a whole pipeline (mock source -> router -> batcher -> Kafka writer, the local Ray) until
caught up; rows/s over the steady part (first to last delivered row, the reader's status every 100 ms).

Standalone: `python benchmarks/kafka_writer.py [rows] [mock]` (starts a private MariaDB and broker; rows
default 200,000; `mock`: the mock -> Kafka pipeline instead). `DBUS_BENCH_PROFILE=1`: a cProfile of one
at-least-once run (top functions by own time).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from decoder import write_workload

from dbus_ray.model import RowBatch

DB = "dbus_test"


def decoded_batches(mariadb: Any, rows: int, batch_rows: int = 20_000) -> list[RowBatch]:
    """The workload's rows as the mysql source hands them out (Arrow batches of `batch_rows`)."""
    from dbus_ray.mysql.source import MysqlOptions, MysqlSource

    wl = write_workload(mariadb, f"bench_writer_{rows}", rows, one_row_txn=False)
    file, pos = wl["start"]
    src = MysqlSource("bench-writer", MysqlOptions(dsn=mariadb.dsn, server_id=8401, start=f"{file}:{pos}",
                                                   include=[f"{DB}.{wl['table']}"]))
    src.open(None)
    out: list[RowBatch] = []
    got = seq = 0
    try:
        while got < rows:
            seq += 1
            batch = src.poll(batch_rows, seq)
            if batch is None:
                if src.caught_up():
                    raise RuntimeError(f"the source caught up after {got} of {rows} rows")
                continue
            got += batch.num_rows
            out.append(batch)
    finally:
        src.close()
    return out


def _sink(broker: Any, pipeline: str, topic: str, delivery: str, fmt: str = "json") -> Any:
    from dbus_ray.config import build
    from dbus_ray.kafka.sink_options import KafkaOptions
    from dbus_ray.sinks.kafka import KafkaSink

    opts = build(KafkaOptions, {"bootstrap": broker.bootstrap, "topic": topic, "partitions": 4,
                                "delivery": delivery, "format": fmt}, "sinks[0]")
    sink = KafkaSink(pipeline, "kafka", opts)
    sink.open()
    return sink


def time_serialize(batches: list[RowBatch]) -> float:
    from dbus_ray.serializers import get_serializer
    from dbus_ray.serializers.json import decimals_as_text

    ser = get_serializer("json")
    t0 = time.monotonic()
    for batch in batches:
        for part in batch.parts:
            part = decimals_as_text(part)
            ser.encode(part, "bench", list(part.records("bench")))
    return time.monotonic() - t0


def time_write(broker: Any, batches: list[RowBatch], delivery: str, run: int, fmt: str = "json",
               cpu: list[float] | None = None) -> float:
    """Seconds to write every batch; `cpu`, when given, gets the writing thread's CPU seconds appended."""
    name = delivery if fmt == "json" else f"{fmt}-{delivery}"
    sink = _sink(broker, f"bench-writer-{name}-{run}", f"bench.writer.{name}.{run}", delivery, fmt)
    try:
        t0, c0 = time.monotonic(), time.thread_time()
        for batch in batches:
            sink.write(batch)
        if cpu is not None:
            cpu.append(time.thread_time() - c0)
        return time.monotonic() - t0
    finally:
        sink.close()


def mock_to_kafka(broker: Any, rows: int, run: int = 0) -> dict[str, Any]:
    """Needs a connected Ray."""
    import tempfile

    from e2e import run_to_rows

    from dbus_ray.config import parse_config
    from dbus_ray.pipeline import Pipeline

    cfg = parse_config({
        "name": f"bench-mock-kafka-{run}",
        "source": {"type": "mock", "rows": rows, "keys": 100_000},
        "sinks": [{"name": "kafka", "type": "kafka", "bootstrap": broker.bootstrap,
                   "topic": f"bench.mock.{run}", "partitions": 4}],
        "flow": {"read_batch_rows": 10_000, "sink_batch_rows": 20_000, "max_rows_in_flight": 100_000,
                 "linger_ms": 5},
        "data_dir": tempfile.mkdtemp(prefix="dbus-bench-"),
    }, "bench", {})
    _wall, steady, final = run_to_rows(Pipeline(cfg), rows)
    return {"rows": final["rows_delivered"], "rows_per_s_steady": steady}


def writer_bench(mariadb: Any, broker: Any, rows: int, repeat: int = 2) -> dict[str, Any]:
    from dbus_ray import heap

    heap.use_system_pool()  # this process's heap as the writer actor sets it up
    batches = decoded_batches(mariadb, rows)
    n = sum(b.num_rows for b in batches)
    out: dict[str, Any] = {"rows": n, "repeat": repeat}
    out["serialize_rows_per_s"] = round(n / min(time_serialize(batches) for _ in range(repeat)))

    def best(delivery: str, fmt: str = "json") -> tuple[int, float]:
        """(rows/s, CPU us per row of the writing thread) of the best of `repeat` writes of every batch."""
        cpu: list[float] = []
        took = min(time_write(broker, batches, delivery, run, fmt, cpu) for run in range(repeat))
        return round(n / took), round(min(cpu) / n * 1e6, 2)

    out["at_least_once_rows_per_s"], out["writer_main_us_per_row"] = best("at_least_once")
    out["exactly_once_rows_per_s"], _ = best("exactly_once")
    formats = os.environ.get("DBUS_BENCH_WRITER_FORMATS", "json").split(",")
    for fmt in (f.strip() for f in formats if f.strip() not in ("", "json")):
        out[f"{fmt}_at_least_once_rows_per_s"], out[f"{fmt}_main_us_per_row"] = best("at_least_once", fmt)
    return out


def main() -> int:
    import json

    from dbus_ray.devstack import Broker, MariaDB

    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    mariadb = MariaDB().start()
    broker = Broker().start()
    try:
        if len(sys.argv) > 2 and sys.argv[2] == "mock":
            from dbus_ray.pipeline import connect_ray

            connect_ray(num_cpus=2)
            print(json.dumps(mock_to_kafka(broker, rows), indent=2))
        elif os.environ.get("DBUS_BENCH_PROFILE"):
            import cProfile
            import pstats

            batches = decoded_batches(mariadb, rows)
            prof = cProfile.Profile()
            prof.enable()
            took = time_write(broker, batches, "at_least_once", 0)
            prof.disable()
            print(f"--- kafka writer, at_least_once: {rows / took:,.0f} rows/s (profiled)")
            pstats.Stats(prof).sort_stats("tottime").print_stats(25)
        else:
            print(json.dumps(writer_bench(mariadb, broker, rows), indent=2))
    finally:
        broker.stop()
        mariadb.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
