"""The dev stack's Apache Kafka broker: one JVM in KRaft combined mode (broker and controller) on loopback.

The jars come from Maven Central through the project's own ``pom.xml`` (beside this module):
``mvn dependency:copy-dependencies`` copies ``org.apache.kafka:kafka_2.13`` and what it needs into
``~/.cache/dbus-ray/kafka-<version>/`` (``$XDG_CACHE_HOME`` is honoured) on first use, or ahead of
time by ``make install``.  Each broker gets its own temp dir (``server.properties``, ``log4j2.properties``,
``broker.log``, the log dir), a fresh cluster id formatted with ``kafka.tools.StorageTool format
--standalone``, two free loopback ports (clients, controller) and a bounded heap.

Settings for a one-broker cluster: replication factor 1 and min ISR 1 for the internal topics
(consumer offsets, transaction state, share-group state), one partition each (fewer files, faster
first group or transaction), ``group.initial.rebalance.delay.ms=0`` (a group joins at once), no time-based
retention by default (tests write messages with timestamps of days ago; a topic's ``retention.ms`` still applies),
a log cleaner that looks for work every second (``log.cleaner.backoff.ms``; compaction otherwise uses the broker's
defaults: cleaner on, one thread, the topic's ``segment.ms``, ``min.cleanable.dirty.ratio`` and
``delete.retention.ms`` decide when a log is compacted and its tombstones go).
Topics created by a client (auto-create or ``create_topics``) are real Kafka topics: their configs
(``max.message.bytes``, ``cleanup.policy``, ...) are enforced by the broker.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import subprocess
import time
import uuid
from functools import cache
from pathlib import Path
from typing import Any, Self

from dbus_ray.devstack.maven import cache_dir, maven_cached, pom_property
from dbus_ray.devstack.process import (
    DevStackError,
    _Component,
    _make_base_dir,
    _port_answers,
    _remove_dir,
    _tail,
    free_port,
    log,
)

#: The Maven project that names the broker's jars (its ``kafka.version`` is the version the dev stack runs).
POM = Path(__file__).with_name("pom.xml")
_JAVA_HINT = "run `make install` (installs Debian's default-jdk-headless and maven)"
#: JVM options of the broker: small bounded heap, one GC thread (the machine has few cores).
_JVM_OPTS = ["-XX:+UseSerialGC", "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true"]
_LOG4J2 = """\
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
"""


@cache
def kafka_version() -> str:
    """The Kafka version pinned by ``pom.xml`` (``<kafka.version>``)."""
    return pom_property(POM, "kafka.version")


def kafka_libs_dir(version: str | None = None) -> Path:
    """Where the jars of Kafka ``version`` are cached: ``~/.cache/dbus-ray/kafka-<version>/``."""
    return cache_dir(f"kafka-{version or kafka_version()}")


def _java() -> str:
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not java or not Path(java).exists():
        raise DevStackError(f"no `java` found (Kafka needs Java 17+): {_JAVA_HINT}")
    return java


def kafka_libs() -> Path:
    """The cached jar dir of the pinned Kafka, fetched from Maven Central with ``mvn`` when missing."""
    return maven_cached(kafka_libs_dir(), f"Kafka {kafka_version()}", POM,
                        ["dependency:copy-dependencies", "-DincludeScope=runtime", "-DoutputDirectory={dir}"],
                        _JAVA_HINT, timeout=900)


def _cluster_id() -> str:
    """A random cluster id in Kafka's form (base64url of a UUID, no padding), never starting with ``-``
    (like Kafka's own ``Uuid.randomUuid``: the storage tool would take it for an option)."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


class Broker(_Component):
    """One Apache Kafka broker (KRaft combined mode, node id 1) on free loopback ports.

    ``bootstrap`` is ``127.0.0.1:PORT``; ``version`` the Kafka version it runs; ``start_seconds`` how long
    ``start()`` took (format + JVM start + first metadata answer).  ``config`` adds or overrides
    ``server.properties`` entries (e.g. ``{"message.max.bytes": 2000000}``).
    """

    name = "kafka"
    host = "127.0.0.1"

    def __init__(
        self,
        *,
        port: int | None = None,
        heap: str = "512m",
        config: dict[str, Any] | None = None,
        parent_dir: str | os.PathLike[str] | None = None,
        startup_timeout: float = 90.0,
        detached: bool = False,
    ) -> None:
        super().__init__(parent_dir=parent_dir, startup_timeout=startup_timeout, detached=detached)
        self.heap = heap
        self.config = dict(config or {})
        self._requested_port = port
        self._port: int | None = None
        self._controller_port: int | None = None
        self.version = kafka_version()
        self.cluster_id = ""
        self.start_seconds: float | None = None

    @property
    def bootstrap(self) -> str:
        """``127.0.0.1:PORT`` for ``bootstrap.servers``."""
        return f"{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.base_dir / "broker.log"

    @property
    def properties_path(self) -> Path:
        return self.base_dir / "server.properties"

    def server_properties(self, port: int, controller_port: int) -> dict[str, Any]:
        """The broker's ``server.properties`` for the given client and controller ports."""
        return {
            "process.roles": "broker,controller",
            "node.id": 1,
            "controller.quorum.bootstrap.servers": f"{self.host}:{controller_port}",
            "listeners": f"PLAINTEXT://{self.host}:{port},CONTROLLER://{self.host}:{controller_port}",
            "advertised.listeners": f"PLAINTEXT://{self.host}:{port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.base_dir / "data"),
            "num.partitions": 1,
            "offsets.topic.replication.factor": 1,
            "offsets.topic.num.partitions": 1,
            "transaction.state.log.replication.factor": 1,
            "transaction.state.log.min.isr": 1,
            "transaction.state.log.num.partitions": 1,
            "share.coordinator.state.topic.replication.factor": 1,
            "share.coordinator.state.topic.min.isr": 1,
            "group.initial.rebalance.delay.ms": 0,
            "log.retention.ms": -1,  # a dev broker keeps every message, however old its timestamp
            "log.cleaner.backoff.ms": 1000,  # an idle cleaner looks for compactable logs every second (not 15 s)
            **self.config,
        }

    def _java_argv(self, java: str, libs: Path, heap: str, main: str, *args: str) -> list[str]:
        log4j = self.base_dir / "log4j2.properties"
        return [java, f"-Xmx{heap}", *_JVM_OPTS, f"-Dlog4j2.configurationFile={log4j}",
                "-cp", f"{libs}/*", main, *args]

    def _prepare(self, java: str, libs: Path, port: int, controller_port: int) -> None:
        """Write the config files and format a fresh log dir (``kafka-storage format --standalone``)."""
        _remove_dir(self.base_dir / "data")
        props = self.server_properties(port, controller_port)
        self.properties_path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        (self.base_dir / "log4j2.properties").write_text(_LOG4J2.format(log=self.log_path))
        self.cluster_id = _cluster_id()
        argv = self._java_argv(java, libs, "256m", "kafka.tools.StorageTool", "format", "-t", self.cluster_id,
                               "-c", str(self.properties_path), "--standalone")
        argv.insert(2, "-XX:TieredStopAtLevel=1")  # a short-lived JVM: skip the optimizing compiler
        res = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120,
                             check=False, cwd=self.base_dir)
        if res.returncode != 0:
            raise DevStackError(f"kafka-storage format failed (exit {res.returncode}) in {self.base_dir}:\n"
                                + "\n".join((res.stdout + res.stderr).splitlines()[-20:]))

    def _wait_ready(self, proc: subprocess.Popen[bytes], port: int, deadline: float) -> None:
        """Wait until the broker accepts connections and lists itself in a metadata answer."""

        def died_or_late(what: str) -> None:
            if proc.poll() is not None:
                raise DevStackError(f"kafka exited with code {proc.returncode} during startup; last lines of "
                                    f"{self.log_path}:\n{_tail(self.log_path)}")
            if time.monotonic() >= deadline:
                raise DevStackError(f"kafka on {self.host}:{port} did not {what} within "
                                    f"{self.startup_timeout:.0f} s; last lines of {self.log_path}:\n"
                                    f"{_tail(self.log_path)}")

        while not _port_answers(self.host, port, timeout=0.2):
            died_or_late("listen")
            time.sleep(0.1)
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": f"{self.host}:{port}", "log_level": 0})
        while True:
            with contextlib.suppress(KafkaException):
                if admin.list_topics(timeout=2).brokers:
                    return
            died_or_late("answer metadata with a registered broker")
            time.sleep(0.1)

    def start(self) -> Self:
        """Fetch the jars if needed, format a log dir, start the JVM and wait for metadata; idempotent."""
        if self.running:
            return self
        t0 = time.monotonic()
        java, libs = _java(), kafka_libs()
        self._base_dir = _make_base_dir(self._parent_dir, "kafka")
        try:
            attempts = 1 if self._requested_port is not None else 3
            for attempt in range(1, attempts + 1):
                port = self._requested_port or free_port(self.host)
                controller_port = free_port(self.host)
                self._prepare(java, libs, port, controller_port)
                argv = self._java_argv(java, libs, self.heap, "kafka.Kafka", str(self.properties_path))
                self._proc = self._spawn(argv, self.base_dir / "broker.out")
                try:
                    self._wait_ready(self._proc, port, time.monotonic() + self.startup_timeout)
                except DevStackError:
                    self._stop_process(timeout=5.0)
                    if attempt < attempts and "in use" in _tail(self.log_path, 200).lower():
                        log.info("kafka port %d or %d was taken meanwhile; retrying on others", port,
                                 controller_port)
                        continue
                    raise
                self._port, self._controller_port = port, controller_port
                break
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - t0
        log.info("kafka %s started on %s (pid %d, dir %s) in %.1f s", self.version, self.bootstrap, self.pid,
                 self.base_dir, self.start_seconds)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the broker (SIGTERM: controlled shutdown; SIGKILL after ``timeout``) and remove its temp dir."""
        try:
            super().stop(timeout)
        finally:
            self._controller_port = None

    def state(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "host": self.host,
            "port": self.port,
            "controller_port": self._controller_port,
            "bootstrap": self.bootstrap,
            "version": self.version,
            "kind": "Apache Kafka (KRaft)",
            "cluster_id": self.cluster_id,
            "start_seconds": round(self.start_seconds or 0.0, 1),
            "base_dir": str(self.base_dir),
            "log": str(self.log_path),
            "cmd_markers": ["kafka.Kafka", str(self.properties_path)],
        }

