"""DECIMAL values in every JSON output are written in positional notation with exactly the column's scale,
as the server itself shows them: expected values from MariaDB's `SELECT CAST(col AS CHAR)`, for rows read
from the binlog and by the snapshot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from dbus_ray.cli import app
from dbus_ray.devstack import MariaDB
from tests.support.helpers import execute, position, table_name

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_session")]

COLUMNS = {"d65": "DECIMAL(65,30)", "d10": "DECIMAL(10,10)", "d12": "DECIMAL(12,2)", "d0": "DECIMAL(20,0)"}
VALUES = [
    ("-0.000000000000000000000000000001", "0", "-12.50", "-99999999999999999999"),
    ("0", "0.0000000001", "0", "0"),
    ("12345678901234567890123456789012345.123456789012345678901234567890", "-0.9999999999", "1000000000.00", "1"),
]


def server_text(mariadb: MariaDB, table: str) -> dict[int, dict[str, str]]:
    conn = mariadb.root_connect("dbus_test")
    try:
        with conn.cursor() as cur:
            cols = ", ".join(f"CAST({c} AS CHAR)" for c in COLUMNS)
            cur.execute(f"SELECT id, {cols} FROM {table}")
            return {row[0]: dict(zip(COLUMNS, row[1:])) for row in cur.fetchall()}
    finally:
        conn.close()


def run(tmp_path: Path, mariadb: MariaDB, table: str, name: str, **source: Any) -> list[dict[str, Any]]:
    out = tmp_path / f"{name}.jsonl"
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        "name": name, "data_dir": str(tmp_path / "data"),
        "source": {"type": "mysql", "dsn": mariadb.dsn, "include": [f"dbus_test.{table}"], **source},
        "sinks": [{"name": "f", "type": "jsonl", "path": str(out)}]}))
    result = CliRunner().invoke(app, ["run", str(path), "--until-caught-up"])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_decimals_are_written_as_the_server_shows_them(tmp_path: Path, mariadb: MariaDB) -> None:
    table = table_name("dec_text")
    conn = mariadb.root_connect("dbus_test")
    try:
        cols = ", ".join(f"{c} {t}" for c, t in COLUMNS.items())
        execute(conn, f"CREATE TABLE {table} (id INT PRIMARY KEY, {cols})")
        start = position(conn)
        for i, row in enumerate(VALUES, 1):
            execute(conn, f"INSERT INTO {table} VALUES (%s, %s, %s, %s, %s)", args=(i, *row))
    finally:
        conn.close()
    expected = server_text(mariadb, table)
    assert expected[1]["d65"] == "-0.000000000000000000000000000001" and expected[1]["d10"] == "0.0000000000"
    streamed = run(tmp_path, mariadb, table, "dec-stream", start=start)
    snapshot = run(tmp_path, mariadb, table, "dec-snap", snapshot="initial")
    for rows, how in ((streamed, "binlog"), (snapshot, "snapshot")):
        got = {r["after"]["id"]: {c: r["after"][c] for c in COLUMNS} for r in rows if r["op"] in ("insert", "read")}
        assert got == expected, how
