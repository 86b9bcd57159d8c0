"""A KRaft quorum of Apache Kafka brokers on loopback (default three), for the replication tests.

Each node is one JVM in combined mode (broker and controller, node ids 1..N) with its own temp dir (log dir,
``server.properties``, ``broker.log``), its own client and controller ports and a bounded heap (``-Xmx384m``).
The quorum is static: ``controller.quorum.voters`` names all N controllers and every log dir is formatted
with the same cluster id (``kafka.tools.StorageTool format``, no ``--standalone``).

Replication settings of the cluster: internal topics (consumer offsets, transaction state, share-group state)
with replication factor N and min ISR N-1 (2 for three nodes), the same as defaults for created topics
(``default.replication.factor``, ``min.insync.replicas``), so a write with ``acks=all`` needs two replicas.
Failure detection is faster than Kafka's defaults so a test sees a dead broker within seconds: heartbeats
every 0.5 s, a broker fenced (its leaderships moved, dropped from every ISR) after 3 s without one
(``broker.session.timeout.ms``), a follower dropped from the ISR after 5 s behind (``replica.lag.time.max.ms``).

``kill(i)`` sends SIGKILL to node ``i`` (no controlled shutdown); ``restart(i)`` starts it again on the same
ports and log dir (its data is kept, it catches up from the leaders)::

    with KafkaCluster(3) as cluster:
        producer = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all"})
        cluster.kill(2); ...; cluster.restart(2); cluster.wait_in_sync()
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Self

from dbus_ray.devstack.kafka import _LOG4J2, Broker, _cluster_id, _java, kafka_libs, kafka_version
from dbus_ray.devstack.process import _LIVE, DevStackError, _make_base_dir, _remove_dir, _tail, free_port, log


class ClusterNode(Broker):
    """One node of a `KafkaCluster`: `Broker` with a node id, a static quorum and a kept log dir."""

    def __init__(self, node_id: int, port: int, controller_port: int, voters: str, cluster_id: str,
                 base_dir: Path, heap: str, config: dict[str, Any]) -> None:
        super().__init__(port=port, heap=heap, config=config)
        self.name = f"kafka-{node_id}"
        self.node_id = node_id
        self.voters = voters
        self.cluster_id = cluster_id
        self._base_dir = base_dir
        self._port, self._controller_port = port, controller_port

    def server_properties(self, port: int, controller_port: int) -> dict[str, Any]:
        props = super().server_properties(port, controller_port)
        del props["controller.quorum.bootstrap.servers"]
        return {**props, "node.id": self.node_id, "controller.quorum.voters": self.voters,
                **self.config}

    def format(self, java: str, libs: Path) -> None:
        """Write the config files and format the log dir with the cluster's id (static quorum)."""
        _remove_dir(self.base_dir / "data")
        props = self.server_properties(self.port, self._controller_port or 0)
        self.properties_path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        (self.base_dir / "log4j2.properties").write_text(_LOG4J2.format(log=self.log_path))
        argv = self._java_argv(java, libs, "256m", "kafka.tools.StorageTool", "format", "-t", self.cluster_id,
                               "-c", str(self.properties_path))
        argv.insert(2, "-XX:TieredStopAtLevel=1")
        res = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120,
                             check=False, cwd=self.base_dir)
        if res.returncode != 0:
            raise DevStackError(f"kafka-storage format of node {self.node_id} failed (exit {res.returncode}) in "
                                f"{self.base_dir}:\n" + "\n".join((res.stdout + res.stderr).splitlines()[-20:]))

    def launch(self, java: str, libs: Path) -> None:
        """Start the JVM on the formatted (or kept) log dir; does not wait for it."""
        if self.running:
            raise DevStackError(f"kafka node {self.node_id} is already running (pid {self.pid})")
        argv = self._java_argv(java, libs, self.heap, "kafka.Kafka", str(self.properties_path))
        argv.insert(2, "-XX:TieredStopAtLevel=1")  # three JVMs starting on few cores: no optimizing compiler
        self._proc = self._spawn(argv, self.base_dir / "broker.out")

    def kill(self) -> None:
        """SIGKILL: the broker dies at once, without a controlled shutdown (its log dir is kept)."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the JVM (SIGTERM, SIGKILL after `timeout`); the cluster removes the directories."""
        _LIVE.discard(self)
        self._stop_process(timeout)


class KafkaCluster:
    """`size` Kafka nodes in one KRaft quorum on free loopback ports; `bootstrap` names all of them."""

    host = "127.0.0.1"

    def __init__(self, size: int = 3, *, heap: str = "384m", config: dict[str, Any] | None = None,
                 parent_dir: str | os.PathLike[str] | None = None, startup_timeout: float = 120.0) -> None:
        if size < 1:
            raise DevStackError(f"a Kafka cluster needs at least one node, not {size}")
        self.size = size
        self.heap = heap
        self.config = dict(config or {})
        self._parent_dir = parent_dir
        self.startup_timeout = startup_timeout
        self.version = kafka_version()
        self.nodes: list[ClusterNode] = []
        self.base_dir: Path | None = None
        self.start_seconds: float | None = None
        self._java: tuple[str, Path] | None = None

    def node_config(self) -> dict[str, Any]:
        n = self.size
        isr = max(1, n - 1)
        return {
            "offsets.topic.replication.factor": n,
            "transaction.state.log.replication.factor": n,
            "transaction.state.log.min.isr": isr,
            "share.coordinator.state.topic.replication.factor": n,
            "share.coordinator.state.topic.min.isr": isr,
            "default.replication.factor": n,
            "min.insync.replicas": isr,
            "broker.heartbeat.interval.ms": 500,
            "broker.session.timeout.ms": 3000,
            "replica.lag.time.max.ms": 5000,
            **self.config,
        }

    @property
    def bootstrap(self) -> str:
        """``host:port,host:port,...`` of every node, for ``bootstrap.servers``."""
        return ",".join(node.bootstrap for node in self.nodes)

    def node(self, node_id: int) -> ClusterNode:
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        raise DevStackError(f"no kafka node {node_id} (nodes 1..{self.size})")

    def start(self) -> Self:
        """Format every node's log dir, start all JVMs and wait until every broker is registered."""
        t0 = time.monotonic()
        java, libs = _java(), kafka_libs()
        self._java = (java, libs)
        self.base_dir = _make_base_dir(self._parent_dir, "kafka-cluster")
        try:
            ports = [(free_port(self.host), free_port(self.host)) for _ in range(self.size)]
            voters = ",".join(f"{i}@{self.host}:{cport}" for i, (_, cport) in enumerate(ports, 1))
            cluster_id = _cluster_id()
            for i, (port, cport) in enumerate(ports, 1):
                base = self.base_dir / f"node-{i}"
                base.mkdir()
                self.nodes.append(ClusterNode(i, port, cport, voters, cluster_id, base, self.heap,
                                              self.node_config()))
            with ThreadPoolExecutor(self.size) as pool:  # one short JVM each
                list(pool.map(lambda node: node.format(java, libs), self.nodes))
            for node in self.nodes:
                node.launch(java, libs)
            self.wait_registered(set(range(1, self.size + 1)), self.startup_timeout)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - t0
        log.info("kafka cluster of %d (%s) started on %s in %.1f s", self.size, self.version, self.bootstrap,
                 self.start_seconds)
        return self

    def _admin(self) -> Any:
        from confluent_kafka.admin import AdminClient

        return AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 0})

    def _check_alive(self, expected: set[int]) -> None:
        for node in self.nodes:
            if node.node_id in expected and node._proc is not None and node._proc.poll() is not None:
                raise DevStackError(f"kafka node {node.node_id} exited with code {node._proc.returncode}; last "
                                    f"lines of {node.log_path}:\n{_tail(node.log_path)}")

    def wait_registered(self, expected: set[int], timeout: float = 60.0) -> float:
        """Wait until the metadata lists exactly the brokers `expected`; returns the seconds it took."""
        from confluent_kafka import KafkaException

        t0 = time.monotonic()
        admin = self._admin()
        while True:
            with contextlib.suppress(KafkaException):
                if set(admin.list_topics(timeout=2).brokers) == expected:
                    return time.monotonic() - t0
            self._check_alive(expected)
            if time.monotonic() - t0 > timeout:
                raise DevStackError(f"kafka cluster: brokers {sorted(expected)} not registered within {timeout:.0f} s;"
                                    f" last lines of {self.nodes[0].log_path}:\n{_tail(self.nodes[0].log_path)}")
            time.sleep(0.2)

    def under_replicated(self) -> list[str]:
        """``topic/partition`` of every partition whose ISR is not all of its replicas (or that has no leader)."""
        metadata = self._admin().list_topics(timeout=5)
        return [f"{name}/{p.id}" for name, topic in metadata.topics.items() for p in topic.partitions.values()
                if p.leader < 0 or set(p.isrs) != set(p.replicas)]

    def wait_in_sync(self, timeout: float = 90.0) -> float:
        """Wait until every broker is registered and every partition's ISR holds all its replicas."""
        from confluent_kafka import KafkaException

        t0 = time.monotonic()
        self.wait_registered({n.node_id for n in self.nodes}, timeout)
        lagging: list[str] = []
        while time.monotonic() - t0 < timeout:
            with contextlib.suppress(KafkaException):
                lagging = self.under_replicated()
                if not lagging:
                    return time.monotonic() - t0
            time.sleep(0.2)
        raise DevStackError(f"kafka cluster: partitions not in sync within {timeout:.0f} s: {lagging[:10]}")

    def kill(self, node_id: int) -> None:
        """kill -9 of one node."""
        self.node(node_id).kill()
        log.info("kafka node %d killed", node_id)

    def restart(self, node_id: int) -> None:
        """Start a killed node again on its ports and log dir (does not wait: see `wait_registered`)."""
        if self._java is None:
            raise DevStackError("kafka cluster is not started")
        self.node(node_id).launch(*self._java)

    def stop(self) -> None:
        """Kill every node and remove the cluster's directory (its data goes with it, so no controlled
        shutdown: the last nodes would wait for a quorum that the first ones took away)."""
        for node in self.nodes:
            with contextlib.suppress(Exception):
                node.kill()
            _LIVE.discard(node)
        _remove_dir(self.base_dir)
        self.base_dir = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
