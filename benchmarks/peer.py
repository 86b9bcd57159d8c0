"""Peer benchmark: our pipeline against Debezium (Kafka Connect standalone with Debezium's MariaDB connector,
benchmarks/debezium_connect.py) on the same work, the same MariaDB and the same Apache Kafka broker, in one
run. Both write Debezium's change-event envelope as JSON without schema (ours: `format: debezium`,
`schemas_enable: false`; Debezium: JsonConverter, `schemas.enable=false`) to topics of 4 partitions
created beforehand; each side runs alone (never both at once).

Every rate is measured the same way for both sides, by reading the side's topic with a Kafka consumer in
this process (confluent-kafka, `fetch.wait.max.ms` 5): the count of messages and the time each batch of
them became readable. `rows_per_s`: from the first message readable to the last one (the steady rate, JVM
and Ray actor start excluded); `rows_per_s_wall`: from starting the side to its last message readable.

- `catch_up` / `catch_up_one_row`: `rows` rows pre-written (benchmarks/decoder.py's workload: INSERTs of
  1,000 rows, or every row its own transaction). Debezium was started before (`snapshot.mode: no_data`),
  seen streaming (a marker row of another table readable in Kafka) and stopped, so it resumes from its
  committed offset before the workload, as ours starts at the binlog position before it.
- `latency`: commit -> readable in Kafka at `rate` rows/s (benchmarks/e2e.py's writer process and
  measure: per row, arrival of its message minus the return of its COMMIT), each side streaming a table of
  its own from its current position; p50/p99 over every row.
- `snapshot`: the `snapshot_rows`-row table of benchmarks/snapshot.py read by an initial snapshot (ours:
  `snapshot_parallelism` 2; Debezium: `snapshot.mode: initial`, its defaults otherwise).
- memory: sampled every 100 ms during every case. Ours: the summed PSS of all our processes, i.e. the
  pipeline's actor processes and Ray's own (gcs_server, raylet, its agents and idle workers; not this
  benchmark process, which also runs the consumer); also the actors alone. Debezium: the Connect JVM's RSS
  (one process: PSS and RSS nearly equal). `peak`: the highest sample over all cases.

Goals (issue "Debezium side by side"): rows/s at least 2x Debezium's in catch-up and snapshot, p99 at most
half of Debezium's, less memory. Each figure has `ratio` (ours / Debezium) and `met`.

Standalone: `python benchmarks/peer.py` (private MariaDB, broker, local Ray; writes `peer` into
./bench-results.json, keeping the file's other figures); sizes from
DBUS_BENCH_PEER_ROWS (catch-up rows, default 1,000,000), DBUS_BENCH_PEER_SNAPSHOT_ROWS (2,000,000),
DBUS_BENCH_LATENCY_SECONDS (20), DBUS_BENCH_LATENCY_RATE (5,000).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from debezium_connect import Connect, missing
from decoder import COLUMNS_DDL, write_workload
from e2e import RssSampler, _writer, actor_pids
from snapshot import fill

from dbus_ray.config import parse_config
from dbus_ray.metrics import percentile

DB = "dbus_test"
PARTITIONS = 4
QUICK = os.environ.get("DBUS_BENCH_QUICK", "") not in ("", "0")
ROWS = int(os.environ.get("DBUS_BENCH_PEER_ROWS", "50000" if QUICK else "1000000"))
SNAPSHOT_ROWS = int(os.environ.get("DBUS_BENCH_PEER_SNAPSHOT_ROWS", "200000" if QUICK else "2000000"))
LATENCY_RATE = int(os.environ.get("DBUS_BENCH_LATENCY_RATE", "5000"))
LATENCY_SECONDS = float(os.environ.get("DBUS_BENCH_LATENCY_SECONDS", "5" if QUICK else "20"))
TIMEOUT = float(os.environ.get("DBUS_BENCH_PEER_TIMEOUT", "1800"))


# ----------------------------------------------------------------------------------------------- helpers


def execute(mariadb: Any, *sql: str) -> None:
    conn = mariadb.root_connect(DB)
    try:
        with conn.cursor() as cur:
            for s in sql:
                cur.execute(s)
        conn.commit()
    finally:
        conn.close()


def create_topics(broker: Any, *topics: str, partitions: int = PARTITIONS) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    for future in admin.create_topics([NewTopic(t, partitions, 1) for t in topics]).values():
        future.result(30)


def consumer(broker: Any, topic: str, partitions: int = PARTITIONS) -> Any:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": f"peer-bench-{topic}",
                  "enable.auto.commit": False, "fetch.wait.max.ms": 5, "fetch.min.bytes": 1})
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    return c


def ray_pids() -> list[int]:
    """Every process of the local Ray node started by this process (gcs_server, raylet, agents, workers)."""
    me = os.getpid()
    parent: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue

    def under_me(pid: int) -> bool:
        while pid > 1:
            pid = parent.get(pid, 0)
            if pid == me:
                return True
        return False

    out = []
    for pid in parent:
        if pid == me or not under_me(pid):
            continue
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        head = os.fsdecode(argv[0])
        if comm in ("gcs_server", "raylet") or head.startswith("ray::") or (
                "python" in head and any(b"/ray/" in a for a in argv)):
            out.append(pid)
    return out


def drain(broker: Any, topic: str, rows: int, check: Callable[[], None], started: float,
          key_times: dict[int, float] | None = None) -> dict[str, Any]:
    """Read `topic` until `rows` messages; the time the first and the last became readable."""
    c = consumer(broker, topic)
    got = 0
    first_t = first_n = last_t = 0.0
    deadline = time.monotonic() + TIMEOUT
    try:
        while got < rows:
            msgs = [m for m in c.consume(10_000, 0.05) if not m.error()]
            now = time.monotonic()
            if msgs:
                if not got:
                    first_t, first_n = now, len(msgs)
                got += len(msgs)
                last_t = now
                if key_times is not None:
                    wall = time.time()
                    for m in msgs:
                        key_times.setdefault(int(json.loads(m.key())["id"]), wall)
            else:
                check()
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{topic}: {got} of {rows} messages in {TIMEOUT:.0f} s")
    finally:
        c.close()
    wall = round(got / (last_t - started))
    # all in one batch (a small run): no steady part to measure, the wall rate stands for it
    steady = last_t > first_t and got > first_n
    return {"rows": got, "rows_per_s": round((got - first_n) / (last_t - first_t)) if steady else wall,
            "rows_per_s_from": "first to last message" if steady else "start to last message",
            "rows_per_s_wall": wall, "wall_s": round(last_t - started, 2)}


class RaySampler(RssSampler):
    """RssSampler over all our processes, the list read again every second (a snapshot starts its worker
    actors after the pipeline, Ray may start workers meanwhile); `processes`: the most seen at once."""

    def __init__(self, actors: list[int]) -> None:
        super().__init__(sorted(set(actors) | set(ray_pids())))
        self.actor_pids = actors
        self.processes = len(self.pids)
        self.actors = RssSampler(actors)

    def run(self) -> None:
        self.actors.start()
        refresher = threading.Thread(target=self._refresh, daemon=True)
        refresher.start()
        super().run()
        self.actors.halt.set()
        self.actors.join()
        refresher.join()

    def _refresh(self) -> None:
        while not self.halt.wait(1.0):
            self.pids = sorted(set(self.actor_pids) | set(ray_pids()))
            self.processes = max(self.processes, len(self.pids))


class Memory:
    """Peak memory of one side over the whole run: ours (PSS of all our processes, and of the actors alone)
    and Debezium's (the Connect JVM's RSS)."""

    def __init__(self) -> None:
        self.ours_pss_kb = self.actors_pss_kb = self.connect_rss_kb = 0

    def ours(self, pipeline: Any) -> RaySampler:
        sampler = RaySampler(list(actor_pids(pipeline).values()))
        sampler.start()
        return sampler

    def ours_done(self, sampler: RaySampler) -> dict[str, float]:
        sampler.halt.set()
        sampler.join()
        self.ours_pss_kb = max(self.ours_pss_kb, sampler.peak_pss_kb)
        self.actors_pss_kb = max(self.actors_pss_kb, sampler.actors.peak_pss_kb)
        return {"peak_pss_mb": round(sampler.peak_pss_kb / 1024, 1), "processes": sampler.processes,
                "actors_peak_pss_mb": round(sampler.actors.peak_pss_kb / 1024, 1)}

    def connect(self, connect: Connect) -> RssSampler:
        sampler = RssSampler([connect.pid])
        sampler.start()
        return sampler

    def connect_done(self, sampler: RssSampler) -> dict[str, float]:
        sampler.halt.set()
        sampler.join()
        self.connect_rss_kb = max(self.connect_rss_kb, sampler.peak_kb)
        return {"peak_rss_mb": round(sampler.peak_kb / 1024, 1), "peak_pss_mb": round(sampler.peak_pss_kb / 1024, 1)}


def ours_config(name: str, mariadb: Any, broker: Any, table: str, prefix: str, source: dict[str, Any],
                server_id: int, read_batch: int = 10_000, also: list[str] | None = None) -> Any:
    return parse_config({
        "name": name,
        "source": {"type": "mysql", "dsn": mariadb.dsn, "server_id": server_id,
                   "include": [f"{DB}.{t}" for t in [table, *(also or [])]], **source},
        "sinks": [{"name": "kafka", "type": "kafka", "bootstrap": broker.bootstrap, "format": "debezium",
                   "partitions": PARTITIONS, "debezium": {"topic_prefix": prefix, "schemas_enable": False}}],
        "flow": {"read_batch_rows": read_batch, "sink_batch_rows": 20_000, "max_rows_in_flight": 100_000,
                 "linger_ms": 5},
        "data_dir": tempfile.mkdtemp(prefix="dbus-bench-"),
    }, "bench", {})


def run_ours(cfg: Any, broker: Any, mem: Memory, topic: str, rows: int, during: Callable[[Any], Any] | None = None,
             key_times: dict[int, float] | None = None) -> dict[str, Any]:
    from dbus_ray.pipeline import Pipeline

    pipeline = Pipeline(cfg)
    started = time.monotonic()
    pipeline.start()
    sampler = mem.ours(pipeline)

    def check() -> None:
        status = pipeline.status()
        if status["state"] == "failed":
            raise RuntimeError(f"pipeline failed: {status.get('error')}")

    try:
        if during is not None:
            during(check)
        out = drain(broker, topic, rows, check, started, key_times)
    finally:
        pipeline.stop()
        out_mem = mem.ours_done(sampler)
    return {**out, **out_mem}


def run_debezium(connect: Connect, broker: Any, mem: Memory, topic: str, rows: int,
                 during: Callable[[Any], Any] | None = None, key_times: dict[int, float] | None = None
                 ) -> dict[str, Any]:
    started = time.monotonic()
    connect.start()
    sampler = mem.connect(connect)
    try:
        if during is not None:
            during(connect.check)
        out = drain(broker, topic, rows, connect.check, started, key_times)
    finally:
        connect.stop()
        out_mem = mem.connect_done(sampler)
    return {**out, **out_mem}


def prime(check: Callable[[], None], mariadb: Any, broker: Any, marker: str, prefix: str) -> None:
    """Wait until a started side streams: a row of its marker table readable in Kafka (`check` raises when
    the side failed). A row is written every 2 s: one written before the side took its starting position is
    never read."""
    topic = f"{prefix}.{DB}.{marker}"
    create_topics(broker, topic, partitions=1)
    c = consumer(broker, topic, partitions=1)
    deadline = time.monotonic() + 300
    written = 0.0
    try:
        while not [m for m in c.consume(10, 0.1) if not m.error()]:
            check()
            if time.monotonic() > deadline:
                raise RuntimeError(f"{prefix}: no marker row in {topic} after 300 s")
            if time.monotonic() - written > 2:
                execute(mariadb, f"INSERT INTO {marker} VALUES ({time.time_ns()})")
                written = time.monotonic()
    finally:
        c.close()


# ----------------------------------------------------------------------------------------------- cases


def catch_up(mariadb: Any, broker: Any, mem: Memory, rows: int, one_row_txn: bool, work: Path) -> dict[str, Any]:
    kind = "one_row" if one_row_txn else "multi_row"
    table, marker = f"peer_catchup_{kind}_{rows}", f"peer_marker_{kind}"
    execute(mariadb, f"DROP TABLE IF EXISTS {marker}", f"CREATE TABLE {marker} (id BIGINT PRIMARY KEY)",
            f"DROP TABLE IF EXISTS {table}")
    dbz_prefix, our_prefix = f"dbz-{kind}", f"ours-{kind}"
    connect = Connect(work / f"catchup-{kind}", bootstrap=broker.bootstrap, mariadb=mariadb,
                      tables=[f"{DB}.{table}", f"{DB}.{marker}"], topic_prefix=dbz_prefix, snapshot_mode="no_data",
                      server_id=5501 + one_row_txn)
    connect.start()
    try:
        prime(connect.check, mariadb, broker, marker, dbz_prefix)
    finally:
        connect.stop()
    wl = write_workload(mariadb, table, rows, one_row_txn=one_row_txn)
    file, pos = wl["start"]
    ours_topic, dbz_topic = f"{our_prefix}.{DB}.{table}", f"{dbz_prefix}.{DB}.{table}"
    create_topics(broker, ours_topic, dbz_topic)
    cfg = ours_config(f"peer-{kind}", mariadb, broker, table, our_prefix, {"start": f"{file}:{pos}"},
                      8501 + one_row_txn)
    ours = run_ours(cfg, broker, mem, ours_topic, rows)
    theirs = run_debezium(connect, broker, mem, dbz_topic, rows)
    return {"rows": rows, "write_s": round(wl["write_s"], 2), "ours": ours, "debezium": theirs}


def latency(mariadb: Any, broker: Any, mem: Memory, rate: int, seconds: float, work: Path) -> dict[str, Any]:
    settings = dict(mariadb.connection_settings())
    settings.update(user=mariadb.root_user, password=mariadb.root_password)
    out: dict[str, Any] = {"rows_per_s_target": rate, "seconds": seconds}
    for side in ("ours", "debezium"):
        table, marker, prefix = f"peer_latency_{side}", f"peer_latency_marker_{side}", f"{side}-latency"
        execute(mariadb, f"DROP TABLE IF EXISTS {table}", f"CREATE TABLE {table} ({COLUMNS_DDL})",
                f"DROP TABLE IF EXISTS {marker}", f"CREATE TABLE {marker} (id BIGINT PRIMARY KEY)")
        topic = f"{prefix}.{DB}.{table}"
        create_topics(broker, topic)
        commits = str(work / f"commits-{side}.json")
        writer = mp.get_context("spawn").Process(target=_writer, args=(settings, table, rate, seconds, commits))
        arrived: dict[int, float] = {}
        expected_rows = int(rate * seconds)
        try:
            def during(check: Callable[[], None], marker: str = marker, prefix: str = prefix,
                       writer: Any = writer) -> None:
                prime(check, mariadb, broker, marker, prefix)
                writer.start()

            if side == "ours":
                cfg = ours_config("peer-latency", mariadb, broker, table, prefix, {"start": "latest"}, 8510,
                                  read_batch=5_000, also=[marker])
                got = run_ours(cfg, broker, mem, topic, expected_rows, during, arrived)
            else:
                connect = Connect(work / "latency", bootstrap=broker.bootstrap, mariadb=mariadb,
                                  tables=[f"{DB}.{table}", f"{DB}.{marker}"], topic_prefix=prefix,
                                  snapshot_mode="no_data", server_id=5510)
                got = run_debezium(connect, broker, mem, topic, expected_rows, during, arrived)
        finally:
            if writer.pid is not None:
                writer.join(seconds + 60)
        times = json.loads(Path(commits).read_text())
        lat = sorted((arrived[i] - t) * 1000 for i, t in times if i in arrived)

        def pct(p: float, lat: list[float] = lat) -> float:
            return round(percentile(lat, p), 1)

        # the latency of the rows committed first, in the middle and last: a lag that grows shows a side
        # slower than the writer, a steady one a late start
        by_commit = [round((arrived[i] - t) * 1000, 1) for i, t in times if i in arrived]
        out[side] = {"rows": len(times), "missing": len(times) - len(lat), "p50_ms": pct(0.5), "p90_ms": pct(0.9),
                     "p99_ms": pct(0.99), "max_ms": round(lat[-1], 1),
                     "first_middle_last_ms": [by_commit[0], by_commit[len(by_commit) // 2], by_commit[-1]],
                     "peak_memory_mb": got.get("peak_pss_mb") or got.get("peak_rss_mb")}
    return out


def snapshot(mariadb: Any, broker: Any, mem: Memory, rows: int, work: Path) -> dict[str, Any]:
    table = f"snap_bench_{rows}"
    conn = mariadb.root_connect(DB)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = %s AND table_name = %s",
                        (DB, table))
            count = -1
            if cur.fetchone()[0]:
                cur.execute(f"SELECT COUNT(*) FROM {table}")
                count = cur.fetchone()[0]
    finally:
        conn.close()
    if count != rows:
        fill(mariadb, table, rows)
    ours_topic, dbz_topic = f"ours-snapshot.{DB}.{table}", f"dbz-snapshot.{DB}.{table}"
    create_topics(broker, ours_topic, dbz_topic)
    cfg = ours_config("peer-snapshot", mariadb, broker, table, "ours-snapshot",
                      {"snapshot": "initial", "snapshot_parallelism": 2}, 8520)
    ours = run_ours(cfg, broker, mem, ours_topic, rows)
    connect = Connect(work / "snapshot", bootstrap=broker.bootstrap, mariadb=mariadb, tables=[f"{DB}.{table}"],
                      topic_prefix="dbz-snapshot", snapshot_mode="initial", server_id=5520)
    theirs = run_debezium(connect, broker, mem, dbz_topic, rows)
    return {"rows": rows, "ours": ours, "debezium": theirs}


# ----------------------------------------------------------------------------------------------- summary

#: (figure, case, field, compare, goal): ratio = ours / Debezium; `>=`: at least goal x, `<=`: at most, `<`: under.
GOALS = [
    ("catch-up, multi-row transactions", "catch_up", "rows_per_s", ">=", 2.0),
    ("catch-up, one-row transactions", "catch_up_one_row", "rows_per_s", ">=", 2.0),
    ("commit -> readable in Kafka p50", "latency", "p50_ms", None, None),
    ("commit -> readable in Kafka p99", "latency", "p99_ms", "<=", 0.5),
    ("initial snapshot", "snapshot", "rows_per_s", ">=", 2.0),
]


def figures(peer: dict[str, Any], mem: Memory) -> list[dict[str, Any]]:
    out = []
    for figure, case, field, compare, goal in GOALS:
        c = peer.get(case) or {}
        if not (c.get("ours") and c.get("debezium")):
            out.append({"figure": figure, "ours": None, "debezium": None, "ratio": None, "goal": goal,
                        "compare": compare, "met": False if goal else None})
            continue
        ours, theirs = c["ours"][field], c["debezium"][field]
        ratio = round(ours / theirs, 3) if theirs else None
        unit = "ms" if field.endswith("_ms") else "rows/s"
        if case in ("catch_up", "catch_up_one_row", "snapshot"):
            figure = f"{figure}, {c['rows']:,} rows"
        elif case == "latency":
            figure = f"{figure} at {peer['latency']['rows_per_s_target']:,} rows/s"
        met = None if goal is None or ratio is None else ratio >= goal if compare == ">=" else ratio <= goal
        out.append({"figure": figure, "unit": unit, "ours": ours, "debezium": theirs, "ratio": ratio, "goal": goal,
                    "compare": compare, "met": met})
    if mem.ours_pss_kb and mem.connect_rss_kb:
        ratio = round(mem.ours_pss_kb / mem.connect_rss_kb, 3)
        out.append({"figure": "peak memory: PSS of all our processes vs the Connect JVM's RSS", "unit": "MB",
                    "ours": round(mem.ours_pss_kb / 1024, 1), "debezium": round(mem.connect_rss_kb / 1024, 1),
                    "ratio": ratio, "goal": 1.0, "compare": "<", "met": ratio < 1.0})
        out.append({"figure": "  (ours: the pipeline's actor processes alone)", "unit": "MB",
                    "ours": round(mem.actors_pss_kb / 1024, 1), "debezium": round(mem.connect_rss_kb / 1024, 1),
                    "ratio": round(mem.actors_pss_kb / mem.connect_rss_kb, 3), "goal": None, "compare": None,
                    "met": None})
    return out


def table(peer: dict[str, Any]) -> str:
    lines = ["", f"{'peer: ours vs Debezium (Kafka Connect)':<66} {'ours':>12} {'Debezium':>12} {'ratio':>7}  goal"]
    for f in peer.get("figures", []):
        def show(v: Any) -> str:
            return "-" if v is None else f"{v:,.1f}" if isinstance(v, float) and v < 1000 else f"{v:,.0f}"
        goal = "" if f["goal"] is None else f"{f['compare']} {f['goal']}x: " + ("met" if f["met"] else "MISSED")
        ratio = "-" if f["ratio"] is None else f"{f['ratio']:.2f}x"
        lines.append(f"{f['figure'] + ' (' + f.get('unit', '') + ')':<66} {show(f['ours']):>12} "
                     f"{show(f['debezium']):>12} {ratio:>7}  {goal}")
    for name, err in (peer.get("errors") or {}).items():
        lines.append(f"FAILED peer {name}: {err}")
    return "\n".join(lines)


def peer_bench(mariadb: Any, broker: Any, section: Callable[..., Any]) -> dict[str, Any]:
    """Every case (each through `section`: a failure is recorded, the rest still run); needs a connected Ray."""
    reason = missing()
    if reason:
        raise RuntimeError(reason)
    work = Path(tempfile.mkdtemp(prefix="dbus-peer-"))
    mem = Memory()
    peer: dict[str, Any] = {"debezium": "Debezium 3.5.0.Final MariaDB connector, Kafka Connect 4.1.1 standalone",
                            "format": "debezium envelope, JSON without schema", "partitions": PARTITIONS}
    peer["catch_up"] = section(peer, "peer-catch-up", catch_up, mariadb, broker, mem, ROWS, False, work)
    peer["catch_up_one_row"] = section(peer, "peer-catch-up-one-row", catch_up, mariadb, broker, mem, ROWS, True,
                                       work)
    peer["latency"] = section(peer, "peer-latency", latency, mariadb, broker, mem, LATENCY_RATE, LATENCY_SECONDS,
                              work)
    peer["snapshot"] = section(peer, "peer-snapshot", snapshot, mariadb, broker, mem, SNAPSHOT_ROWS, work)
    peer["figures"] = figures(peer, mem)
    return peer


def main() -> int:
    from run import section

    from dbus_ray.devstack import Broker, MariaDB
    from dbus_ray.pipeline import connect_ray

    mariadb = MariaDB().start()
    broker = Broker().start()
    try:
        connect_ray(num_cpus=2)
        peer = peer_bench(mariadb, broker, section)
    finally:
        broker.stop()
        mariadb.stop()
    out = Path("bench-results.json")  # merged into the file of the last `make bench` under `peer`
    results = json.loads(out.read_text()) if out.exists() else {}
    results["peer"] = peer
    out.write_text(json.dumps(results, indent=2))
    print(json.dumps(peer, indent=2))
    print(table(peer), file=sys.stderr)
    return 1 if peer.get("errors") else 0


if __name__ == "__main__":
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    raise SystemExit(main())
