"""Helpers of the `mysql` source's tests under real operating conditions (test_mysql_faults.py,
test_mysql_replica_connections.py): draining a source in process into JSON rows, a replication user of
its own whose server threads a test can list, a pipeline config, and the live actors of a pipeline."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from dbus_ray.config import PipelineConfig, parse_config
from dbus_ray.devstack import MariaDB
from dbus_ray.mysql.source import MysqlSource
from tests.support.helpers import execute

DB = "dbus_test"
REPL_GRANTS = "REPLICATION SLAVE, BINLOG MONITOR, SELECT"


def drain(src: MysqlSource, table: str | None = None, max_rows: int = 1000, limit: int = 2000) -> list[dict]:
    """Poll until caught up: the row changes read (of `table`), as JSON."""
    out: list[dict[str, Any]] = []
    for _ in range(limit):
        batch = src.poll(max_rows, 1)
        if batch is None:
            if src.caught_up():
                return out
            continue
        out += [json.loads(c.to_json()) for c in batch.changes() if table is None or c.table == table]
    raise AssertionError("source never caught up")


class ReplUser:
    """A replication user of its own (so the server's process list shows only this test's connections)."""

    def __init__(self, server: MariaDB, password: str = "right-pass-1") -> None:
        self.server = server
        self.name = f"u{uuid.uuid4().hex[:10]}"
        self.password = password
        conn = server.root_connect()
        try:
            execute(
                conn,
                "SET SESSION sql_log_bin = 0",
                f"CREATE USER '{self.name}'@'127.0.0.1' IDENTIFIED BY '{password}'",
                f"GRANT {REPL_GRANTS} ON *.* TO '{self.name}'@'127.0.0.1'",
            )
        finally:
            conn.close()

    def dsn(self, password: str | None = None) -> str:
        return f"mysql://{self.name}:{password or self.password}@127.0.0.1:{self.server.port}"

    def threads(self, command: str | None = None) -> list[tuple[Any, ...]]:
        """(id, command, state) of the server threads of this user (`command` a LIKE pattern)."""
        conn = self.server.root_connect()
        try:
            with conn.cursor() as cur:
                sql = "SELECT ID, COMMAND, STATE FROM information_schema.PROCESSLIST WHERE USER = %s"
                args: tuple[str, ...] = (self.name,)
                if command:
                    sql += " AND COMMAND LIKE %s"
                    args += (command,)
                cur.execute(sql, args)
                return list(cur.fetchall())
        finally:
            conn.close()

    def dump_threads(self) -> list[tuple[Any, ...]]:
        return self.threads("Binlog Dump%")

    def drop(self) -> None:
        conn = self.server.root_connect()
        try:
            execute(conn, "SET SESSION sql_log_bin = 0", f"DROP USER IF EXISTS '{self.name}'@'127.0.0.1'")
        finally:
            conn.close()


def pipeline_config(name: str, dsn: str, tmp_path: Path, *, start: str = "latest", include: list[str] | None = None,
                    sinks: list[dict[str, Any]] | None = None, flow: dict[str, Any] | None = None,
                    server_id: int | None = None) -> PipelineConfig:
    source: dict[str, Any] = {"type": "mysql", "dsn": dsn, "start": start}
    if include:
        source["include"] = include
    if server_id:
        source["server_id"] = server_id
    raw: dict[str, Any] = {
        "name": name,
        "source": source,
        "sinks": sinks or [{"name": "count", "type": "null"}],
        "data_dir": str(tmp_path / "data"),
    }
    if flow:
        raw["flow"] = flow
    return parse_config(raw, f"{name}.yaml", {})


def live_actor_names(pipeline: str) -> list[str]:
    import ray

    return [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
            if a["name"].startswith(f"dbus:{pipeline}:")]
