"""Sinks that take some tables only (`match`): a batch holding none of a sink's tables reaches its writer
without rows (so its acknowledgement moves the checkpoint on) and must pass; each sink gets exactly its
tables' rows, in each placement (MariaDB and Ray for real; the rows checked against `SELECT`)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from dbus_ray.config import parse_config
from dbus_ray.devstack import MariaDB
from dbus_ray.pipeline import run_pipeline
from tests.support.changes import read_jsonl

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_session")]

DB = "dbus_test"


@pytest.mark.parametrize("placement", ["fused", "split", "spread"])
def test_a_sink_that_matches_none_of_a_batchs_tables(tmp_path: Path, mariadb: MariaDB, placement: str) -> None:
    a, b = (f"match_{name}_{uuid.uuid4().hex[:6]}" for name in "ab")
    conn = mariadb.root_connect(DB)
    try:
        with conn.cursor() as cur:
            for table in (a, b):
                cur.execute(f"CREATE TABLE {table} (id INT PRIMARY KEY, v VARCHAR(10))")
            cur.execute("SHOW MASTER STATUS")
            file, pos = cur.fetchone()[:2]
            # 500 rows of A first: read in batches of 100, the first ones hold nothing for B's sink
            cur.execute(f"INSERT INTO {a} SELECT seq, CONCAT('a', seq) FROM seq_1_to_500")
            conn.commit()
            cur.execute(f"INSERT INTO {b} SELECT seq, CONCAT('b', seq) FROM seq_1_to_5")
            conn.commit()
            expected = {}
            for table in (a, b):
                cur.execute(f"SELECT id, v FROM {table} ORDER BY id")
                expected[table] = [list(row) for row in cur.fetchall()]
    finally:
        conn.close()
    out = {t: tmp_path / f"{t}.jsonl" for t in (a, b)}
    cfg = parse_config({
        "name": f"match-{uuid.uuid4().hex[:6]}", "data_dir": str(tmp_path / "data"),
        "source": {"type": "mysql", "dsn": f"mysql://{mariadb.user}:{mariadb.password}@127.0.0.1:{mariadb.port}",
                   "start": f"{file}:{pos}", "include": [f"{DB}.{a}", f"{DB}.{b}"]},
        "sinks": [{"name": t[-8:], "type": "jsonl", "path": str(out[t]), "match": [f"{DB}.{t}"]} for t in (a, b)],
        "flow": {"read_batch_rows": 100, "sink_batch_rows": 100, "placement": placement},
    }, "match.yaml", {})
    final = run_pipeline(cfg, until_caught_up=True, interval=0.05)
    assert final["state"] != "failed", final.get("error")
    assert final["rows_delivered"] == 505
    for table in (a, b):
        rows = read_jsonl(out[table])
        assert {r["table"] for r in rows} == {table}
        assert [[r["after"]["id"], r["after"]["v"]] for r in rows] == expected[table]
