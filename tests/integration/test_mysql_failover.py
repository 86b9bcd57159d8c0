"""Failover and binlog history of the `mysql` source, against private MariaDB servers the tests start: a
primary and a GTID replica (`log_slave_updates`, `gtid_strict_mode`, the replica's `binlog_checksum=NONE`
so that the same transactions sit at other offsets in its binlog).

- the same pipeline (name, checkpoint) pointed at the promoted replica resumes by GTID: every row once, in
  order, the duplicates only those of the last unacknowledged batch;
- a checkpoint taken inside a transaction resumes on the replica by GTID, its `skip` applied;
- `RESET MASTER`, a history replayed with other GTIDs at the very same offsets, and unrelated servers
  (another server_id, or the same one) are refused at open with one line naming what changed and the fix.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dbus_ray.checkpoints import open_store
from dbus_ray.config import parse_config
from dbus_ray.devstack import MariaDB
from dbus_ray.errors import DbusError
from dbus_ray.mysql.source import MysqlOptions, MysqlSource
from tests.support.failover import DB, insert_txns, pair_fixture, rows_of, wait_replicated  # noqa: F401
from tests.support.helpers import drain, execute, position, scalar, table_name, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture()
def lone() -> Iterator[MariaDB]:
    """A server of the test's own (it gets RESET MASTER)."""
    server = MariaDB(server_id=1).start()
    try:
        yield server
    finally:
        server.stop()


def source(dsn: str, t: str, start: str = "earliest", server_id: int = 7311) -> MysqlSource:
    return MysqlSource("failover", MysqlOptions(dsn=dsn, server_id=server_id, start=start, include=[f"{DB}.{t}"]))


def read_all(src: MysqlSource, max_rows: int = 1000) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    batches = drain(src, max_rows)
    return [json.loads(c.to_json()) for b in batches for c in b.changes()], src.checkpoint()


def read_from(dsn: str, t: str, checkpoint: dict[str, Any] | None = None) -> tuple[list[dict[str, Any]], dict]:
    """The rows of `t` a source reads from `checkpoint` (else from the earliest binlog) until caught up, and its
    checkpoint."""
    src = source(dsn, t)
    src.open(checkpoint)
    try:
        return read_all(src)
    finally:
        src.close()


def run_sql(server: MariaDB, *statements: str) -> None:
    """`statements` as root on database DB, on a connection of their own."""
    conn = server.root_connect(DB)
    try:
        execute(conn, *statements)
    finally:
        conn.close()


def refused(dsn: str, t: str, checkpoint: dict[str, Any]) -> str:
    src = source(dsn, t)
    with pytest.raises(DbusError) as info:
        src.open(checkpoint)
    src.close()
    text = str(info.value)
    assert "\n" not in text and "dbus checkpoint set" in text and "snapshot" in text, text
    return text


# ------------------------------------------------------------------------------------------ failover


def test_pipeline_resumes_by_gtid_on_the_promoted_replica(pair: tuple[MariaDB, MariaDB], ray_session: None,
                                                         tmp_path: Path) -> None:
    from dbus_ray.pipeline import Pipeline

    primary, replica = pair
    t = table_name("failover")
    conn = primary.root_connect(DB)
    execute(conn, f"CREATE TABLE {t} (id INT PRIMARY KEY, v VARCHAR(40))")
    start = position(conn)
    out = tmp_path / "out.jsonl"
    name = f"failover-{uuid.uuid4().hex[:6]}"

    def config(dsn: str) -> Any:
        return parse_config({
            "name": name,
            "source": {"type": "mysql", "dsn": dsn, "start": start, "include": [f"{DB}.{t}"], "server_id": 7301},
            "sinks": [{"name": "file", "type": "jsonl", "path": str(out)}],
            "flow": {"read_batch_rows": 25, "max_rows_in_flight": 25, "linger_ms": 10},
            "checkpoint": {"every_ms": 0},  # saved at every acknowledgement: only the batch in flight repeats
            "data_dir": str(tmp_path / "data"),
        }, f"{name}.yaml", {})

    def lines() -> list[dict[str, Any]]:
        return [json.loads(x) for x in out.read_text().splitlines()] if out.exists() else []

    first = Pipeline(config(primary.dsn))
    first.start()
    try:
        n = insert_txns(conn, t, 1, 100, 1, "p")  # 100 one-row transactions
        n = insert_txns(conn, t, n, 20, 5, "p")  # 20 of 5 rows
        wait_for(lambda: first.status()["rows_delivered"] >= 200, 60, "200 rows read from the primary")
        n = insert_txns(conn, t, n, 10, 10, "p")  # 100 more, read or not when the primary dies
        conn.close()
        wait_replicated(primary, replica)
        primary.kill()
    finally:
        first.kill()  # no final checkpoint: what it saved last stands
    run1 = lines()
    saved = open_store("file", name, config(replica.dsn).pipeline_dir).load()
    assert saved is not None
    cp1 = saved["source"]
    assert cp1["server"] == "1" and cp1["gtid_pos"].startswith("0-1-"), cp1
    rconn = replica.root_connect(DB)
    try:  # the checkpoint's offset is not the same place in the replica's binlog
        assert scalar(rconn, "SELECT BINLOG_GTID_POS(%s, %s)", (cp1["file"], cp1["offset"])) != cp1["gtid_pos"]
        execute(rconn, "STOP SLAVE", "RESET SLAVE ALL")  # promoted
        n = insert_txns(rconn, t, n, 30, 1, "r")
        n = insert_txns(rconn, t, n, 6, 5, "r")
        end = position(rconn)
        state = scalar(rconn, "SELECT @@GLOBAL.gtid_binlog_pos")
    finally:
        rconn.close()
    expected = rows_of(replica, t)
    assert len(expected) == 360 and n == 361

    second = Pipeline(config(replica.dsn))
    second.start()
    try:
        wait_for(lambda: {r["after"]["id"] for r in lines()} >= {i for i, _ in expected}
                 and second.status()["caught_up"], 60, "every row after the failover")
        final = second.stop()
    finally:
        second.kill()
    assert final["error"] is None, final
    got = lines()
    run2 = got[len(run1):]
    ids = [r["after"]["id"] for r in got]
    once = list(dict.fromkeys(ids))
    by_id = {r["after"]["id"]: r["after"]["v"] for r in got}
    assert [(i, by_id[i]) for i in once] == expected  # every row, in commit order, with the server's values
    repeated = [i for i, k in Counter(ids).items() if k > 1]
    k = len(repeated)
    assert all(Counter(ids)[i] == 2 for i in repeated)
    # at-least-once: the repeated rows are the tail the first run delivered after its last saved checkpoint
    assert [r["after"]["id"] for r in run2[:k]] == [r["after"]["id"] for r in run1[len(run1) - k:]]
    assert k <= 25, f"{k} rows delivered twice: more than the one batch in flight"
    print(f"{len(run1)} rows before the failover, {len(run2)} after, {k} delivered twice")
    # the rows after the failover carry the replica's own binlog positions and GTIDs
    assert all(r["pos"]["gtid"].startswith("0-2-") for r in run2 if r["after"]["v"].startswith("r-"))
    assert all(r["pos"]["gtid"].startswith("0-1-") for r in got if r["after"]["v"].startswith("p-"))
    cp = final["checkpoint"]["source"]
    assert (f"{cp['file']}:{cp['offset']}", cp["skip"], cp["server"], cp["gtid_pos"]) == (end, 0, "2", state)


def test_checkpoint_inside_a_transaction_resumes_by_gtid_on_the_replica(pair: tuple[MariaDB, MariaDB]) -> None:
    primary, replica = pair
    t = table_name("midtx")
    conn = primary.root_connect(DB)
    try:
        execute(conn, f"CREATE TABLE {t} (id INT PRIMARY KEY, v VARCHAR(40))")
        start = position(conn)
        insert_txns(conn, t, 1, 2, 1, "a")
        insert_txns(conn, t, 3, 1, 10, "b")  # ids 3..12 in one transaction
        insert_txns(conn, t, 13, 2, 1, "c")
    finally:
        conn.close()
    src = source(primary.dsn, t, start=start)
    src.open(None)
    try:
        got = []
        while len(got) < 5:  # 2 one-row transactions, then 3 rows of the 10-row one
            batch = src.poll(5 - len(got), 1)
            if batch is not None:
                got += [json.loads(c.to_json()) for c in batch.changes()]
        cp = batch.checkpoint
    finally:
        src.close()
    assert cp["skip"] == 3 and cp["server"] == "1", cp
    wait_replicated(primary, replica)
    rest, after = read_from(replica.dsn, t, cp)
    ids = [r["after"]["id"] for r in got + rest]
    assert ids == [i for i, _ in rows_of(replica, t)] == list(range(1, 15))
    assert [r["pos"]["index"] for r in rest[:7]] == list(range(3, 10))
    assert after["server"] == "2" and after["gtid_pos"] == scalar_pos(replica)


def scalar_pos(server: MariaDB) -> str:
    conn = server.root_connect()
    try:
        return str(scalar(conn, "SELECT @@GLOBAL.gtid_binlog_pos"))
    finally:
        conn.close()


# ------------------------------------------------------------------------------------------ history changed


def _history(server: MariaDB, t: str, seq: int | None = None) -> None:
    """The same statements every time: a table and five one-row transactions (GTIDs from `seq` if given)."""
    conn = server.root_connect(DB)
    try:
        if seq is not None:
            execute(conn, f"SET SESSION gtid_seq_no = {seq}")
        execute(conn, f"CREATE TABLE {t} (id INT PRIMARY KEY, v VARCHAR(40))")
        insert_txns(conn, t, 1, 5, 1, "h")
    finally:
        conn.close()


def test_reset_master_is_refused(lone: MariaDB) -> None:
    t = table_name("reset")
    _history(lone, t)
    rows, cp = read_from(lone.dsn, t)
    assert len(rows) == 6 and cp["gtid_pos"] == "0-1-6"  # the DDL and five inserts
    conn = lone.root_connect(DB)
    try:
        execute(conn, "RESET MASTER")
        insert_txns(conn, t, 100, 1, 1, "x")  # a short new binlog.000001
    finally:
        conn.close()
    text = refused(lone.dsn, t, cp)
    assert f"{cp['file']}:{cp['offset']} is not an event boundary there" in text and "RESET MASTER" in text, text

    # a checkpoint in a file the reset removed: its GTID is not in the server's history either
    conn = lone.root_connect(DB)
    try:
        execute(conn, "FLUSH BINARY LOGS")
        insert_txns(conn, t, 101, 2, 1, "y")
    finally:
        conn.close()
    _, cp2 = read_from(lone.dsn, t)  # from binlog.000001:4
    assert cp2["file"] == "binlog.000002", cp2
    run_sql(lone, "RESET MASTER")
    text = refused(lone.dsn, t, cp2)
    assert "binlog file binlog.000002 of the checkpoint is gone" in text and cp2["gtid_pos"] in text, text


def test_same_offsets_of_another_history_are_refused(lone: MariaDB) -> None:
    t = table_name("replay")
    _history(lone, t)
    _, cp = read_from(lone.dsn, t)
    run_sql(lone, "SET SESSION sql_log_bin = 0", f"DROP TABLE {t}", "SET SESSION sql_log_bin = 1", "RESET MASTER")
    _history(lone, t, seq=100)  # the same statements, the same sizes: other GTIDs
    conn = lone.root_connect(DB)
    try:
        assert position(conn) == f"{cp['file']}:{cp['offset']}"  # the checkpoint's offset is a valid boundary
        now = scalar(conn, "SELECT BINLOG_GTID_POS(%s, %s)", (cp["file"], cp["offset"]))
    finally:
        conn.close()
    assert now == "0-1-105" != cp["gtid_pos"]
    text = refused(lone.dsn, t, cp)
    assert f"the GTID state at {cp['file']}:{cp['offset']} is 0-1-105, the checkpoint's is {cp['gtid_pos']}" in text


def test_unrelated_servers_are_refused(lone: MariaDB, mariadb: MariaDB) -> None:
    t = table_name("elsewhere")
    _history(lone, t)
    _, cp = read_from(lone.dsn, t)
    other = MariaDB(server_id=3).start()
    try:
        text = refused(other.dsn, t, cp)  # an empty history
        assert "(server 3) is not the server the checkpoint was taken on (server 1)" in text, text
        assert "does not hold the checkpoint's 0-1-6" in text, text
        _history(other, t)
        _history(other, table_name("more"))  # a history of its own, longer: GTIDs 0-3-1 .. 0-3-12
        text = refused(other.dsn, t, cp)
        assert "(server 3) cannot resume by GTID after 0-1-6 (the checkpoint's state, taken on server 1)" in text
        assert "GTID 0-1-6, which is not in the master's binlog" in text, text
    finally:
        other.stop()
    # the session's server has the same server_id 1 but another binlog
    text = refused(mariadb.dsn, t, cp)
    assert "is not the one the checkpoint was taken on" in text, text


def test_old_checkpoints_without_history_fields_still_resume(lone: MariaDB) -> None:
    t = table_name("oldcp")
    _history(lone, t)
    conn = lone.root_connect(DB)
    try:
        file, offset = position(conn).split(":")
        insert_txns(conn, t, 10, 2, 1, "n")
    finally:
        conn.close()
    old = {"file": file, "offset": int(offset), "skip": 0, "gtid": "0-1-6"}  # as written before
    rows, cp = read_from(lone.dsn, t, old)
    assert [r["after"]["id"] for r in rows] == [10, 11]
    assert cp["server"] == "1" and cp["gtid_pos"] == "0-1-8"


def test_pipeline_after_reset_master_stops_with_one_line(lone: MariaDB, ray_session: None, tmp_path: Path) -> None:
    from dbus_ray.pipeline import Pipeline, run_pipeline

    t = table_name("resetpipe")
    _history(lone, t)
    name = f"reset-{uuid.uuid4().hex[:6]}"
    cfg = parse_config({
        "name": name,
        "source": {"type": "mysql", "dsn": lone.dsn, "start": "earliest", "include": [f"{DB}.{t}"],
                   "server_id": 7321},
        "sinks": [{"name": "count", "type": "null"}],
        "data_dir": str(tmp_path / "data"),
    }, f"{name}.yaml", {})
    final = run_pipeline(cfg, until_caught_up=True, interval=0.1)
    assert final["error"] is None and final["rows_delivered"] == 6, final
    cp = final["checkpoint"]["source"]
    run_sql(lone, "RESET MASTER")
    pipeline = Pipeline(cfg)
    with pytest.raises(DbusError) as info:
        pipeline.start()
    pipeline.kill()
    text = str(info.value)
    assert "\n" not in text and text.startswith(f"pipeline {name} cannot start: "), text
    assert f"{cp['file']}:{cp['offset']} is not an event boundary there" in text and "RESET MASTER" in text, text
    assert "max_allowed_packet" not in text and "dbus checkpoint set" in text, text
