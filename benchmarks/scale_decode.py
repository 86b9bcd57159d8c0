"""Scale out of one pipeline: its binlog decoding on one one-core node vs spread over two (`source.decoders`).

A private MariaDB holds `rows` rows pre-written (INSERTs of 1,000 rows into the 7-column table of the decoder
benchmark, `decoder.write_workload`; then, for the second figure, as many one-row transactions); a pipeline
`mysql` source -> router -> batcher -> writer (null sink), started at the position before them, runs until
caught up, on a `ray.cluster_utils.Cluster` of two raylets on this machine. Each simulated node gets one core
of its own: every thread of an actor process placed on node A is pinned (sched_setaffinity) to core 0, on
node B to core 1, as on two one-core machines.

- one node: `decoders: 0`, the reader decodes; every actor on node A (core 0).
- two nodes: `decoders: 1`, then `decoders: 2`; the reader, router, batcher and writer on node A, the decoder
  actors where the pool put them (node B first, then the reader's node A; pinned to their node's core;
  `decoder_nodes` says where they ran).

Each setting runs twice, in turn with the others (ROUNDS); the better run counts. Rows/s of each run are
measured over its steady part (from 10 % of the rows delivered to the last, from the
reader's status every 20 ms). The ratio is (rows/s of the better two-node run) / (rows/s one node). MariaDB
is pinned to neither core in any run (it serves the binlog to each the same way).

Run as a script (its own process: it starts its own Ray cluster and MariaDB); prints one JSON object."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from decoder import write_workload  # noqa: E402
from scale import pin  # noqa: E402

DB = "dbus_test"
ROUNDS = 2  # runs of each setting (the best counts)
ONE_ROW_MAX = 300_000  # one-row transactions at most (writing them takes the server a while)


def pipeline_config(name: str, mariadb: Any, table: str, start: str, decoders: int, data: str) -> Any:
    from dbus_ray.config import parse_config

    return parse_config({
        "name": name,
        "source": {"type": "mysql", "dsn": mariadb.dsn, "server_id": 8301 + decoders, "start": start,
                   "include": [f"{DB}.{table}"], "decoders": decoders},
        "sinks": [{"name": "null", "type": "null"}],
        "flow": {"read_batch_rows": 10_000, "sink_batch_rows": 50_000, "max_rows_in_flight": 200_000,
                 "placement": "spread"},
        "data_dir": data,
    }, "bench", {})


def actor_where(handle: Any) -> tuple[int, str]:
    import ray

    return ray.get(handle.__ray_call__.remote(
        lambda self: (os.getpid(), ray.get_runtime_context().get_node_id())), timeout=60)


def run(cfg: Any, nodes: list[str], rows: int) -> dict[str, Any]:
    """Start the pipeline on node A, pin its actors (and its decoders) to their node's core, run it until
    caught up; rows/s over the steady part and where its decoders ran."""
    import ray

    from dbus_ray.constants import NAMESPACE, actor_name
    from dbus_ray.pipeline import Pipeline

    core = {nodes[0]: 0, nodes[1]: 1}
    pipeline = Pipeline(cfg, node_id=nodes[0])
    pipeline.start()
    decoder_nodes = []
    pids: dict[str, int] = {}
    for name in pipeline.actor_names():
        pid, node = actor_where(ray.get_actor(name, namespace=NAMESPACE))
        pin(pid, core[node])
        pids[name.split(":", 2)[2]] = pid
    for i in range(cfg.source.options.decoders):
        name = actor_name(cfg.name, "decoder", str(i))
        pid, node = actor_where(ray.get_actor(name, namespace=NAMESPACE))
        pin(pid, core[node])
        decoder_nodes.append("A" if node == nodes[0] else "B")
        pids[name.split(":", 2)[2]] = pid
    cpu_at_start = {k: cpu_seconds(pid) for k, pid in pids.items()}
    marks: list[tuple[float, int]] = []
    try:
        while True:
            status = pipeline.status()
            if status["state"] == "failed":
                raise RuntimeError(f"{cfg.name} failed: {status['error']}")
            marks.append((time.monotonic(), status["rows_delivered"]))
            if status["rows_delivered"] >= rows and status["caught_up"]:
                break
            time.sleep(0.02)
        cpu = {k: round(cpu_seconds(pid) - cpu_at_start[k], 2) for k, pid in pids.items()}
    finally:
        pipeline.stop()
    steady = [(t, n) for t, n in marks if n >= rows // 10]
    (t0, n0), (t1, n1) = steady[0], steady[-1]
    return {"rows_per_s": round((n1 - n0) / (t1 - t0)) if t1 > t0 else 0, "decoder_nodes": decoder_nodes,
            "rows": marks[-1][1], "cpu_s": cpu, "wall_s": round(marks[-1][0] - marks[0][0], 2)}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` so far (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(mariadb: Any, nodes: list[str], rows: int, one_row_txn: bool, data: str) -> dict[str, Any]:
    """Write the workload, then run it with 0, 1 and 2 decoders; rows/s of each and the better ratio."""
    kind = "one_row" if one_row_txn else "multi_row"
    table = f"scale_decode_{kind}_{rows}"
    wl = write_workload(mariadb, table, rows, one_row_txn=one_row_txn)
    start = "{}:{}".format(*wl["start"])
    best: dict[int, dict[str, Any]] = {}
    for r in range(ROUNDS):  # each setting in turn, ROUNDS times: the best run of each (runs vary on a shared VM)
        for n in (0, 1, 2):  # (a pipeline of its own each time: no checkpoint of an earlier run)
            name = f"scale-decode-{kind}-{n}-{r}".replace("_", "-")
            got = run(pipeline_config(name, mariadb, table, start, n, data), nodes, rows)
            if n not in best or got["rows_per_s"] > best[n]["rows_per_s"]:
                best[n] = got
    one, spread = best[0], {1: best[1], 2: best[2]}
    top = max(spread, key=lambda n: spread[n]["rows_per_s"])
    return {
        "transactions": "one row each" if one_row_txn else "1,000 rows each",
        "one_node_rows_per_s": one["rows_per_s"],
        "two_nodes_rows_per_s": spread[top]["rows_per_s"],
        "decoders": top,
        "decoder_nodes": spread[top]["decoder_nodes"],
        "by_decoders": {str(n): {"rows_per_s": r["rows_per_s"], "decoder_nodes": r["decoder_nodes"],
                                 "ratio": round(r["rows_per_s"] / one["rows_per_s"], 2), "cpu_s": r["cpu_s"],
                                 "wall_s": r["wall_s"]}
                        for n, r in spread.items()},
        "one_node_cpu_s": one["cpu_s"],
        "one_node_wall_s": one["wall_s"],
        "ratio": round(spread[top]["rows_per_s"] / one["rows_per_s"], 2) if one["rows_per_s"] else None,
    }


def main(rows: int) -> dict[str, Any]:
    """Multi-row transactions (the figure: `ratio` and the rows/s at the top level), then one-row ones."""
    import ray
    from ray.cluster_utils import Cluster

    from dbus_ray.devstack import MariaDB

    mariadb = MariaDB().start()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    cluster.add_node(num_cpus=2)
    try:
        ray.init(address=cluster.address, namespace="dbus")
        cluster.wait_for_nodes()
        nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
        data = tempfile.mkdtemp(prefix="dbus-bench-scale-decode-")
        multi = measure(mariadb, nodes, rows, False, data)
        one_row = measure(mariadb, nodes, min(rows, ONE_ROW_MAX), True, data)
        return {"rows": rows, "cores": os.cpu_count(), **multi, "one_row_txn": one_row}
    finally:
        ray.shutdown()
        cluster.shutdown()
        mariadb.stop()


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)))
