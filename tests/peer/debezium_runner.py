"""Debezium itself, for the side-by-side test: its MariaDB connector in the embedded engine (a small Java
main, java/debezium/src/DebeziumToFile.java, run by the JDK's single-file launcher with the jars that
`make peer-deps` fetched), writing every record as one JSON line to a file."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from dbus_ray.devstack.debezium import JARS, JavaProcess
from dbus_ray.devstack.debezium import missing as _missing

REPO = Path(__file__).resolve().parents[2]
MAIN = REPO / "java" / "debezium" / "src" / "DebeziumToFile.java"
VERSION = "3.5.0.Final"


def missing() -> str | None:
    """Why Debezium cannot run here (None when it can)."""
    return _missing("Debezium", "debezium-connector-mariadb-*.jar")


class Debezium(JavaProcess):
    """One Debezium engine process; `records()` are the lines it wrote so far, parsed."""

    name = "Debezium"

    def __init__(self, workdir: Path, *, host: str, port: int, user: str, password: str, databases: list[str],
                 topic_prefix: str, schemas_enable: bool = True, server_id: int = 5401,
                 extra: dict[str, str] | None = None) -> None:
        super().__init__(workdir, workdir / "debezium.log")
        self.out = workdir / "records.jsonl"
        props = {
            "name": topic_prefix,
            "connector.class": "io.debezium.connector.mariadb.MariaDbConnector",
            "bootstrap.servers": "127.0.0.1:9",  # required by the worker config; the engine never connects
            "offset.storage": "org.apache.kafka.connect.storage.FileOffsetBackingStore",
            "offset.storage.file.filename": str(workdir / "offsets.dat"),
            "offset.flush.interval.ms": "1000",
            "database.hostname": host,
            "database.port": str(port),
            "database.user": user,
            "database.password": password,
            "database.server.id": str(server_id),
            "database.include.list": ",".join(databases),
            "topic.prefix": topic_prefix,
            "schema.history.internal": "io.debezium.storage.file.history.FileSchemaHistory",
            "schema.history.internal.file.filename": str(workdir / "schema-history.dat"),
            "include.schema.changes": "true",
            # the snapshot's statements of the included tables only: by default Debezium also writes those of
            # every other table on the server to the schema change topic (README, "Coming from Debezium")
            "schema.history.internal.store.only.captured.tables.ddl": "true",
            "snapshot.locking.mode": "none",
            "converter.schemas.enable": "true" if schemas_enable else "false",
            **(extra or {}),
        }
        workdir.mkdir(parents=True, exist_ok=True)
        self.props = workdir / "debezium.properties"
        self.props.write_text("".join(f"{k}={_escape(v)}\n" for k, v in props.items()))

    def start(self) -> Debezium:
        self._spawn(["java", "-Xmx512m", "-cp", f"{JARS}/*", str(MAIN), str(self.props), str(self.out)])
        return self

    def records(self) -> list[dict[str, Any]]:
        if not self.out.exists():
            return []
        text = self.out.read_bytes()
        # only whole lines: the runner may be writing the last one while it is read
        lines = text[:text.rfind(b"\n") + 1].decode("utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def wait_for(self, what: str, check: Any, timeout: float = 180.0) -> list[dict[str, Any]]:
        """The records once `check(records)` holds; fails (with the log's tail) when the process exits or
        `timeout` passes first."""
        deadline = time.monotonic() + timeout
        while True:
            records = self.records()
            if check(records):
                return records
            if self.exited():
                assert self.proc is not None
                raise AssertionError(f"Debezium exited ({self.proc.returncode}) before {what}:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"Debezium: no {what} in {timeout:.0f} s ({len(records)} records):\n"
                                     f"{self.tail()}")
            time.sleep(0.2)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n")
