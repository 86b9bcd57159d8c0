"""Debezium as its users run it, for the peer benchmark (benchmarks/peer.py): Kafka Connect standalone
(`org.apache.kafka.connect.cli.ConnectStandalone`, the JVM options and heap of Kafka's connect-standalone.sh)
with Debezium's MariaDB connector, writing to the benchmark's broker with Kafka Connect's JsonConverter and
`schemas.enable=false` (what our `format: debezium` with `schemas_enable: false` writes).

The jars are the ones `make peer-deps` fetched with java/debezium/pom.xml (Debezium 3.5.0.Final, Kafka
Connect 4.1.1, in $DBUS_DEBEZIUM_JARS, default ~/.cache/dbus-ray/debezium-3.5.0). Why the MariaDB connector
and not Debezium's MySQL one: see that pom (the MySQL connector refuses MariaDB 10.11).

Connector settings are Debezium's defaults (max.batch.size 2048, max.queue.size 8192, poll.interval.ms 500)
but the ones a benchmark must set: the table, `snapshot.mode`, a file schema history and
`snapshot.locking.mode: none` (as the side-by-side test, tests/peer)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dbus_ray.devstack import free_port
from dbus_ray.devstack.debezium import JARS, JavaProcess
from dbus_ray.devstack.debezium import missing as _missing

#: Kafka's bin/connect-standalone.sh: KAFKA_HEAP_OPTS, then kafka-run-class.sh's KAFKA_JVM_PERFORMANCE_OPTS.
JVM_OPTS = ["-Xms256M", "-Xmx2G", "-server", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
            "-XX:InitiatingHeapOccupancyPercent=35", "-XX:+ExplicitGCInvokesConcurrent", "-Djava.awt.headless=true"]


def missing() -> str | None:
    """Why Kafka Connect with Debezium cannot run here (None when it can)."""
    return _missing("Debezium / Kafka Connect", "debezium-connector-mariadb-*.jar", "connect-runtime-*.jar")


def _props(path: Path, values: dict[str, Any]) -> None:
    path.write_text("".join(f"{k}={str(v).replace(chr(92), chr(92) * 2)}\n" for k, v in values.items()))


class Connect(JavaProcess):
    """One Kafka Connect standalone worker running one Debezium MariaDB connector (one task) on `tables`.
    Its offsets and schema history live in `workdir`: a second `start()` resumes where `stop()` left.
    `stop()`: SIGTERM (Connect stops the task and commits its offsets), SIGKILL after 60 s."""

    name = "Kafka Connect"
    stop_grace = 60.0

    def __init__(self, workdir: Path, *, bootstrap: str, mariadb: Any, tables: list[str], topic_prefix: str,
                 snapshot_mode: str, server_id: int) -> None:
        super().__init__(workdir, workdir / "connect.log")
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        _props(workdir / "worker.properties", {
            "bootstrap.servers": bootstrap,
            "key.converter": "org.apache.kafka.connect.json.JsonConverter",
            "value.converter": "org.apache.kafka.connect.json.JsonConverter",
            "key.converter.schemas.enable": "false",
            "value.converter.schemas.enable": "false",
            "offset.storage.file.filename": workdir / "offsets.dat",
            "offset.flush.interval.ms": 1000,
            "listeners": f"http://127.0.0.1:{self.port}",
        })
        _props(workdir / "connector.properties", {
            "name": topic_prefix,
            "connector.class": "io.debezium.connector.mariadb.MariaDbConnector",
            "tasks.max": 1,
            "database.hostname": mariadb.host,
            "database.port": mariadb.port,
            "database.user": mariadb.root_user,
            "database.password": mariadb.root_password,
            "database.server.id": server_id,
            "topic.prefix": topic_prefix,
            "database.include.list": ",".join(sorted({t.split(".")[0] for t in tables})),
            "table.include.list": ",".join(tables),
            "snapshot.mode": snapshot_mode,
            "snapshot.locking.mode": "none",
            "schema.history.internal": "io.debezium.storage.file.history.FileSchemaHistory",
            "schema.history.internal.file.filename": workdir / "schema-history.dat",
        })

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> Connect:
        self._spawn(["java", *JVM_OPTS, "-cp", f"{JARS}/*", "org.apache.kafka.connect.cli.ConnectStandalone",
                     str(self.workdir / "worker.properties"), str(self.workdir / "connector.properties")])
        return self

    def check(self) -> None:
        """Raises (with the log's tail) when the worker exited."""
        if self.exited():
            assert self.proc is not None
            raise RuntimeError(f"Kafka Connect exited ({self.proc.returncode}):\n{self.tail()}")
