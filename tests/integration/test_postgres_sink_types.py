"""The `postgres` sink on the type-fidelity table (tests/support/mysql_types.py: one column of each MySQL type,
rows of edge values and NULLs), by initial snapshot and then by binlog (updates, a primary-key change, a
delete): the PostgreSQL table equals `SELECT * FROM` the MariaDB table value for value, as the sink's type
mapping (`dbus_ray.sinks.postgres_types`) documents each value."""

from __future__ import annotations

import random
import uuid
from pathlib import Path
from typing import Any

import pytest

from dbus_ray.config import parse_config
from dbus_ray.pipeline import run_pipeline
from tests.support.helpers import execute, table_name
from tests.support.live_copy import postgres_equal
from tests.support.mysql_types import create_type_table

pytestmark = pytest.mark.integration
DB = "dbus_test"


@pytest.mark.usefixtures("ray_session")
def test_type_fidelity_table_equals_the_source(mariadb: Any, postgres: Any, tmp_path: Path) -> None:
    t = table_name("pgtypes")
    conn = mariadb.root_connect(DB)
    try:
        execute(conn, "SET time_zone = '+00:00'")
        create_type_table(conn, t)
    finally:
        conn.close()
    name = f"pt{uuid.uuid4().hex[:6]}"
    cfg = parse_config({
        "name": name,
        "source": {"type": "mysql", "dsn": mariadb.dsn, "start": "latest", "include": [f"{DB}.{t}"],
                   "server_id": random.randint(20_000, 60_000), "snapshot": "initial"},
        "sinks": [{"name": "pg", "type": "postgres", "dsn": postgres.conninfo(), "schema": f"copy_{name}"}],
        "checkpoint": {"store": "postgres"},
        "data_dir": str(tmp_path / "data"),
    }, f"{name}.yaml", {})
    final = run_pipeline(cfg, until_caught_up=True, interval=0.1)
    assert final["error"] is None, final
    assert postgres_equal(mariadb, postgres, f"copy_{name}", t) == 4
    conn = mariadb.root_connect(DB)
    try:
        execute(conn, "SET time_zone = '+00:00'", "SET SESSION sql_mode = ''",
                f"UPDATE {t} SET id = 10 WHERE id = 1", f"DELETE FROM {t} WHERE id = 2",
                f"UPDATE {t} SET vc = 'changed', bu = 7, tm = '-01:02:03.5', d65 = 1.5 WHERE id = 3",
                f"INSERT INTO {t} (id, ti, f, dt_) VALUES (5, 1, 0.1, '2024-02-29')")
    finally:
        conn.close()
    final = run_pipeline(cfg, until_caught_up=True, interval=0.1)
    assert final["error"] is None, final
    assert postgres_equal(mariadb, postgres, f"copy_{name}", t) == 4
