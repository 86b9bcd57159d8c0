"""Scale out of one pipeline: its binlog decoding on one one-core node vs spread over two (`source.decoders`).

A private MariaDB holds `rows` rows pre-written (INSERTs of 1,000 rows into the 7-column table of the decoder
benchmark, `decoder.write_workload`); a pipeline `mysql` source -> router -> batcher -> writer (null sink),
started at the position before them, runs until caught up, on a `ray.cluster_utils.Cluster` of two raylets on
this machine. Each simulated node gets one core of its own: every thread of an actor process placed on node A
is pinned (sched_setaffinity) to core 0, on node B to core 1, as on two one-core machines.

- one node: `decoders: 0`, the reader decodes; every actor on node A (core 0).
- two nodes: `decoders: 1`, then `decoders: 2`; the reader, router, batcher and writer on node A, the decoder
  actors where the pool put them (node B first, then the reader's node A; pinned to their node's core;
  `decoder_nodes` says where they ran).

Rows/s of each run are measured over its steady part (from 10 % of the rows delivered to the last, from the
reader's status every 20 ms). The ratio is (rows/s of the better two-node run) / (rows/s one node). MariaDB
is pinned to
neither core in both runs (it serves the binlog to both the same way).

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
    for handle in pipeline.actors:
        pid, node = actor_where(handle)
        pin(pid, core[node])
    for i in range(cfg.source.options.decoders):
        handle = ray.get_actor(actor_name(cfg.name, "decoder", str(i)), namespace=NAMESPACE)
        pid, node = actor_where(handle)
        pin(pid, core[node])
        decoder_nodes.append("A" if node == nodes[0] else "B")
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
    finally:
        pipeline.stop()
    steady = [(t, n) for t, n in marks if n >= rows // 10]
    (t0, n0), (t1, n1) = steady[0], steady[-1]
    return {"rows_per_s": round((n1 - n0) / (t1 - t0)) if t1 > t0 else 0, "decoder_nodes": decoder_nodes,
            "rows": marks[-1][1]}


def main(rows: int) -> dict[str, Any]:
    import ray
    from ray.cluster_utils import Cluster

    from dbus_ray.devstack import MariaDB

    mariadb = MariaDB().start()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    cluster.add_node(num_cpus=2)
    try:
        table = f"scale_decode_{rows}"
        wl = write_workload(mariadb, table, rows, one_row_txn=False)
        start = "{}:{}".format(*wl["start"])
        ray.init(address=cluster.address, namespace="dbus")
        cluster.wait_for_nodes()
        nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
        data = tempfile.mkdtemp(prefix="dbus-bench-scale-decode-")
        one = run(pipeline_config("scale-decode-one", mariadb, table, start, 0, data), nodes, rows)
        spread = {n: run(pipeline_config(f"scale-decode-{n}", mariadb, table, start, n, data), nodes, rows)
                  for n in (1, 2)}
        best = max(spread, key=lambda n: spread[n]["rows_per_s"])
        return {
            "rows": rows,
            "cores": os.cpu_count(),
            "one_node_rows_per_s": one["rows_per_s"],
            "two_nodes_rows_per_s": spread[best]["rows_per_s"],
            "decoders": best,
            "decoder_nodes": spread[best]["decoder_nodes"],
            "by_decoders": {str(n): {"rows_per_s": r["rows_per_s"], "decoder_nodes": r["decoder_nodes"],
                                     "ratio": round(r["rows_per_s"] / one["rows_per_s"], 2)}
                            for n, r in spread.items()},
            "ratio": round(spread[best]["rows_per_s"] / one["rows_per_s"], 2) if one["rows_per_s"] else None,
        }
    finally:
        ray.shutdown()
        cluster.shutdown()
        mariadb.stop()


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)))
