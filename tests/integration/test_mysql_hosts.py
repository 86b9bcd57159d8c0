"""Several hosts in the `mysql` source's `dsn` (primary first), against a private MariaDB primary and its GTID
replica (`tests.support.failover`): the running pipeline follows a failover to the promoted replica and a
planned switchover under load, and the host in use shows in its status; a (re)started source opens on the
first host that answers, and says in one line when none does.

Oracle: `SELECT` on the promoted server after the test's writes; every row once per key, in commit order.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from dbus_ray.config import parse_config
from dbus_ray.devstack import MariaDB
from dbus_ray.errors import DbusError
from dbus_ray.mysql.source import MysqlOptions, MysqlSource
from tests.support.failover import DB, insert_txns, pair_fixture, rows_of, wait_replicated  # noqa: F401
from tests.support.helpers import drain, execute, position, scalar, table_name, wait_for

pytestmark = pytest.mark.integration


def hosts_config(name: str, dsns: list[str], start: str, t: str, out: Path, data: Path, batch: int = 25) -> Any:
    return parse_config({
        "name": name,
        "source": {"type": "mysql", "dsn": dsns, "start": start, "include": [f"{DB}.{t}"], "server_id": 7331,
                   "reconnect_attempts": 1},
        "sinks": [{"name": "file", "type": "jsonl", "path": str(out)}],
        "flow": {"read_batch_rows": batch, "max_rows_in_flight": batch, "linger_ms": 10},
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


class Writer(threading.Thread):
    """One-row transactions, ids 1, 2, ..., to the server `target` names, one every 2 ms at most, until
    stopped; `pause()` returns once no transaction is open (the writes stopped for a switchover)."""

    def __init__(self, t: str, target: MariaDB) -> None:
        super().__init__(daemon=True)
        self.t, self.target = t, target
        self.next_id = 1
        self.go = threading.Event()
        self.idle = threading.Event()
        self.done = threading.Event()
        self.error: BaseException | None = None
        self.go.set()

    def run(self) -> None:
        conn, on = None, None
        try:
            while not self.done.is_set():
                if not self.go.is_set():
                    self.idle.set()
                    self.go.wait(0.05)
                    continue
                self.idle.clear()
                if on is not self.target:
                    if conn is not None:
                        conn.close()
                    on = self.target
                    conn = on.root_connect(DB)
                tag = "p" if on.server_id == 1 else "r"
                i = self.next_id
                execute(conn, f"INSERT INTO {self.t} VALUES ({i}, '{tag}-{i}')")
                self.next_id = i + 1
                time.sleep(0.002)
        except BaseException as exc:  # noqa: BLE001 - the test reads it
            self.error = exc
        finally:
            self.idle.set()
            if conn is not None:
                conn.close()

    def pause(self) -> None:
        self.go.clear()
        self.idle.wait(30)
        assert self.idle.is_set() and self.error is None, self.error

    def resume(self, target: MariaDB) -> None:
        self.target = target
        self.go.set()


def test_planned_switchover_under_load(pair: tuple[MariaDB, MariaDB], ray_session: None, tmp_path: Path) -> None:
    from dbus_ray.pipeline import Pipeline

    primary, replica = pair
    t = table_name("switch")
    conn = primary.root_connect(DB)
    try:
        execute(conn, f"CREATE TABLE {t} (id INT PRIMARY KEY, v VARCHAR(40))")
        start = position(conn)
    finally:
        conn.close()
    out = tmp_path / "out.jsonl"
    cfg = hosts_config(f"switch-{uuid.uuid4().hex[:6]}", [primary.dsn, replica.dsn], start, t, out, tmp_path / "data",
                       batch=200)
    pipeline = Pipeline(cfg)
    pipeline.start()
    writer = Writer(t, primary)
    writer.start()
    try:
        wait_for(lambda: pipeline.status()["rows_delivered"] >= 300, 60, "300 rows read from the primary")
        # the switchover: stop the writes, the replica catches up, promote it, write there
        paused = time.monotonic()
        writer.pause()
        p = primary.root_connect()
        try:
            execute(p, "SET GLOBAL read_only = 1")
            pos = scalar(p, "SELECT @@GLOBAL.gtid_binlog_pos")
        finally:
            p.close()
        r = replica.root_connect()
        try:
            assert scalar(r, "SELECT MASTER_GTID_WAIT(%s, 60)", (pos,)) == 0
            execute(r, "STOP SLAVE", "RESET SLAVE ALL")
        finally:
            r.close()
        on_old = writer.next_id - 1
        writer.resume(replica)
        print(f"writes stopped for {time.monotonic() - paused:.2f}s after {on_old} rows on the primary")
        wait_for(lambda: writer.next_id > on_old + 100, 60, "100 rows written on the new primary")
        primary.shutdown()  # the old primary goes away for its maintenance
        wait_for(lambda: pipeline.status()["source_host"] == f"{where(replica)} (host 2 of 2)", 60,
                 "the pipeline on the new primary")
        wait_for(lambda: writer.next_id > on_old + 300, 60, "300 rows written on the new primary")
        writer.done.set()
        writer.join(30)
        assert writer.error is None, writer.error
        expected = rows_of(replica, t)
        assert len(expected) == writer.next_id - 1
        wait_for(lambda: len(lines(out)) >= len(expected) and pipeline.status()["caught_up"], 120, "every row")
        final = pipeline.stop()
    finally:
        writer.done.set()
        pipeline.kill()
    assert final["error"] is None, final
    got = lines(out)
    ids = [r["after"]["id"] for r in got]
    repeated = sum(k - 1 for k in Counter(ids).values())
    print(f"{len(expected)} rows ({on_old} on the old primary), {repeated} delivered twice")
    assert repeated == 0, Counter(ids).most_common(3)
    assert [(r["after"]["id"], r["after"]["v"]) for r in got] == expected  # once each, in commit order
    assert {v.split("-")[0] for _, v in expected} == {"p", "r"} and on_old >= 300
    assert final["checkpoint"]["source"]["server"] == "2"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_open_takes_the_first_host_that_answers(pair: tuple[MariaDB, MariaDB]) -> None:
    primary, replica = pair
    t = table_name("open")
    conn = primary.root_connect(DB)
    try:
        execute(conn, f"CREATE TABLE {t} (id INT PRIMARY KEY, v VARCHAR(40))")
        start = position(conn)
        insert_txns(conn, t, 1, 5, 2, "p")
    finally:
        conn.close()
    wait_replicated(primary, replica)
    dead = f"mysql://{replica.user}:{replica.password}@127.0.0.1:{free_port()}"

    def opened(dsns: list[str], checkpoint: dict[str, Any] | None) -> tuple[MysqlSource, list[int]]:
        src = MysqlSource("hosts", MysqlOptions(dsn=dsns, server_id=7332, start=start, include=[f"{DB}.{t}"],
                                                reconnect_attempts=0))
        src.open(checkpoint)
        try:
            ids = [c.after["id"] for b in drain(src) for c in b.changes()]
        finally:
            src.close()
        return src, ids

    src, ids = opened([dead, primary.dsn], None)
    assert src.host() == f"{where(primary)} (host 2 of 2)" and ids == list(range(1, 11))
    src = MysqlSource("hosts", MysqlOptions(dsn=[primary.dsn], server_id=7332, start=start, include=[f"{DB}.{t}"]))
    src.open(None)
    got = 0
    try:
        while got < 3:  # the first transaction and one row of the second
            batch = src.poll(3 - got, 1)
            got += 0 if batch is None else batch.num_rows
    finally:
        src.close()
    cp = batch.checkpoint
    assert (cp["skip"], cp["server"]) == (1, "1"), cp
    primary.kill()
    src, ids = opened([primary.dsn, dead, replica.dsn], cp)  # the primary is gone: the replica, by GTID
    assert src.host() == f"{where(replica)} (host 3 of 3)" and ids == list(range(4, 11))
    with pytest.raises(DbusError) as info:
        opened([primary.dsn, dead], cp)
    text = str(info.value)
    assert "\n" not in text and replica.password not in text, text
    assert text.startswith(f"none of the 2 hosts of source.dsn answers: cannot connect to MySQL at {where(primary)} as "
                           f"{primary.user}: "), text
    assert f"; cannot connect to MySQL at {dead.rsplit('@', 1)[1]} as {replica.user}: " in text, text
