"""`make bench`: measured figures, printed as JSON and written to bench-results.json (a short table on
stderr). `DBUS_BENCH_QUICK=1`: small row counts (well under 2 minutes).

- machine (benchmarks/machine.py), before and after: a fresh page fault's cost, the interpreter's plain
  speed, a hand-off between two processes, the memory's copy speed and the load average, so two runs'
  figures can be read side by side (the same code on the same VM ran its writer at 4.55 us per row in one
  run and 7.2 three hours later).
- decoder (benchmarks/decoder.py): our `mysql` source (MysqlSource.open/poll in this process, no Ray)
  vs stock python-mysql-replication (BinLogStreamReader, `.rows`) on the same binlog, for one-row
  transactions and multi-row events; rows/s and the speed-up.
- transport: mock source -> router -> batcher -> writer (null sink) through real Ray actors on a local
  Ray; rows/s measured over the steady part of the run (from the first delivered row to the last).
- scale out (benchmarks/scale.py, in a process of its own: it starts a two-node Ray cluster): one
  pipeline on one node vs two pipelines on two nodes, each node one CPU core; rows/s and the ratio.
  And one pipeline's decoding (benchmarks/scale_decode.py, its own MariaDB too): the reader decoding on one
  one-core node vs `source.decoders: 2` with the decoder actors spread over two; rows/s and the ratio.
- density (benchmarks/density.py): N MySQL pipelines (one per database of the private MariaDB, each to
  its topic of the broker) under the controller, `flow.placement` DBUS_BENCH_DENSITY_PLACEMENT (default
  shared): memory (summed PSS of their processes) per idle pipeline, every row of a write burst to every
  database in Kafka, the controller's loop time, `dbus status` time; the same with spread pipelines; and
  a node of a two-raylet cluster holding K pipelines removed: until they run elsewhere and are caught up.
- snapshot (benchmarks/snapshot.py): the mysql source's snapshot read rate, parallelism 1 and 2.
- e2e (benchmarks/e2e.py): MariaDB -> Ray pipeline -> Apache Kafka (the broker of the dev stack,
  `dbus_ray.devstack.Broker`): catch-up rows/s of pre-written rows, in INSERTs of 1,000 rows and as
  one-row transactions (in the default placement, fused, again spread: every stage its own process, and
  split: the writer alone in a process of its own),
  with the pipeline's memory meanwhile (peak of the summed PSS of its actor
  processes: shared pages such as libraries counted once; the summed RSS counts them per process) and
  the ceiling of each (benchmarks/ceiling.py: the server's dump connection over the same binlog with no
  decoding, bytes/s and rows/s, and our catch-up's share of it); commit -> Kafka latency percentiles at a
  steady write rate (5,000 and 50,000 rows/s).
- snapshot into Kafka (benchmarks/snapshot.py): the snapshot table through a whole pipeline with
  `snapshot_parallelism` 2 into the broker, placed by `auto` (spread) and `split`.
- live copies (benchmarks/live_copy.py): the e2e multi-row catch-up into the postgres sink (private
  PostgreSQL) and into the delta sink (local Delta table), exactly-once with the checkpoint in the target;
  rows/s printed beside the Kafka figure (`DBUS_BENCH_COPY_ROWS`, default the catch-up's row count).
- peer (benchmarks/peer.py): Debezium (Kafka Connect standalone with its MariaDB connector) on the same
  work, MariaDB and broker, ours and Debezium's figures and their ratio (catch-up rows/s, multi-row and
  one-row transactions; commit -> Kafka p50/p99 at 5,000 rows/s; initial snapshot rows/s; peak memory),
  under `peer` with each goal's `met`. `DBUS_BENCH_PEER=0` leaves it out.
- Kafka writer (benchmarks/kafka_writer.py): `KafkaSink.write` alone in this process, at-least-once and
  exactly-once, and the JSON serialization alone; the mock -> Kafka pipeline's catch-up.

`targets` in bench-results.json: every figure with a target, as `{"figure", "value", "unit", "target",
"compare", "met"}`; the targets live here (issue "Performance, second round"), never in a timed test.
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
#: the catch-up into the postgres and delta sinks (benchmarks/live_copy.py)
COPY_ROWS = int(os.environ.get("DBUS_BENCH_COPY_ROWS", str(CATCHUP_ROWS)))
LATENCY_RATE = int(os.environ.get("DBUS_BENCH_LATENCY_RATE", "5000"))
LATENCY_RATE_HIGH = int(os.environ.get("DBUS_BENCH_LATENCY_RATE_HIGH", "50000"))
WRITER_ROWS = int(os.environ.get("DBUS_BENCH_WRITER_ROWS", "50000" if QUICK else "200000"))
SCALE_ROWS = int(os.environ.get("DBUS_BENCH_SCALE_ROWS", "4000000" if QUICK else "10000000"))
SCALE_DECODE_ROWS = int(os.environ.get("DBUS_BENCH_SCALE_DECODE_ROWS", "200000" if QUICK else "1000000"))
DENSITY_PIPELINES = int(os.environ.get("DBUS_BENCH_DENSITY_PIPELINES", "5" if QUICK else "100"))
DENSITY_SPREAD = int(os.environ.get("DBUS_BENCH_DENSITY_SPREAD", "4" if QUICK else "20"))
DENSITY_PLACEMENT = os.environ.get("DBUS_BENCH_DENSITY_PLACEMENT", "shared")  # shared | fused
DENSITY_NODE_LOSS = int(os.environ.get("DBUS_BENCH_DENSITY_NODE_LOSS", "3" if QUICK else "100"))
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


def scale_decode(rows: int) -> dict[str, Any]:
    import subprocess

    here = Path(__file__).parent
    proc = subprocess.run([sys.executable, str(here / "scale_decode.py"), str(rows)], capture_output=True,
                          text=True, timeout=1200)
    if proc.returncode != 0:
        raise RuntimeError(f"scale_decode.py exited with {proc.returncode}: {proc.stderr[-2000:]}")
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

    machine = results.get("machine") or {}
    for when in ("at_start", "at_end"):
        if when in machine:
            m = machine[when]
            row(f"machine {when.split('_')[1]}: fault / py add / load", f"{m['page_fault_us']} us / "
                f"{m['python_ns_per_add']} ns / {m['loadavg_1m']}")
            if "handoff_us" in m:
                row(f"machine {when.split('_')[1]}: hand-off / copy", f"{m['handoff_us']} us / {m['copy_gb_s']} GB/s")
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
    spread = results.get("scale_decode") or {}
    if "ratio" in spread:
        row("scale out: 1 pipeline decoding on 1 node (1 core)", spread["one_node_rows_per_s"], "rows/s")
        row(f"scale out: 1 pipeline decoding on 2 nodes ({spread['decoders']} decoders on "
            f"{'+'.join(spread['decoder_nodes'])})",
            spread["two_nodes_rows_per_s"], "rows/s")
        row("scale out: 1 pipeline's decoding, ratio", spread["ratio"], "x")
        one_row = spread.get("one_row_txn") or {}
        if "ratio" in one_row:
            row("  the same, one-row transactions: 1 node / 2 nodes", f"{one_row['one_node_rows_per_s']:,} / "
                f"{one_row['two_nodes_rows_per_s']:,} ({one_row['decoders']} decoders)", "rows/s")
            row("  the same, one-row transactions: ratio", one_row["ratio"], "x")
    e2e = results.get("e2e") or {}
    if e2e.get("catch_up"):
        c = e2e["catch_up"]
        row(f"e2e catch-up {c['rows']:,} rows: steady", c["rows_per_s_steady"], "rows/s")
        row(f"e2e catch-up {c['rows']:,} rows: wall", c["rows_per_s_wall"], "rows/s")
        row(f"peak PSS sum of the actors ({c['rows']:,} rows)", c["peak_pss_mb"], "MB")
        row("  PSS sum at start", c.get("pss_at_start_mb"), "MB")
        row("  peak RSS sum (shared pages counted per process)", c["peak_rss_mb"], "MB")
    for kind in ("postgres", "delta"):  # beside the Kafka figure: the same catch-up into the live-copy sinks
        copy = e2e.get(f"catch_up_{kind}")
        if copy:
            row(f"e2e catch-up {copy['rows']:,} rows into the {kind} sink: steady", copy["rows_per_s_steady"],
                "rows/s")
            row(f"e2e catch-up {copy['rows']:,} rows into the {kind} sink: wall", copy["rows_per_s_wall"], "rows/s")
    for name in ("catch_up", "catch_up_one_row"):
        top = (e2e.get(name) or {}).get("ceiling")
        if top:
            row(f"ceiling {name}: raw dump", top["raw_bytes_per_s"] / 1e6, "MB/s")
            row(f"ceiling {name}: raw dump", top["raw_rows_per_s"], "rows/s")
            row(f"ceiling {name}: pymysql-framed", top["framed_rows_per_s"], "rows/s")
            row(f"  our {name} as a share of the raw dump", 100 * e2e[name]["share_of_ceiling"], "%")
    for name, what in (("catch_up_one_row", "one-row txns"), ("catch_up_spread", "rows, placement spread"),
                       ("catch_up_one_row_spread", "one-row txns, placement spread"),
                       ("catch_up_split", "rows, placement split"),
                       ("catch_up_one_row_split", "one-row txns, placement split")):
        if e2e.get(name):
            c = e2e[name]
            row(f"e2e catch-up {c['rows']:,} {what}: steady", c["rows_per_s_steady"], "rows/s")
            if "placement" in what and not what.startswith("one-row"):
                row(f"  peak PSS sum of its actors ({what.split(', ')[1]})", c["peak_pss_mb"], "MB")
    for name in ("latency", "latency_high"):
        if e2e.get(name):
            lat = e2e[name]
            row(f"commit->Kafka p50 at {lat['rows_per_s_written']:,} rows/s", lat["p50_ms"], "ms")
            row(f"commit->Kafka p99 at {lat['rows_per_s_written']:,} rows/s", lat["p99_ms"], "ms")
    for name in ("snapshot_kafka", "snapshot_kafka_split"):
        if e2e.get(name):
            sk = e2e[name]
            row(f"snapshot {sk['rows']:,} rows into Kafka, parallelism {sk['parallelism']}, placement "
                f"{sk.get('placement', 'auto')}", sk["rows_per_s_steady"], "rows/s")
    mock = results.get("mock_to_kafka")
    if mock:
        row(f"transport mock->Kafka, {mock['rows']:,} rows", mock["rows_per_s_steady"], "rows/s")
    writer = results.get("kafka_writer") or {}
    for key in ("serialize_rows_per_s", "at_least_once_rows_per_s", "exactly_once_rows_per_s"):
        if key in writer:
            row(f"Kafka writer alone: {key.removesuffix('_rows_per_s')}", writer[key], "rows/s")
    dens = results.get("density") or {}
    for mode in (dens.get("placement"), "spread"):
        d = dens.get(mode) if mode else None
        if d:
            n = d["pipelines"]
            row(f"density {mode}: idle PSS per pipeline ({n} pipelines, {d['processes']} processes)",
                d["pss_mb_per_pipeline"], "MB")
            row(f"density {mode}: {n} pipelines caught up after the burst", d["caught_up_s"], "s")
            loop = d.get("controller_loop") or {}
            row(f"density {mode}: controller loop p50 / p99 ({n} pipelines)",
                f"{loop.get('p50_ms')} / {loop.get('p99_ms')}", "ms")
            row(f"density {mode}: status ({n} pipelines), in process / CLI",
                f"{d.get('status_ms_p50')} ms / {d.get('status_cli_s')} s")
    cp = dens.get("control_plane")
    if cp:
        n = cp["pipelines"]
        row(f"control plane, {n} stand-ins: health batched p50 / p99",
            f"{cp['health_batched_ms']['p50_ms']} / {cp['health_batched_ms']['p99_ms']}", "ms")
        row(f"control plane, {n} stand-ins: health in turn p50 / p99",
            f"{cp['health_in_turn_ms']['p50_ms']} / {cp['health_in_turn_ms']['p99_ms']}", "ms")
        row(f"control plane, {n} stand-ins: reconcile p50 / p99",
            f"{cp['reconcile_ms']['p50_ms']} / {cp['reconcile_ms']['p99_ms']}", "ms")
        row(f"control plane, {n} stand-ins: status", cp["status_ms_p50"], "ms")
    if dens.get("node_loss"):
        nl = dens["node_loss"]
        row(f"node loss: {nl['pipelines']} pipelines running elsewhere", nl["running_elsewhere_s"], "s")
        row(f"node loss: {nl['pipelines']} pipelines caught up", nl["caught_up_s"], "s")
    snap = results.get("snapshot") or {}
    for p in (1, 2):
        if f"parallelism_{p}" in snap:
            row(f"snapshot {snap['rows']:,} rows, parallelism {p}", snap[f"parallelism_{p}"]["rows_per_s"], "rows/s")
    if results.get("peer"):
        from peer import table as peer_table

        lines.append(peer_table(results["peer"]))
    for t in results.get("targets", []):
        value = t["value"]
        shown = "-" if value is None else f"{value:,}"
        state = "no figure" if value is None else "met" if t["met"] else "NOT met"
        lines.append(f"target {t['figure']} {t['compare']} {t['target']:,} {t['unit']}: {state} ({shown})")
    for name, err in (results.get("errors") or {}).items():
        lines.append(f"FAILED {name}: {err}")
    return "\n".join(lines)


def _get(results: dict[str, Any], *path: str) -> Any:
    for key in path:
        results = (results or {}).get(key) if isinstance(results, dict) else None
    return results


#: (figure, path in the results, unit, compare, target): the issue "Performance, second round" (and the
#: first round's figures it keeps).
TARGETS = [
    ("catch-up, multi-row transactions, format json", ("e2e", "catch_up", "rows_per_s_steady"), "rows/s", ">=",
     150_000),
    ("catch-up, one-row transactions", ("e2e", "catch_up_one_row", "rows_per_s_steady"), "rows/s", ">=", 60_000),
    ("catch-up, multi-row transactions, format json, placement spread",
     ("e2e", "catch_up_spread", "rows_per_s_steady"), "rows/s", ">=", 150_000),
    ("catch-up, one-row transactions, placement spread", ("e2e", "catch_up_one_row_spread", "rows_per_s_steady"),
     "rows/s", ">=", 60_000),
    ("catch-up, multi-row transactions, format json, placement split",
     ("e2e", "catch_up_split", "rows_per_s_steady"), "rows/s", ">=", 150_000),
    ("catch-up, one-row transactions, placement split", ("e2e", "catch_up_one_row_split", "rows_per_s_steady"),
     "rows/s", ">=", 60_000),
    ("decoder alone, one-row transactions, ours / stock", ("decoder", "one_row_txn", "speedup"), "x", ">=", 8),
    ("decoder alone, multi-row events, ours / stock", ("decoder", "multi_row", "speedup"), "x", ">=", 4),
    ("commit -> readable in Kafka p99 at 5,000 rows/s", ("e2e", "latency", "p99_ms"), "ms", "<", 50),
    ("commit -> readable in Kafka p99 at 50,000 rows/s", ("e2e", "latency_high", "p99_ms"), "ms", "<", 250),
    ("snapshot into Kafka, parallelism 2", ("e2e", "snapshot_kafka", "rows_per_s_steady"), "rows/s", ">=", 150_000),
    ("snapshot into Kafka, parallelism 2, placement split", ("e2e", "snapshot_kafka_split", "rows_per_s_steady"),
     "rows/s", ">=", 150_000),
    ("snapshot into the null sink (the source's own rate), parallelism 2",
     ("snapshot", "parallelism_2", "rows_per_s"), "rows/s", ">=", 300_000),
    ("peak PSS of the pipeline during the multi-row catch-up", ("e2e", "catch_up", "peak_pss_mb"), "MB", "<", 300),
    ("transport mock -> null (best)", ("transport_best_rows_per_s",), "rows/s", ">=", 2_000_000),
    ("one pipeline's decoding on two one-core nodes / on one", ("scale_decode", "ratio"), "x", ">=", 1.7),
    # the issue "Density": `None` targets are the density benchmark's own (`density_target`)
    ("idle pipeline PSS (density placement)", ("density", "@placement", "pss_mb_per_pipeline"), "MB", "<=", None),
    ("every pipeline caught up after a burst to every database", ("density", "@placement", "caught_up_s"), "s",
     "<=", None),
    ("dbus status (in process) with the density pipelines", ("density", "@placement", "status_ms_p50"), "ms", "<",
     None),
    ("node loss: its pipelines running elsewhere and caught up", ("density", "node_loss", "caught_up_s"), "s", "<=",
     None),
    ("dbus status (in process) with 200 stand-in pipelines", ("density", "control_plane", "status_ms_p50"), "ms", "<",
     1000),
]


def density_target(path: tuple[str, ...]) -> float:
    from density import TARGET_CAUGHT_UP_S, TARGET_NODE_LOSS_S, TARGET_PSS_MB, TARGET_STATUS_S

    return {"pss_mb_per_pipeline": TARGET_PSS_MB, "status_ms_p50": 1000 * TARGET_STATUS_S,
            "caught_up_s": TARGET_NODE_LOSS_S if path[1] == "node_loss" else TARGET_CAUGHT_UP_S}[path[-1]]


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every figure with a target, its value in this run (None when its benchmark failed) and `met`."""
    out = []
    for figure, path, unit, compare, target in TARGETS:
        if path[0] == "density":
            placement = (results.get("density") or {}).get("placement", DENSITY_PLACEMENT)
            path = tuple(placement if k == "@placement" else k for k in path)
            figure = figure.replace("density placement", path[1])
            count = _get(results, *path[:2], "pipelines")
            figure += f" ({count} pipelines)" if count is not None else ""
            target = density_target(path) if target is None else target
        value = _get(results, *path)
        met = value is not None and (value >= target if compare == ">=" else value <= target if compare == "<="
                                     else value < target)
        out.append({"figure": figure, "value": value, "unit": unit, "target": target, "compare": compare,
                    "met": met})
    return out


def main() -> int:
    from decoder import decoder_bench
    from density import density_bench
    from e2e import catch_up, latency
    from kafka_writer import mock_to_kafka, writer_bench
    from live_copy import copy_catch_up
    from machine import machine_state
    from snapshot import snapshot_bench, snapshot_to_kafka

    from dbus_ray.devstack import Broker, MariaDB
    from dbus_ray.devstack.postgres import PostgreSQL

    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "at_start": machine_state()},
        "quick": QUICK,
    }
    started = time.monotonic()
    mariadb = MariaDB().start()
    broker = pg = None
    try:
        results["decoder"] = section(results, "decoder", decoder_bench, mariadb, DECODER_ROWS, 1)

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
        results["scale_out"] = section(results, "scale-out", scale_out, SCALE_ROWS)
        results["scale_decode"] = section(results, "scale-decode", scale_decode, SCALE_DECODE_ROWS)
        results["snapshot"] = section(results, "snapshot", snapshot_bench, mariadb)

        broker = Broker().start()
        results["kafka_writer"] = section(results, "kafka-writer", writer_bench, mariadb, broker, WRITER_ROWS)
        results["mock_to_kafka"] = section(results, "mock-to-kafka", mock_to_kafka, broker, CATCHUP_ROWS)
        results["density"] = section(results, "density", density_bench, mariadb, broker, DENSITY_PIPELINES,
                                     DENSITY_SPREAD, DENSITY_PLACEMENT, DENSITY_NODE_LOSS)
        e2e: dict[str, Any] = {}
        results["e2e"] = e2e
        if results["snapshot"]:  # its table is there
            e2e["snapshot_kafka"] = section(results, "snapshot-into-kafka", snapshot_to_kafka, mariadb, broker,
                                            results["snapshot"]["rows"])
            # the writer alone in a process of its own, the snapshot's reader, router and batcher in the other
            e2e["snapshot_kafka_split"] = section(results, "snapshot-into-kafka-split", snapshot_to_kafka, mariadb,
                                                  broker, results["snapshot"]["rows"], 2, "split")
        e2e["catch_up"] = section(results, "e2e-catch-up", catch_up, mariadb, broker, CATCHUP_ROWS)
        pg = PostgreSQL().start()
        for kind in ("postgres", "delta"):
            e2e[f"catch_up_{kind}"] = section(results, f"e2e-catch-up-{kind}", copy_catch_up, mariadb, pg, kind,
                                              COPY_ROWS)
        e2e["catch_up_one_row"] = section(results, "e2e-catch-up-one-row", catch_up, mariadb, broker, CATCHUP_ROWS,
                                          True)
        # the same two catch-ups with every stage in its own process (reader and writer on two cores)
        e2e["catch_up_spread"] = section(results, "e2e-catch-up-spread", catch_up, mariadb, broker, CATCHUP_ROWS,
                                         False, "spread")
        e2e["catch_up_one_row_spread"] = section(results, "e2e-catch-up-one-row-spread", catch_up, mariadb, broker,
                                                 CATCHUP_ROWS, True, "spread")
        # and with the writer alone in a process of its own (reader, router and batcher in the other)
        e2e["catch_up_split"] = section(results, "e2e-catch-up-split", catch_up, mariadb, broker, CATCHUP_ROWS,
                                        False, "split")
        e2e["catch_up_one_row_split"] = section(results, "e2e-catch-up-one-row-split", catch_up, mariadb, broker,
                                                CATCHUP_ROWS, True, "split")
        e2e["latency"] = section(results, "e2e-latency", latency, mariadb, broker, LATENCY_RATE, LATENCY_SECONDS)
        e2e["latency_high"] = section(results, "e2e-latency-high", latency, mariadb, broker, LATENCY_RATE_HIGH,
                                      LATENCY_SECONDS)
        if os.environ.get("DBUS_BENCH_PEER", "1") != "0":
            from peer import peer_bench

            results["peer"] = section(results, "peer", peer_bench, mariadb, broker, section)
    finally:
        if pg is not None:
            pg.stop()
        if broker is not None:
            broker.stop()
        mariadb.stop()
    results["machine"]["at_end"] = machine_state()
    results["targets"] = targets(results)
    results["bench_wall_s"] = round(time.monotonic() - started, 1)
    Path("bench-results.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    print(table(results), file=sys.stderr)
    return 1 if results.get("errors") or (results.get("peer") or {}).get("errors") else 0


if __name__ == "__main__":
    sys.exit(main())
