"""Density: many MySQL pipelines under one controller (issue "Density", items 3 and 4).

`density(n, placement)`: one database per pipeline in one local MariaDB (a table `t`), `n` pipelines
(`flow.placement` = `placement`) each from its database to its own topic of the Apache Kafka broker of the
dev stack, submitted to the cluster's controller (`dbus_ray.connect()`), all starting at the binlog position
taken after the databases were created. Measured:
- `start_s`: submit to every pipeline running (the controller's records);
- memory per idle pipeline: the PSS (`/proc/<pid>/smaps_rollup`: pages shared between processes, such as
  libraries, split among them) summed over the processes of the pipelines, divided by `n`. The processes
  are the distinct PIDs of the ALIVE actors named `dbus:<prefix>` (the pipelines' own) or `dbus:host:`
  (shared host actors), so the figure holds for every placement; the controller is not counted;
- a write burst: `BURST_ROWS` rows into every database (one INSERT per database), then `caught_up_s`, the
  time from the last commit until every row is readable in its topic (a consumer in this process counts
  the distinct ids per topic);
- the controller's reconcile loop time (p50/p99/max, `info()["loop"]`) over its steps since every pipeline
  ran (idle, burst: `controller_loop`) and over all recent ones (`controller_loop_with_starts`: a step that
  starts pipelines waits for each to open);
- `status_ms`: `Bus.rows()` (what `dbus status` prints) in this process, median and max of 5, and
  `status_cli_s`: the wall time of the command `dbus status -o json` (a new process: Python, Ray's driver
  connect and the call).

`node_loss(k)` (its own process: a `ray.cluster_utils.Cluster` of two raylets on this machine): the
controller on the head, `k` pipelines on node B (strategy `weighted`: the head's `dbus_capacity` 1, B's
100,000), caught up after a first burst; node B removed, a second burst written at once;
`running_elsewhere_s`: until every pipeline runs again on the head (the controller's records),
`caught_up_s`: until every row of both bursts is readable in Kafka.

`control_plane` (benchmarks/control_plane.py): the controller's health check, reconcile step and status at
200 stand-in pipelines.

Run by `benchmarks/run.py`, or alone: `python benchmarks/density.py [N] [placement] [spread N] [node-loss K]`
(a private MariaDB and broker; `node-loss K [placement]` for the node-loss figure alone).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from e2e import RssSampler  # noqa: E402 - after the setting above (Ray is imported with it)

TARGET_PSS_MB = 60  # per idle pipeline, fused or shared
TARGET_CAUGHT_UP_S = 30  # every row of the burst in Kafka
TARGET_STATUS_S = 1.0  # `dbus status`
TARGET_NODE_LOSS_S = 60  # every pipeline of a lost node running elsewhere (and caught up)
CONTROL_PLANE_PIPELINES = 200  # benchmarks/control_plane.py: stand-in pipelines, no process each
BURST_ROWS = int(os.environ.get("DBUS_BENCH_DENSITY_BURST_ROWS", "100"))
WAIT_S = 900.0


def pipeline_pids(prefix: str) -> set[int]:
    """PIDs of the ALIVE actors named `dbus:<prefix>...` or `dbus:host:...` (this machine's processes)."""
    from ray._private import state

    from dbus_ray.constants import HOST_PREFIX

    names = (f"dbus:{prefix}", HOST_PREFIX)
    return {int(a["Pid"]) for a in state.actors().values()
            if (a.get("Name") or "").startswith(names) and a.get("State") == "ALIVE" and a.get("Pid")}


def _wait(what: str, check: Callable[[], Any], timeout: float = WAIT_S, every: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"density: {what} not reached within {timeout:.0f} s")
        time.sleep(every)


class Stack:
    """The MariaDB (root over TCP) and broker the pipelines use: from the objects of the dev stack, or from
    their addresses (the node-loss process)."""

    def __init__(self, root: dict[str, Any], dsn: str, bootstrap: str) -> None:
        self.root, self.dsn, self.bootstrap = root, dsn, bootstrap

    @classmethod
    def of(cls, mariadb: Any, broker: Any) -> Stack:
        root = {"host": mariadb.host, "port": mariadb.port, "user": mariadb.root_user,
                "password": mariadb.root_password}
        return cls(root, mariadb.dsn, broker.bootstrap)

    def to_env(self) -> str:
        return json.dumps({"root": self.root, "dsn": self.dsn, "bootstrap": self.bootstrap})

    @classmethod
    def from_env(cls, text: str) -> Stack:
        return cls(**json.loads(text))

    def sql(self, statements: list[str]) -> tuple[str, int]:
        """Run `statements` (autocommit); the server's binlog position afterwards."""
        import pymysql

        conn = pymysql.connect(autocommit=True, **self.root)
        try:
            with conn.cursor() as cur:
                for s in statements:
                    cur.execute(s)
                cur.execute("SHOW MASTER STATUS")
                file, pos = cur.fetchone()[:2]
            return file, int(pos)
        finally:
            conn.close()


class Run:
    """`n` databases, topics and pipeline specs of one measurement (names carry a fresh tag)."""

    def __init__(self, stack: Stack, n: int, placement: str, label: str) -> None:
        self.stack, self.n, self.placement = stack, n, placement
        tag = uuid.uuid4().hex[:6]
        self.prefix = f"density-{label}-{tag}-"
        self.names = [f"{self.prefix}{i:03d}" for i in range(n)]
        self.dbs = [f"dens_{tag}_{i:03d}" for i in range(n)]
        self.topics = [f"density.{tag}.{i:03d}" for i in range(n)]
        self.data = tempfile.mkdtemp(prefix="dbus-density-")
        self.next_id = [0] * n

    def prepare(self) -> list[dict[str, Any]]:
        """Databases and topics; the specs, starting after the DDL."""
        from confluent_kafka.admin import AdminClient, NewTopic

        ddl = []
        for db in self.dbs:
            ddl += [f"CREATE DATABASE `{db}`", f"CREATE TABLE `{db}`.t (id INT PRIMARY KEY, v VARCHAR(40))"]
        file, pos = self.stack.sql(ddl)
        admin = AdminClient({"bootstrap.servers": self.stack.bootstrap})
        for f in admin.create_topics([NewTopic(t, 1, 1) for t in self.topics]).values():
            f.result(60)
        return [{
            "name": name, "data_dir": self.data,
            "source": {"type": "mysql", "dsn": self.stack.dsn, "start": f"{file}:{pos}", "include": [f"{db}.t"]},
            "sinks": [{"name": "kafka", "type": "kafka", "bootstrap": self.stack.bootstrap, "topic": topic,
                       "partitions": 1}],
            "flow": {"placement": self.placement},
        } for name, db, topic in zip(self.names, self.dbs, self.topics)]

    def burst(self, which: list[int] | None = None) -> float:
        """`BURST_ROWS` rows into each database (one INSERT each); the time the last commit returned."""
        statements = []
        for i in which if which is not None else range(self.n):
            ids = range(self.next_id[i], self.next_id[i] + BURST_ROWS)
            self.next_id[i] += BURST_ROWS
            statements.append(f"INSERT INTO `{self.dbs[i]}`.t VALUES " + ", ".join(f"({k}, 'row {k}')" for k in ids))
        self.stack.sql(statements)
        return time.monotonic()

    def in_kafka(self, which: list[int] | None = None, timeout: float = WAIT_S) -> float:
        """Wait until every row written so far is readable in its topic; the time that was seen."""
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        which = list(which if which is not None else range(self.n))
        consumer = Consumer({"bootstrap.servers": self.stack.bootstrap, "group.id": f"density-{uuid.uuid4().hex}",
                             "enable.auto.commit": False, "fetch.wait.max.ms": 20})
        consumer.assign([TopicPartition(self.topics[i], 0, OFFSET_BEGINNING) for i in which])
        seen: dict[str, set[int]] = {self.topics[i]: set() for i in which}
        want = {self.topics[i]: self.next_id[i] for i in which}
        deadline = time.monotonic() + timeout
        try:
            while any(len(seen[t]) < want[t] for t in seen):
                if time.monotonic() > deadline:
                    short = {t: want[t] - len(s) for t, s in seen.items() if len(s) < want[t]}
                    raise RuntimeError(f"density: rows missing in Kafka after {timeout:.0f} s: {short}")
                for msg in consumer.consume(5000, 0.1):
                    if not msg.error() and msg.key():
                        seen[msg.topic()].add(int(json.loads(msg.key())["id"]))
            return time.monotonic()
        finally:
            consumer.close()

    def pss_mb(self) -> tuple[int, float]:
        pids = pipeline_pids(self.prefix)
        return len(pids), sum(RssSampler.kb(f"/proc/{p}/smaps_rollup", "Pss:") for p in pids) / 1024


def _records(bus: Any, names: list[str]) -> dict[str, dict[str, Any]]:
    wanted = set(names)
    return {p["name"]: p for p in bus.list() if p["name"] in wanted}


def _all_running(bus: Any, names: list[str], node: str | None = None) -> bool:
    records = _records(bus, names)
    for p in records.values():
        if p["state"] == "failed" and p["attempts"] >= 3:
            raise RuntimeError(f"density: pipeline {p['name']} failed: {p['error']}")
    return len(records) == len(names) and all(
        p["state"] == "running" and p["status"].get("state") == "running" and (node is None or p["node"] == node)
        for p in records.values())


def status_times(bus: Any, address: str | None) -> dict[str, Any]:
    """`Bus.rows()` in this process (5 calls), and the command `dbus status -o json` (a new process)."""
    times = []
    for _ in range(5):
        began = time.monotonic()
        rows = bus.rows()
        times.append(time.monotonic() - began)
    out: dict[str, Any] = {"status_rows": len(rows), "status_ms_p50": round(1000 * statistics.median(times), 1),
                           "status_ms_max": round(1000 * max(times), 1)}
    if address:
        cli = Path(sys.executable).with_name("dbus")
        env = {**os.environ, "RAY_ADDRESS": address}
        began = time.monotonic()
        proc = subprocess.run([str(cli), "status", "-o", "json"], capture_output=True, text=True, env=env,
                              timeout=120)
        out["status_cli_s"] = round(time.monotonic() - began, 2) if proc.returncode == 0 else None
        if proc.returncode != 0:
            out["status_cli_error"] = proc.stderr.strip()[-300:]
    return out


def _remove(bus: Any, names: list[str]) -> None:
    for name in names:
        try:
            bus.remove(name)
        except Exception:  # noqa: BLE001 - best effort: the cluster goes away after the benchmark
            pass


def density(stack: Stack, n: int, placement: str, label: str | None = None) -> dict[str, Any]:
    """The figures of `n` pipelines of `placement` under the cluster's controller (module docstring)."""
    import ray

    from dbus_ray.actors.controller import get_controller
    from dbus_ray.client import Bus

    run = Run(stack, n, placement, label or placement)
    specs = run.prepare()
    bus = Bus(get_controller())
    try:
        began = time.monotonic()
        for s in specs:
            bus.submit(s)
        _wait(f"{n} {placement} pipelines running", lambda: _all_running(bus, run.names))
        start_s = time.monotonic() - began
        running_since = time.time()
        time.sleep(3)  # idle: started, nothing to read
        processes, pss = run.pss_mb()
        burst_at = run.burst()
        caught_up_s = run.in_kafka() - burst_at
        processes_after, pss_after = run.pss_mb()
        time.sleep(2)  # a loop or two after the rows arrived
        info = ray.get(bus.controller.info.remote(), timeout=60)
        steady = ray.get(bus.controller.info.remote(running_since), timeout=60)
        out = {"pipelines": n, "placement": placement, "processes": processes,
               "pss_mb_total": round(pss, 1), "pss_mb_per_pipeline": round(pss / n, 1),
               "pss_mb_per_pipeline_after_burst": round(pss_after / n, 1), "start_s": round(start_s, 1),
               "burst_rows_per_pipeline": BURST_ROWS, "caught_up_s": round(caught_up_s, 2),
               "controller_loop": steady.get("loop"), "controller_loop_with_starts": info.get("loop")}
        out.update(status_times(bus, ray.get_runtime_context().gcs_address))
        return out
    finally:
        _remove(bus, run.names)


def density_bench(mariadb: Any, broker: Any, n: int, spread_n: int, placement: str, node_loss_k: int) -> dict[str, Any]:
    """`run.py`'s section: `n` pipelines of `placement`, `spread_n` spread ones, and the node-loss figure
    with `node_loss_k` pipelines (0: left out) in a process of its own."""
    import ray
    from control_plane import control_plane

    from dbus_ray.actors.controller import get_controller

    stack = Stack.of(mariadb, broker)
    out: dict[str, Any] = {"control_plane": control_plane(CONTROL_PLANE_PIPELINES)}
    try:
        out[placement] = density(stack, n, placement)
        if spread_n:
            out["spread"] = density(stack, spread_n, "spread")
    finally:
        try:
            ray.kill(get_controller(create=False), no_restart=True)
        except Exception:  # noqa: BLE001 - none
            pass
    if node_loss_k:
        proc = subprocess.run([sys.executable, __file__, "node-loss", str(node_loss_k), placement],
                              capture_output=True, text=True, timeout=1800,
                              env={**os.environ, "DBUS_DENSITY_STACK": stack.to_env()})
        if proc.returncode != 0:
            raise RuntimeError(f"density.py node-loss exited with {proc.returncode}: {proc.stderr[-2000:]}")
        out["node_loss"] = json.loads(proc.stdout.strip().splitlines()[-1])
    out["placement"] = placement
    out["target_pss_mb_per_pipeline"] = TARGET_PSS_MB
    out["met"] = out[placement]["pss_mb_per_pipeline"] <= TARGET_PSS_MB
    return out


def node_loss(stack: Stack, k: int, placement: str) -> dict[str, Any]:
    """`k` pipelines on node B of a two-raylet cluster, B removed (module docstring)."""
    import ray
    from ray.cluster_utils import Cluster

    from dbus_ray.actors.controller import get_controller
    from dbus_ray.client import Bus

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False,
                                                            "resources": {"dbus_capacity": 1}})
    try:
        ray.init(address=cluster.address, namespace="dbus", logging_level="WARNING")
        bus = Bus(get_controller(strategy="weighted"))  # on the head: the only node yet
        head = ray.get(bus.controller.info.remote(), timeout=120)["node"]
        node_b = cluster.add_node(num_cpus=2, resources={"dbus_capacity": 100_000})  # the head's share: 0
        cluster.wait_for_nodes()
        b_id = node_b.node_id
        run = Run(stack, k, placement, "loss")
        for s in run.prepare():
            bus.submit(s)
        _wait(f"{k} pipelines running on node B", lambda: _all_running(bus, run.names, b_id))
        run.burst()
        run.in_kafka()
        removed_at = time.monotonic()
        cluster.remove_node(node_b, allow_graceful=False)
        run.burst()
        _wait(f"{k} pipelines running on the head", lambda: _all_running(bus, run.names, head), every=0.1)
        running_s = time.monotonic() - removed_at
        caught_up_s = run.in_kafka() - removed_at
        info = ray.get(bus.controller.info.remote(), timeout=60)
        return {"pipelines": k, "placement": placement, "running_elsewhere_s": round(running_s, 1),
                "caught_up_s": round(caught_up_s, 1), "burst_rows_per_pipeline": BURST_ROWS,
                "controller_loop": info.get("loop")}
    finally:
        ray.shutdown()
        cluster.shutdown()


def _private_stack(fn: Callable[[Any, Any], Any]) -> Any:
    from dbus_ray.devstack import Broker, MariaDB

    mariadb = MariaDB().start()
    broker = None
    try:
        broker = Broker().start()
        return fn(mariadb, broker)
    finally:
        if broker is not None:
            broker.stop()
        mariadb.stop()


def main(argv: list[str]) -> None:
    if argv[:1] == ["node-loss"]:
        k = int(argv[1]) if len(argv) > 1 else 5
        placement = argv[2] if len(argv) > 2 else "fused"
        env = os.environ.get("DBUS_DENSITY_STACK")
        if env:
            out = node_loss(Stack.from_env(env), k, placement)
        else:
            out = _private_stack(lambda m, b: node_loss(Stack.of(m, b), k, placement))
        print(json.dumps(out))
        return
    from dbus_ray.pipeline import connect_ray

    n = int(argv[0]) if argv else 5
    placement = argv[1] if len(argv) > 1 else "fused"
    spread_n = int(argv[2]) if len(argv) > 2 else 0
    node_loss_k = int(argv[3]) if len(argv) > 3 else 0

    def both(mariadb: Any, broker: Any) -> Any:
        connect_ray(num_cpus=2)
        return density_bench(mariadb, broker, n, spread_n, placement, node_loss_k)

    print(json.dumps(_private_stack(both), indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
