"""Several hosts in the `mysql` source's `dsn` (primary first), against a private MariaDB primary and its GTID
replica (`tests.support.failover`): the running pipeline follows a failover to the promoted replica, and the
host in use shows in its status.

Oracle: `SELECT` on the promoted server after the test's writes; every row once per key, in commit order.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from dbus_ray.config import parse_config
from dbus_ray.devstack import MariaDB
from tests.support.failover import DB, insert_txns, pair_fixture, rows_of, scalar, wait_replicated  # noqa: F401
from tests.support.helpers import execute, position, table_name, wait_for

pytestmark = pytest.mark.integration


def hosts_config(name: str, dsns: list[str], start: str, t: str, out: Path, data: Path) -> Any:
    return parse_config({
        "name": name,
        "source": {"type": "mysql", "dsn": dsns, "start": start, "include": [f"{DB}.{t}"], "server_id": 7331,
                   "reconnect_attempts": 1},
        "sinks": [{"name": "file", "type": "jsonl", "path": str(out)}],
        "flow": {"read_batch_rows": 25, "max_rows_in_flight": 25, "linger_ms": 10},
        "checkpoint": {"every_ms": 0},
        "data_dir": str(data),
    }, f"{name}.yaml", {})


def lines(out: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in out.read_text().splitlines()] if out.exists() else []


def where(server: MariaDB) -> str:
    return f"{server.host}:{server.port}"


def test_running_pipeline_follows_the_failover_to_the_second_host(pair: tuple[MariaDB, MariaDB], ray_session: None,
                                                                 tmp_path: Path) -> None:
    from dbus_ray.pipeline import Pipeline

    primary, replica = pair
    t = table_name("hosts")
    conn = primary.root_connect(DB)
    execute(conn, f"CREATE TABLE {t} (id INT PRIMARY KEY, v VARCHAR(40))")
    start = position(conn)
    out = tmp_path / "out.jsonl"
    cfg = hosts_config(f"hosts-{uuid.uuid4().hex[:6]}", [primary.dsn, replica.dsn], start, t, out, tmp_path / "data")
    pipeline = Pipeline(cfg)
    pipeline.start()
    try:
        assert pipeline.status()["source_host"] == f"{where(primary)} (host 1 of 2)"
        n = insert_txns(conn, t, 1, 100, 1, "p")  # 100 one-row transactions
        n = insert_txns(conn, t, n, 20, 5, "p")  # 20 of 5 rows
        wait_for(lambda: pipeline.status()["rows_delivered"] >= 200, 60, "200 rows read from the primary")
        n = insert_txns(conn, t, n, 10, 10, "p")  # 100 more, read or not when the primary dies
        conn.close()
        wait_replicated(primary, replica)
        before = len(lines(out))
        primary.kill()
        wait_for(lambda: pipeline.status()["source_host"] == f"{where(replica)} (host 2 of 2)", 60,
                 "the pipeline on the second host")
        rconn = replica.root_connect(DB)
        try:
            execute(rconn, "STOP SLAVE", "RESET SLAVE ALL")  # promoted
            n = insert_txns(rconn, t, n, 30, 1, "r")
            n = insert_txns(rconn, t, n, 6, 5, "r")
            state = scalar(rconn, "SELECT @@GLOBAL.gtid_binlog_pos")
        finally:
            rconn.close()
        expected = rows_of(replica, t)
        assert len(expected) == 360 and n == 361
        wait_for(lambda: len(lines(out)) >= len(expected) and pipeline.status()["caught_up"], 60,
                 "every row after the failover")
        status = pipeline.status()
        final = pipeline.stop()
    finally:
        pipeline.kill()
    assert final["error"] is None and status["error"] is None, final
    assert status["source_host"] == f"{where(replica)} (host 2 of 2)", status
    got = lines(out)
    ids = [r["after"]["id"] for r in got]
    by_id = {r["after"]["id"]: r["after"]["v"] for r in got}
    repeated = sum(k - 1 for k in Counter(ids).values())
    print(f"{before} rows delivered before the primary died, {len(got) - before} after, {repeated} twice")
    # the source resumed on the replica after the last row it handed out: nothing in flight is read again
    assert repeated == 0, Counter(ids).most_common(3)
    assert [(i, by_id[i]) for i in ids] == expected  # every row once, in commit order, with the server's values
    assert all(r["pos"]["gtid"].startswith("0-2-") for r in got if r["after"]["v"].startswith("r-"))
    assert all(r["pos"]["gtid"].startswith("0-1-") for r in got if r["after"]["v"].startswith("p-"))
    cp = final["checkpoint"]["source"]
    assert cp["server"] == "2" and cp["gtid_pos"] == state and state.startswith("0-2-") and cp["skip"] == 0, cp
