"""The `mysql` source under the conditions of real operation: a GTID start position, big transactions
(1,000,000-row DELETE and UPDATE through a pipeline with bounded reader memory, a 16 MB row), a MariaDB
restart mid-stream (clean and kill -9), the caught-up checkpoint, and a corrupt rows event named by its binlog
position. The replication connections (wrong password, dump thread closed, lag, server_id clashes):
test_mysql_replica_connections.py.

Tests that restart the server or write millions of rows use a private MariaDB of this module (the
session one is shared, and other tests read its whole binlog from `earliest`)."""

from __future__ import annotations

import base64
import hashlib
import json
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest

from dbus_ray.devstack import MariaDB
from dbus_ray.mysql.source import MysqlOptions, MysqlSource
from tests.support.helpers import execute, live_actor_pid, position, scalar, table_name, wait_for
from tests.support.mysql_faults import DB, drain, pipeline_config

pytestmark = pytest.mark.integration


# ------------------------------------------------------------------------------------------ helpers


@pytest.fixture(scope="module")
def own() -> Iterator[MariaDB]:
    """This module's private MariaDB: big packets (16 MB rows), room for 1,000,000-row transactions, and
    free to be restarted."""
    server = MariaDB(
        extra_args=[
            "--max-allowed-packet=256M",
            "--innodb-buffer-pool-size=256M",
            "--innodb-log-file-size=256M",
            "--binlog-cache-size=4M",
        ]
    ).start()
    try:
        yield server
    finally:
        server.stop()


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM, RssAnon, RssShmem (bytes) of a process, {} once it is gone."""
    out: dict[str, int] = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssShmem"):
            out[key] = int(value.split()[0]) * 1024
    return out


# ------------------------------------------------------------------------------------------ GTID start


def test_start_from_mariadb_gtid_set(mariadb: MariaDB, root: Any) -> None:
    t = table_name("gtid")
    execute(root, f"CREATE TABLE {t} (id INT PRIMARY KEY, v VARCHAR(10))", f"INSERT INTO {t} VALUES (1, 'before')")
    after_1 = scalar(root, "SELECT @@gtid_binlog_pos")
    execute(root, f"INSERT INTO {t} VALUES (2, 'after')")
    after_2 = scalar(root, "SELECT @@gtid_binlog_pos")
    execute(root, "BEGIN", f"INSERT INTO {t} VALUES (3, 'after')", f"UPDATE {t} SET v = 'x' WHERE id = 1", "COMMIT")
    execute(root, f"DELETE FROM {t} WHERE id = 2")
    assert len(after_1.split(",")) >= 1 and all(len(g.split("-")) == 3 for g in after_1.split(","))

    def read(start: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        src = MysqlSource("mysql-gtid", MysqlOptions(dsn=mariadb.dsn, server_id=7101, start=start,
                                                     include=[f"{DB}.{t}"]))
        src.open(None)
        try:
            return drain(src, t), src.checkpoint()
        finally:
            src.close()

    rows, checkpoint = read(after_1)
    assert [(r["op"], (r["after"] or r["before"])["id"]) for r in rows] == [
        ("insert", 2), ("insert", 3), ("update", 1), ("delete", 2)
    ]
    domain, server, seq = after_1.split(",")[0].split("-")  # one domain on this server
    assert rows[0]["pos"]["gtid"] == f"{domain}-{server}-{int(seq) + 1}" == rows[0]["txid"]
    assert rows[1]["txid"] == rows[2]["txid"] and [r["pos"]["index"] for r in rows[1:3]] == [0, 1]
    assert rows[0]["pos"]["file"].startswith("binlog.") and rows[0]["pos"]["offset"] > 4
    # the checkpoint after a GTID start is a real binlog position that a resume can use
    assert checkpoint["file"].startswith("binlog.") and checkpoint["skip"] == 0
    assert f"{checkpoint['file']}:{checkpoint['offset']}" == position(root)
    assert checkpoint["gtid"] == rows[-1]["pos"]["gtid"]

    rows, _ = read(after_2)
    assert [(r["op"], (r["after"] or r["before"])["id"]) for r in rows] == [("insert", 3), ("update", 1), ("delete", 2)]
    rows, _ = read(scalar(root, "SELECT @@gtid_binlog_pos"))  # the newest GTID: nothing after it
    assert rows == []


def test_start_from_gtid_set_with_two_domains(own: MariaDB) -> None:
    """A GTID set naming a position in each of two replication domains (`0-1-N,7-1-M`); on this module's server,
    so that the session server's gtid_binlog_pos keeps one domain."""
    t = table_name("gtid2")
    root = own.root_connect(DB)
    try:
        execute(root, f"CREATE TABLE {t} (id INT PRIMARY KEY, d INT)")
        execute(root, "SET SESSION gtid_domain_id = 7", f"INSERT INTO {t} VALUES (1, 7)",
                "SET SESSION gtid_domain_id = 0", f"INSERT INTO {t} VALUES (2, 0)")
        start = scalar(root, "SELECT @@gtid_binlog_pos")
        assert len(start.split(",")) >= 2, start
        execute(root, "SET SESSION gtid_domain_id = 7", f"INSERT INTO {t} VALUES (3, 7)",
                "SET SESSION gtid_domain_id = 0", f"INSERT INTO {t} VALUES (4, 0)")
    finally:
        root.close()
    src = MysqlSource("mysql-gtid2", MysqlOptions(dsn=own.dsn, server_id=7102, start=start,
                                                  include=[f"{DB}.{t}"]))
    src.open(None)
    try:
        rows = drain(src, t)
    finally:
        src.close()
    assert [r["after"]["id"] for r in rows] == [3, 4]
    assert [r["pos"]["gtid"].split("-")[0] for r in rows] == ["7", "0"]


# ------------------------------------------------------------------------------------------ big changes


def test_16mb_row_decodes_exactly(own: MariaDB) -> None:
    t = table_name("big_row")
    blob = random.Random(16).randbytes(16 * 1024 * 1024)
    text = ("héllo wörld 😀 " * 200_000)[: 2 * 1024 * 1024]
    conn = own.root_connect(DB, max_allowed_packet=256 * 1024 * 1024)
    try:
        execute(conn, f"CREATE TABLE {t} (id INT PRIMARY KEY, b LONGBLOB, s LONGTEXT) DEFAULT CHARSET=utf8mb4")
        start = position(conn)
        execute(conn, f"INSERT INTO {t} VALUES (1, %s, %s)", args=(blob, text))
        execute(conn, f"UPDATE {t} SET id = 2")  # before and after images: one event of over 36 MB
        assert scalar(conn, f"SELECT SHA2(b, 256) FROM {t}") == hashlib.sha256(blob).hexdigest()
    finally:
        conn.close()
    src = MysqlSource("mysql-big-row", MysqlOptions(dsn=own.dsn, server_id=7201, start=start, include=[f"{DB}.{t}"],
                                                    key_change="update"))  # the one update event as decoded
    src.open(None)
    try:
        rows = drain(src, t, max_rows=10)
    finally:
        src.close()
    assert [r["op"] for r in rows] == ["insert", "update"]
    ins, upd = rows
    for image, key in ((ins["after"], 1), (upd["before"], 1), (upd["after"], 2)):
        assert image["id"] == key
        assert base64.b64decode(image["b"]) == blob
        assert image["s"] == text


def test_million_row_delete_and_update_stream_with_bounded_reader_memory(
    own: MariaDB, ray_session: None, tmp_path: Path
) -> None:
    from dbus_ray.pipeline import actor_name, run_pipeline

    n = 1_000_000
    t = table_name("million")
    timings: dict[str, float] = {}
    conn = own.root_connect(DB)
    try:
        t0 = time.monotonic()
        execute(conn, f"CREATE TABLE {t} (id INT PRIMARY KEY, v INT NOT NULL)",
                f"INSERT INTO {t} SELECT seq, seq FROM seq_1_to_{n}")
        timings["insert_s"] = time.monotonic() - t0
        start = position(conn)
        t0 = time.monotonic()
        execute(conn, f"UPDATE {t} SET v = v + 1")
        timings["update_s"] = time.monotonic() - t0
        t0 = time.monotonic()
        execute(conn, f"DELETE FROM {t}")
        timings["delete_s"] = time.monotonic() - t0
        end = position(conn)
    finally:
        conn.close()

    name = f"million-{uuid.uuid4().hex[:6]}"
    cfg = pipeline_config(name, own.dsn, tmp_path, start=start, include=[f"{DB}.{t}"], server_id=7202)
    reader = actor_name(name, "reader")
    samples: list[dict[str, int]] = []
    baseline: dict[str, int] = {}
    done = threading.Event()

    def sample() -> None:
        pid = None
        while not done.is_set() and pid is None:
            pid = live_actor_pid(reader)
            if pid is None:
                time.sleep(0.01)
        while pid is not None and not done.is_set():
            status = proc_status(pid)
            if not status:
                return
            if not baseline:
                baseline.update(status)
            samples.append(status)
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.monotonic()
    try:
        final = run_pipeline(cfg, until_caught_up=True, interval=0.2)
    finally:
        done.set()
        sampler.join(10)
    timings["pipeline_s"] = time.monotonic() - t0
    assert final["error"] is None and final["state"] == "stopped", final
    assert final["rows_read"] == final["rows_delivered"] == 2 * n
    cp = final["checkpoint"]["source"]
    assert f"{cp['file']}:{cp['offset']}" == end and cp["skip"] == 0
    assert baseline and samples, "never sampled the reader actor's memory"
    peak = max(s.get("VmHWM", s["VmRSS"]) for s in samples)
    growth_mb = (peak - baseline["VmRSS"]) / 2**20
    anon = (max(s["RssAnon"] for s in samples) - baseline["RssAnon"]) / 2**20
    shmem = (max(s["RssShmem"] for s in samples) - baseline["RssShmem"]) / 2**20
    print(f"\nmillion-row UPDATE+DELETE: { {k: round(v, 1) for k, v in timings.items()} }, reader RSS baseline "
          f"{baseline['VmRSS'] / 2**20:.0f} MB, peak {peak / 2**20:.0f} MB, growth {growth_mb:.0f} MB (heap "
          f"+{anon:.0f} MB, object store mapping +{shmem:.0f} MB), {len(samples)} samples")
    assert growth_mb < 200, f"reader RSS grew by {growth_mb:.0f} MB reading 2,000,000 rows"


# ------------------------------------------------------------------------------------------ restart


class Workload:
    """Writes transactions of `rows` rows with increasing ids into `table` until stopped; a statement that
    fails because the server went away is retried on a new connection (INSERT IGNORE: a transaction that
    did commit before the failure adds no row, and no binlog row event, the second time)."""

    def __init__(self, server: MariaDB, table: str, rows: int = 5) -> None:
        self.server, self.table, self.rows = server, table, rows
        self.next_id = 0
        self.txns = 0
        self.errors = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _connect(self) -> pymysql.connections.Connection:
        while True:
            try:
                return pymysql.connect(host=self.server.host, port=self.server.port, user="root",
                                       password=self.server.root_password, database=DB, connect_timeout=2,
                                       autocommit=True)
            except pymysql.err.MySQLError:
                self.errors += 1
                time.sleep(0.05)

    def _run(self) -> None:
        conn = self._connect()
        while not self.stop.is_set():
            ids = range(self.next_id, self.next_id + self.rows)
            values = ", ".join(f"({i}, 'w{i}')" for i in ids)
            try:
                with conn.cursor() as cur:
                    cur.execute("BEGIN")
                    cur.execute(f"INSERT IGNORE INTO {self.table} VALUES {values}")
                    cur.execute("COMMIT")
            except (pymysql.err.MySQLError, OSError):
                self.errors += 1
                try:
                    conn.close()
                except Exception:  # noqa: BLE001 - already broken
                    pass
                time.sleep(0.05)
                conn = self._connect()
                continue
            self.next_id += self.rows
            self.txns += 1
            time.sleep(0.002)
        conn.close()


@pytest.mark.parametrize("crash", [False, True], ids=["shutdown", "kill-9"])
def test_restart_mid_stream_reconnects_and_delivers_every_row_once(
    own: MariaDB, ray_session: None, tmp_path: Path, crash: bool
) -> None:
    from dbus_ray.pipeline import Pipeline

    t = table_name("restart")
    conn = own.root_connect(DB)
    try:
        execute(conn, f"CREATE TABLE {t} (id INT PRIMARY KEY, s VARCHAR(20))")
        start = position(conn)
    finally:
        conn.close()
    out = tmp_path / "out.jsonl"
    name = f"restart-{uuid.uuid4().hex[:6]}"
    cfg = pipeline_config(name, own.dsn, tmp_path, start=start, include=[f"{DB}.{t}"], server_id=7203,
                          sinks=[{"name": "file", "type": "jsonl", "path": str(out)}],
                          flow={"read_batch_rows": 50, "max_rows_in_flight": 500, "linger_ms": 10})
    work = Workload(own, t)
    pipeline = Pipeline(cfg)
    pipeline.start()
    try:
        work.thread.start()
        wait_for(lambda: pipeline.status()["rows_delivered"] >= 300, 30, "rows before the restart")
        own.restart(crash=crash, down_seconds=1.0)
        restarted_at = work.txns
        wait_for(lambda: work.txns >= restarted_at + 100, 30, "the workload to go on after the restart")
        work.stop.set()
        work.thread.join(10)
        conn = own.root_connect(DB)
        try:
            expected = scalar(conn, f"SELECT COUNT(*) FROM {t}")
        finally:
            conn.close()

        last: dict[str, Any] = {}

        def delivered_all() -> bool:
            last.update(pipeline.status())
            assert last["state"] == "running", last
            return last["rows_delivered"] >= expected and last["caught_up"]

        try:
            wait_for(delivered_all, 30, f"{expected} rows delivered after the restart")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; {expected} rows in the table; pipeline status {last}") from None
        final = pipeline.stop()
    finally:
        work.stop.set()
        pipeline.kill()
    assert final["error"] is None, final
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    ids = [r["after"]["id"] for r in rows]
    dupes = [i for i, k in Counter(ids).items() if k > 1]
    assert not dupes, f"{len(dupes)} rows delivered more than once, e.g. {dupes[:5]}"
    conn = own.root_connect(DB)
    try:
        with conn.cursor() as cur:
            cur.execute(f"SELECT id FROM {t} ORDER BY id")
            in_table = [r[0] for r in cur.fetchall()]
    finally:
        conn.close()
    assert sorted(ids) == in_table, f"missing: {sorted(set(in_table) - set(ids))[:10]}"
    assert ids == sorted(ids)  # in commit order
    assert work.errors > 0  # the workload did see the server go away
    # the final checkpoint resumes exactly at the end: nothing after it, nothing repeated
    src = MysqlSource("mysql-restart", MysqlOptions(dsn=own.dsn, server_id=7208, include=[f"{DB}.{t}"]))
    src.open(final["checkpoint"]["source"])
    try:
        assert drain(src, t) == []
    finally:
        src.close()


def test_caught_up_checkpoint_is_after_the_last_commit(mariadb: MariaDB, root: Any, ray_session: None,
                                                       tmp_path: Path) -> None:
    from dbus_ray.pipeline import run_pipeline

    t = table_name("cpend")
    execute(root, f"CREATE TABLE {t} (id INT PRIMARY KEY)")
    start = position(root)
    execute(root, f"INSERT INTO {t} VALUES (1), (2), (3), (4), (5)")  # one event of exactly read_batch_rows rows
    end = position(root)
    cfg = pipeline_config(f"cpend-{uuid.uuid4().hex[:6]}", mariadb.dsn, tmp_path, start=start,
                          include=[f"{DB}.{t}"], server_id=7209, flow={"read_batch_rows": 5})
    final = run_pipeline(cfg, until_caught_up=True, interval=0.1)
    assert final["error"] is None and final["rows_delivered"] == 5
    cp = final["checkpoint"]["source"]
    assert (f"{cp['file']}:{cp['offset']}", cp["skip"]) == (end, 0)


# ------------------------------------------------------------------------------------------ decode errors


def test_decode_error_names_the_binlog_position(mariadb: MariaDB, root: Any, ray_session: None,
                                                tmp_path: Path) -> None:
    """A rows event corrupted on the server's disk (its columns-present bitmap zeroed; the server does not
    verify checksums when it sends) fails the real decoder: the error names the binlog file:offset and the
    table, in process and as the failed pipeline's error."""
    from dbus_ray.errors import DecodeError
    from dbus_ray.pipeline import Pipeline

    t = table_name("corrupt")
    execute(root, f"CREATE TABLE {t} (id INT PRIMARY KEY, v VARCHAR(10))")
    start = position(root)
    execute(root, f"INSERT INTO {t} VALUES (1, 'a'), (2, 'b')")
    file = start.split(":")[0]
    with root.cursor() as cur:
        cur.execute(f"SHOW BINLOG EVENTS IN '{file}' FROM {start.split(':')[1]}")
        events = [r for r in cur.fetchall() if str(r[2]).startswith("Write_rows")]
        cur.execute("SELECT @@log_bin_basename")
        path = Path(cur.fetchone()[0]).parent / file
    offset = int(events[0][1])
    data = path.read_bytes()
    kind = data[offset + 4]
    assert kind in (23, 30)  # WRITE_ROWS v1 / v2
    p = offset + 19 + 8  # after the event header, table id and flags
    if kind == 30:  # v2: the extra data's length (itself included)
        p += int.from_bytes(data[p : p + 2], "little")
    assert data[p] == 2  # two columns, then their columns-present bitmap
    with path.open("r+b") as f:
        f.seek(p + 1)
        f.write(b"\x00")
    try:
        src = MysqlSource("mysql-corrupt", MysqlOptions(dsn=mariadb.dsn, server_id=7215, start=start,
                                                        include=[f"{DB}.{t}"]))
        src.open(None)
        try:
            with pytest.raises(DecodeError) as err:
                drain(src, t)
        finally:
            src.close()
        expected = (f"binlog {file}:{offset}: insert rows event of {DB}.{t} names no column in its row images "
                    "(corrupt event)")
        assert str(err.value) == expected
        name = f"corrupt-{uuid.uuid4().hex[:6]}"
        cfg = pipeline_config(name, mariadb.dsn, tmp_path, start=start, include=[f"{DB}.{t}"], server_id=7216)
        pipeline = Pipeline(cfg)
        pipeline.start()
        try:
            status = wait_for(lambda: (s := pipeline.status())["state"] == "failed" and s, 30, "the pipeline to fail")
        finally:
            pipeline.kill()
        assert expected in status["error"], status
        assert status["rows_delivered"] == 0
    finally:
        with path.open("r+b") as f:
            f.seek(p + 1)
            f.write(data[p + 1 : p + 2])
