"""JSON-lines output of a pipeline and its checks, shared by the snapshot, backfill and pipeline tests: the
`jsonl` sink's rows read back, the snapshot markers, and the changes applied strictly (a duplicate or a
lost change fails) or as upserts, to compare with the table as SELECT returns it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pymysql

from dbus_ray.config import parse_config
from dbus_ray.model import dumps


def select_json(conn: pymysql.connections.Connection, table: str, order: str = "id") -> list[dict[str, Any]]:
    with conn.cursor(pymysql.cursors.DictCursor) as cur:
        cur.execute(f"SELECT * FROM {table} ORDER BY {order}")
        return [json.loads(dumps(r)) for r in cur.fetchall()]


def pipeline_config(mariadb: Any, tmp_path: Path, pipeline: str, out: Path, **source_options: Any) -> Any:
    flow = source_options.pop("flow", {"read_batch_rows": 1000, "max_rows_in_flight": 4000})
    raw = {
        "name": pipeline,
        "source": {"type": "mysql", "dsn": "mysql://dbus:${PW}@127.0.0.1:" + str(mariadb.port), **source_options},
        "sinks": [{"name": "file", "type": "jsonl", "path": str(out)}],
        "flow": flow,
        "data_dir": str(tmp_path / "data"),
    }
    return parse_config(raw, f"{pipeline}.yaml", {"PW": mariadb.password})


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def is_marker(r: dict[str, Any]) -> bool:
    return r["op"] == "ddl" and r["after"] is not None and "snapshot" in r["after"]


def apply_strict(rows: list[dict[str, Any]]) -> dict[str, dict[Any, dict[str, Any]]]:
    """Table -> id -> row, applying the changes in order and failing on any duplicate or lost change: a
    `read` or `insert` of a present key, an update or delete whose before image is not the current row."""
    state: dict[str, dict[Any, dict[str, Any]]] = {}
    for r in rows:
        if r["op"] == "ddl":
            continue
        t = state.setdefault(r["table"], {})
        k = r["key"]["id"]
        if r["op"] in ("read", "insert"):
            assert k not in t, f"{r['op']} of {r['table']} id {k} that is already there: a duplicate"
            t[k] = r["after"]
        else:
            assert t.get(k) == r["before"], f"{r['op']} of {r['table']} id {k}: before {r['before']} != {t.get(k)}"
            if r["op"] == "update":
                t[k] = r["after"]
            else:
                del t[k]
    return state


def apply_upserts(rows: list[dict[str, Any]]) -> dict[str, dict[Any, dict[str, Any]]]:
    """Table -> id -> row, applying the changes in order as idempotent upserts and deletes (at-least-once)."""
    state: dict[str, dict[Any, dict[str, Any]]] = {}
    for r in rows:
        if r["op"] == "ddl":
            continue
        t = state.setdefault(r["table"], {})
        if r["op"] == "delete":
            t.pop(r["key"]["id"], None)
        else:
            t[r["key"]["id"]] = r["after"]
    return state


def snapshot_markers(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(table, "start" or "end") of each snapshot marker, in order."""
    return [(r["table"], r["after"]["snapshot"]) for r in rows if is_marker(r)]


def snapshot_window(rows: list[dict[str, Any]]) -> tuple[float, float]:
    """The read time of the first and of the last snapshot marker."""
    times = [r["read_ts"] for r in rows if is_marker(r)]
    return min(times), max(times)


def assert_tables_match(state: dict[str, dict[Any, dict[str, Any]]], conn: Any, *tables: str) -> None:
    """The applied changes of each table (`apply_strict`/`apply_upserts`) are the table as SELECT returns it."""
    for t in tables:
        assert sorted(state.get(t, {}).values(), key=lambda r: r["id"]) == select_json(conn, t), t
