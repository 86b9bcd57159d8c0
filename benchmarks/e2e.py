"""End to end: MariaDB binlog -> reader -> router -> batcher -> Kafka writer (Apache Kafka broker), one
pipeline on the local Ray.

- `catch_up`: `rows` rows pre-written (INSERTs of 1,000 rows into the 7-column table of the decoder
  benchmark), then a pipeline started at the position before them runs until caught up. rows/s over
  the steady part (first to last delivered row, from the reader's status every 100 ms) and over the
  wall time (pipeline start to caught up). Meanwhile the RSS of every pipeline actor process (reader,
  router, batcher, writer when spread, the one process when fused; /proc/<pid>/status VmRSS, sampled
  every 100 ms) is summed: the peak sum is `peak_rss_mb` (`rss_at_start_mb`: the first sample, as the
  actors start reading; `peak_pss_mb`: the peak of the summed PSS, which counts pages the processes
  share, e.g. libraries, once).
  `one_row_txn=True`: the same rows, each its own transaction (GTID + TABLE_MAP + WRITE_ROWS + XID).
  `ceiling` (benchmarks/ceiling.py): the server's dump connection over the same binlog range with no
  decoding (bytes/s and rows/s, raw socket and pymysql-framed), and `share_of_ceiling`: the steady
  catch-up rate over the raw rows/s.
- `latency`: a pipeline from `start: latest`, warmed up (one row committed and read back first: the
  producer's first flush on a fresh broker waits ~0.5 s for its producer id, a start-up cost, not the
  steady state's); then a separate process commits rows at a steady rate, paced
  every 10 ms (up to 5,000 rows/s one-row transactions, autocommit INSERTs; above, one INSERT of the
  tick's rate / 100 rows per commit, as one connection cannot commit 50,000 transactions/s), and notes
  the wall-clock time each COMMIT returned; a consumer in this process (assign(), fetch.wait.max.ms=5)
  notes when each row's message arrives (it takes what is readable at once, else polls for the next
  one). Latency = arrival - commit return, per row, on the same machine clock: from the commit to the row
  being readable in Kafka, i.e. an upper bound of commit ->
  broker ack (it adds the consumer's fetch). Percentiles over every row written.
- `DBUS_BENCH_E2E_PLACEMENT=spread|split|fused` (default auto: fused) for both figures.
- `DBUS_BENCH_E2E_DECODERS=N`: the source's `decoders` (default 0: the reader decodes).
- `DBUS_BENCH_E2E_DELIVERY=exactly_once`: the kafka sink delivers exactly once (a transaction per batch
  holding the checkpoint, checkpoint store `kafka`; the consumer reads committed records only).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray
from ceiling import ceiling
from decoder import COLUMNS_DDL, write_workload

from dbus_ray.config import parse_config
from dbus_ray.metrics import percentile

DB = "dbus_test"


def _config(name: str, mariadb: Any, broker: Any, table: str, topic: str, start: str, data: str,
            server_id: int, placement: str | None = None) -> Any:
    return parse_config({
        "name": name,
        "source": {"type": "mysql", "dsn": mariadb.dsn, "server_id": server_id, "start": start,
                   "include": [f"{DB}.{table}"], "decoders": int(os.environ.get("DBUS_BENCH_E2E_DECODERS", "0"))},
        "sinks": [{"name": "kafka", "type": "kafka", "bootstrap": broker.bootstrap, "topic": topic,
                   "partitions": 4, "delivery": os.environ.get("DBUS_BENCH_E2E_DELIVERY", "at_least_once")}],
        "flow": {"read_batch_rows": int(os.environ.get("DBUS_BENCH_E2E_READ_BATCH", "10000")),
                 "sink_batch_rows": int(os.environ.get("DBUS_BENCH_E2E_SINK_BATCH", "20000")),
                 "max_rows_in_flight": int(os.environ.get("DBUS_BENCH_E2E_IN_FLIGHT", "100000")),
                 "placement": placement or os.environ.get("DBUS_BENCH_E2E_PLACEMENT", "auto")},
        "data_dir": data,
        **({"checkpoint": {"store": "kafka"}} if os.environ.get("DBUS_BENCH_E2E_DELIVERY") == "exactly_once" else {}),
    }, "bench", {})


class RssSampler(threading.Thread):
    """Peak of the summed VmRSS (and PSS: shared pages split among the processes sharing them) of a
    set of processes, RSS sampled every `interval` s, PSS every `pss_interval` s; `first_kb`: the first
    sample's RSS sum. PSS is read less often because reading it costs: the kernel walks the process's page
    tables for `smaps_rollup` (measured: 5.8 ms of CPU per read of a 300 MB Ray worker, so every 0.1 s for
    the 4 processes of a spread pipeline took ~0.2 of the 2 cores from the pipeline being measured)."""

    def __init__(self, pids: list[int], interval: float = 0.1, pss_interval: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.pids = pids
        self.interval = interval
        self.pss_every = max(1, round(pss_interval / interval))
        self.peak_kb = 0
        self.peak_pss_kb = 0
        self.first_kb = 0
        self.first_pss_kb = 0
        self.per_pid_peak: dict[int, int] = {}
        self.halt = threading.Event()

    @staticmethod
    def kb(path: str, field: str) -> int:
        try:
            for line in Path(path).read_text().splitlines():
                if line.startswith(field):
                    return int(line.split()[1])
        except OSError:
            pass
        return 0

    def run(self) -> None:
        tick = 0
        while not self.halt.is_set():
            rss = {p: self.kb(f"/proc/{p}/status", "VmRSS:") for p in self.pids}
            pss = 0
            if tick % self.pss_every == 0:
                pss = sum(self.kb(f"/proc/{p}/smaps_rollup", "Pss:") for p in self.pids)
            tick += 1
            for p, kb in rss.items():
                self.per_pid_peak[p] = max(self.per_pid_peak.get(p, 0), kb)
            self.first_kb = self.first_kb or sum(rss.values())
            self.first_pss_kb = self.first_pss_kb or pss
            self.peak_kb = max(self.peak_kb, sum(rss.values()))
            self.peak_pss_kb = max(self.peak_pss_kb, pss)
            self.halt.wait(self.interval)


def actor_pids(pipeline: Any) -> dict[str, int]:
    """actor name -> pid of every actor of a started pipeline (asked from inside each actor): the reader,
    router, batchers and writers when spread, the one actor when fused (`flow.placement`)."""
    import ray

    from dbus_ray.constants import NAMESPACE

    out = {}
    for name in pipeline.actor_names():
        handle = ray.get_actor(name, namespace=NAMESPACE)
        out[name] = ray.get(handle.__ray_call__.remote(lambda self: os.getpid()), timeout=30)
    return out


#: How often `run_to_rows` asks the reader for its status. Each look costs this process ~1.2 ms and the
#: reader ~1 ms of CPU (measured 2026-12-02): every 20 ms that was ~5 % of the machine's two cores taken from
#: the pipeline it measures. The end of a run is then seen up to this late, so a 10 s steady rate reads up
#: to 1 % low.
LOOK_EVERY_S = 0.1


def run_to_rows(pipeline: Any, rows: int, *, caught_up: bool = True,
                on_start: Callable[[], None] | None = None) -> tuple[float, int, dict[str, Any]]:
    """Start `pipeline`, look at its status every `LOOK_EVERY_S` until it delivered `rows` rows (and, with
    `caught_up`, is caught up), stop it. Returns the wall time from the start, the steady rate (rows/s between
    the first and the last look that saw rows delivered) and the final status. `on_start` runs once the
    pipeline started."""
    started = time.monotonic()
    pipeline.start()
    if on_start is not None:
        on_start()
    marks: list[tuple[float, int]] = []
    try:
        while True:
            status = pipeline.status()
            marks.append((time.monotonic(), status["rows_delivered"]))
            if status["state"] == "failed":
                raise RuntimeError(f"pipeline failed: {status.get('error')}")
            if status["rows_delivered"] >= rows and (status["caught_up"] or not caught_up):
                break
            time.sleep(LOOK_EVERY_S)
        wall = time.monotonic() - started
        if pipeline.writers:  # spread: the writers' own actors; fused: the stages of the one actor
            written = ray.get([w.stats.remote() for w in pipeline.writers])
        else:
            stages = ray.get(pipeline.reader.stage_stats.remote())
            written = [v for k, v in stages.items() if k.startswith("writer:")]
    finally:
        final = pipeline.stop()
    rows_written, batches = sum(w["rows"] for w in written), sum(w["batches"] for w in written)
    final["rows_per_sink_batch"] = round(rows_written / batches) if batches else 0
    final["rows_per_read_batch"] = round(final["rows_read"] / final["batches_read"]) if final["batches_read"] else 0
    moving = [(t, n) for t, n in marks if n > 0]
    (t0, n0), (t1, n1) = moving[0], moving[-1]
    return wall, round((n1 - n0) / (t1 - t0)) if t1 > t0 else 0, final


def catch_up(mariadb: Any, broker: Any, rows: int, one_row_txn: bool = False,
             placement: str | None = None) -> dict[str, Any]:
    """Catch-up of `rows` pre-written rows into Kafka; `placement`: the pipeline's `flow.placement` (default
    DBUS_BENCH_E2E_PLACEMENT, else `auto`, i.e. fused)."""
    from dbus_ray.pipeline import Pipeline

    kind = ("one_row_txn" if one_row_txn else "multi_row") + (f"_{placement}" if placement else "")
    table = f"e2e_catchup_{kind}_{rows}"
    wl = write_workload(mariadb, table, rows, one_row_txn=one_row_txn)
    file, pos = wl["start"]
    data = tempfile.mkdtemp(prefix="dbus-bench-")
    cfg = _config(f"bench-e2e-{kind}-{rows}", mariadb, broker, table, f"bench.catchup.{kind}.{rows}",
                  f"{file}:{pos}", data, 8203 if one_row_txn else 8201, placement)
    pipeline = Pipeline(cfg)
    pids: dict[str, int] = {}
    samplers: list[RssSampler] = []

    def sample() -> None:  # the memory of the pipeline's actors, from its start to its stop
        pids.update(actor_pids(pipeline))
        samplers.append(RssSampler(list(pids.values())))
        samplers[0].start()

    try:
        wall, steady, final = run_to_rows(pipeline, rows, on_start=sample)
    finally:
        for sampler in samplers:
            sampler.halt.set()
            sampler.join()
    sampler = samplers[0]
    top = ceiling(mariadb, wl["start"], rows)  # nothing was written after the workload
    return {
        "rows": final["rows_delivered"],
        "transactions": "one row each" if one_row_txn else "1,000 rows each",
        "placement": cfg.placement,
        "write_s": round(wl["write_s"], 2),
        "rows_per_s_steady": steady,
        "ceiling": top,
        "share_of_ceiling": round(steady / top["raw_rows_per_s"], 4),
        "rows_per_s_wall": round(final["rows_delivered"] / wall),
        "rows_per_read_batch": final["rows_per_read_batch"],
        "rows_per_sink_batch": final["rows_per_sink_batch"],
        "wall_s": round(wall, 2),
        "peak_rss_mb": round(sampler.peak_kb / 1024, 1),
        "rss_at_start_mb": round(sampler.first_kb / 1024, 1),
        "peak_pss_mb": round(sampler.peak_pss_kb / 1024, 1),
        "pss_at_start_mb": round(sampler.first_pss_kb / 1024, 1),
        "peak_rss_mb_by_actor": {name: round(sampler.per_pid_peak.get(pid, 0) / 1024, 1)
                                 for name, pid in pids.items()},
    }


def _writer(settings: dict[str, Any], table: str, rate: int, seconds: float, out: str) -> None:
    """Commit `rate` * `seconds` rows at `rate` rows/s (see `latency`); [id, commit-returned time] to `out`.
    Every row is written even when the server cannot keep the rate (a reader of the topic waits for all)."""
    import pymysql

    conn = pymysql.connect(database=DB, autocommit=True, **settings)
    cur = conn.cursor()
    sql = (f"INSERT INTO {table} VALUES (%s, %s, 12.34, 'name', 'note', NOW(6), "
           "'{\"k\": 1}')")
    row = "(%s, %s, 12.34, 'name', 'note', NOW(6), '{\"k\": 1}')"
    times: list[tuple[int, float]] = []
    tick = 0.01
    per_tick = rate * tick
    one_row = rate <= 5_000
    start = time.time()
    due = 0.0
    i = 0
    total = int(rate * seconds)
    while i < total:
        due = min(due + per_tick, total)
        if one_row:
            while i < int(due):
                cur.execute(sql, (i, i))
                times.append((i, time.time()))
                i += 1
        elif i < int(due):
            ids = range(i, int(due))
            cur.execute(f"INSERT INTO {table} VALUES " + ", ".join([row] * len(ids)),
                        [v for n in ids for v in (n, n)])
            now = time.time()
            times.extend((n, now) for n in ids)
            i = int(due)
        sleep = start + len(times) / rate - time.time()
        if sleep > 0:
            time.sleep(sleep)
    conn.close()
    Path(out).write_text(json.dumps(times))


def _warm_up(consumer: Any, settings: dict[str, Any], table: str, timeout: float = 60.0) -> None:
    """Commit one row (id -1) and wait until it is readable: the figure is the steady state's, not the
    pipeline's first delivery (on a fresh broker the producer's first flush waits ~0.5 s for its producer
    id, "Coordinator load in progress", which alone put ~1 s of rows past the p99)."""
    import pymysql

    conn = pymysql.connect(database=DB, autocommit=True, **settings)
    with conn.cursor() as cur:
        cur.execute(f"INSERT INTO {table} VALUES (-1, -1, 12.34, 'name', 'note', NOW(6), '{{\"k\": 1}}')")
    conn.close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = consumer.poll(0.05)
        if msg is not None and not msg.error() and int(json.loads(msg.key())["id"]) == -1:
            return
    raise RuntimeError(f"the warm-up row was not readable within {timeout:.0f} s")


def latency(mariadb: Any, broker: Any, rate: int, seconds: float) -> dict[str, Any]:
    from confluent_kafka import Consumer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    from dbus_ray.pipeline import Pipeline

    table = f"e2e_latency_{rate}"
    topic = f"bench.latency.{rate}"
    conn = mariadb.root_connect(DB)
    with conn.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {table}")
        cur.execute(f"CREATE TABLE {table} ({COLUMNS_DDL})")
    conn.close()
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    partitions = 4
    for f in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        try:
            f.result(30)
        except Exception:  # noqa: BLE001 - exists already
            pass
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": f"bench-latency-{rate}",
                         "enable.auto.commit": False, "fetch.wait.max.ms": 5, "fetch.min.bytes": 1,
                         "auto.offset.reset": "earliest"})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    data = tempfile.mkdtemp(prefix="dbus-bench-")
    cfg = _config(f"bench-latency-{rate}", mariadb, broker, table, topic, "latest", data, 8202 + 100 * (rate > 5_000))
    cfg.flow.read_batch_rows = 5_000
    pipeline = Pipeline(cfg)
    pipeline.start()
    arrived: dict[int, float] = {}
    out = os.path.join(data, "commits.json")
    settings = {k: v for k, v in mariadb.connection_settings().items()}
    settings.update(user=mariadb.root_user, password=mariadb.root_password)
    ctx = mp.get_context("spawn")
    writer = ctx.Process(target=_writer, args=(settings, table, rate, seconds, out))
    try:
        _warm_up(consumer, settings, table)
        writer.start()
        deadline = time.monotonic() + seconds + 60
        expected = None
        while time.monotonic() < deadline:
            # what is readable now; else wait for the next message (consume(n, timeout) would hold the ones
            # that came until n came or the timeout passed, adding up to that to their latency)
            msgs = consumer.consume(10_000, 0) or [m for m in [consumer.poll(0.05)] if m is not None]
            for msg in msgs:
                if msg.error():
                    continue
                now = time.time()
                key = json.loads(msg.key())
                arrived.setdefault(int(key["id"]), now)
            if expected is None and not writer.is_alive():
                writer.join()
                expected = json.loads(Path(out).read_text())
            if expected is not None and len(arrived) >= len(expected):
                break
        if expected is None:
            raise RuntimeError("the writer did not finish")
    finally:
        consumer.close()
        final = pipeline.stop()
        if writer.is_alive():
            writer.terminate()
    series = [(t, (arrived[i] - t) * 1000) for i, t in expected if i in arrived]
    if os.environ.get("DBUS_BENCH_LATENCY_DUMP"):  # each row's commit time and latency, to see when the tail came
        Path(os.environ["DBUS_BENCH_LATENCY_DUMP"]).write_text(json.dumps(series))
    lat = sorted(ms for _, ms in series)
    missing = len(expected) - len(lat)

    def pct(p: float) -> float:
        return round(percentile(lat, p), 1) if lat else float("nan")

    return {
        "rows": len(expected),
        "rows_per_s_target": rate,
        "rows_per_s_written": round(len(expected) / seconds),
        "rows_per_commit": 1 if rate <= 5_000 else round(rate / 100),
        "missing": missing,
        "p50_ms": pct(0.50),
        "p90_ms": pct(0.90),
        "p99_ms": pct(0.99),
        "max_ms": round(lat[-1], 1) if lat else float("nan"),
        # (the warm-up row included) how many rows the reader handed on at a time
        "rows_per_read_batch": round(final["rows_read"] / final["batches_read"]) if final.get("batches_read") else 0,
    }


def main() -> int:
    """`python benchmarks/e2e.py catch_up|catch_up_one_row|latency [rows or rows/s]`: one figure alone,
    against a private MariaDB and broker (`latency`: `DBUS_BENCH_LATENCY_SECONDS`, default 20;
    `DBUS_BENCH_LATENCY_DUMP=<file>`: each row's commit time and latency as JSON)."""
    import sys

    from dbus_ray.devstack import Broker, MariaDB
    from dbus_ray.pipeline import connect_ray

    what = sys.argv[1] if len(sys.argv) > 1 else "catch_up"
    n = int(sys.argv[2]) if len(sys.argv) > 2 else (5_000 if what == "latency" else 200_000)
    mariadb = MariaDB().start()
    broker = Broker().start()
    try:
        connect_ray(num_cpus=2)
        if what == "latency":
            out = latency(mariadb, broker, n, float(os.environ.get("DBUS_BENCH_LATENCY_SECONDS", "20")))
        else:
            out = catch_up(mariadb, broker, n, one_row_txn=what == "catch_up_one_row")
        print(json.dumps(out, indent=2))
    finally:
        broker.stop()
        mariadb.stop()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    raise SystemExit(main())
