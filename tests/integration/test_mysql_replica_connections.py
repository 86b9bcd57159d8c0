"""The `mysql` source's replication connections against a real MariaDB: a wrong password at pipeline
start, the dump connection closed when the source closes and when the pipeline stops, lag through
heartbeats, and a server_id taken by another replica (refused at open, or failing the reader with one
line when another replica takes it over)."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from dbus_ray.devstack import MariaDB
from dbus_ray.errors import DbusError
from dbus_ray.mysql.source import MysqlOptions, MysqlSource
from tests.support.helpers import execute, position, table_name, wait_for
from tests.support.mysql_faults import DB, ReplUser, drain, live_actor_names, pipeline_config

pytestmark = pytest.mark.integration


# ------------------------------------------------------------------------------------------ connections


def test_access_denied_at_pipeline_start(mariadb: MariaDB, ray_session: None, tmp_path: Path) -> None:
    from dbus_ray.pipeline import Pipeline

    user = ReplUser(mariadb)
    try:
        name = f"denied-{uuid.uuid4().hex[:6]}"
        cfg = pipeline_config(name, user.dsn("wrong-secret-77"), tmp_path, server_id=7204)
        t0 = time.monotonic()
        with pytest.raises(DbusError) as err:
            Pipeline(cfg).start()
        took = time.monotonic() - t0
        msg = str(err.value)
        assert "\n" not in msg and "wrong-secret-77" not in msg and user.password not in msg
        assert f"access denied for {user.name}@127.0.0.1 on 127.0.0.1:{mariadb.port}" in msg, msg
        assert took < 30
        wait_for(lambda: not live_actor_names(name), 10, f"the actors of {name} to be gone")
        assert user.dump_threads() == [] and user.threads() == []
    finally:
        user.drop()


def test_source_close_ends_the_dump_thread(mariadb: MariaDB, root: Any) -> None:
    user = ReplUser(mariadb)
    try:
        src = MysqlSource("mysql-close", MysqlOptions(dsn=user.dsn(), server_id=7205))
        src.open(None)
        try:
            drain(src)
            wait_for(user.dump_threads, 10, "the binlog dump thread")
        finally:
            src.close()
        wait_for(lambda: not user.threads(), 5, f"no connection of {user.name} left: {user.threads()}")
    finally:
        user.drop()


def test_pipeline_stop_closes_the_dump_connection(
    mariadb: MariaDB, root: Any, ray_session: None, tmp_path: Path
) -> None:
    from dbus_ray.pipeline import Pipeline

    user = ReplUser(mariadb)
    t = table_name("stopdump")
    execute(root, f"CREATE TABLE {t} (id INT PRIMARY KEY)")
    try:
        name = f"stopdump-{uuid.uuid4().hex[:6]}"
        cfg = pipeline_config(name, user.dsn(), tmp_path, include=[f"{DB}.{t}"], server_id=7206)
        pipeline = Pipeline(cfg)
        pipeline.start()
        try:
            wait_for(user.dump_threads, 10, "the pipeline's binlog dump thread")
            execute(root, f"INSERT INTO {t} VALUES (1), (2), (3)")
            wait_for(lambda: pipeline.status()["rows_delivered"] == 3, 10, "3 rows")
            final = pipeline.stop()
        finally:
            pipeline.kill()
        assert final["state"] == "stopped" and final["error"] is None
        wait_for(lambda: not user.dump_threads(), 5, "the binlog dump thread to end")
        wait_for(lambda: not user.threads(), 5, f"no connection of {user.name} left: {user.threads()}")
    finally:
        user.drop()


# ------------------------------------------------------------------------------------------ lag


def test_lag_stays_near_zero_when_idle_and_returns_to_zero_after_writes(mariadb: MariaDB, root: Any) -> None:
    t = table_name("lag")
    execute(root, f"CREATE TABLE {t} (id INT PRIMARY KEY)")
    src = MysqlSource("mysql-lag", MysqlOptions(dsn=mariadb.dsn, server_id=7207, include=[f"{DB}.{t}"]))
    src.open(None)

    def watch(seconds: float) -> list[float]:
        lags = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            src.poll(1000, 1)
            lags.append(src.lag_seconds())
        return lags

    def write() -> None:
        writer = mariadb.root_connect(DB)
        try:
            for i in range(60):  # for about 1.5 s
                execute(writer, f"INSERT INTO {t} VALUES ({i})")
                time.sleep(0.025)
        finally:
            writer.close()

    try:
        idle = watch(1.5)  # six heartbeat periods of nothing else
        thread = threading.Thread(target=write)
        thread.start()
        busy: list[float] = []
        while thread.is_alive():
            busy += watch(0.1)
        thread.join()
        after = watch(1.5)
        assert len(drain(src, t)) == 0  # everything was read while watching
    finally:
        src.close()
    assert max(idle) < 0.5, f"idle lag reached {max(idle):.2f} s"
    assert max(busy) < 2.0, f"lag while writing reached {max(busy):.2f} s"  # commit times have 1 s resolution
    assert after[-1] == 0.0 and max(after[len(after) // 2:]) < 0.5, f"lag after writes: {after[-5:]}"


# ------------------------------------------------------------------------------------------ server_id clash


def other_replica(server: MariaDB, user: ReplUser, server_id: int) -> Any:
    """A replica that is not a dbus reader (python-mysql-replication's stock reader), connected and
    registered as `replica-7.example:3307` with `server_id`."""
    from pymysqlreplication import BinLogStreamReader

    conn = server.root_connect()
    try:
        file, pos = position(conn).split(":")
    finally:
        conn.close()
    reader = BinLogStreamReader(
        connection_settings={"host": "127.0.0.1", "port": server.port, "user": user.name, "password": user.password},
        server_id=server_id, blocking=True, log_file=file, log_pos=int(pos), resume_stream=True,
        report_slave=("replica-7.example", "", "", 3307),
    )
    assert reader.fetchone() is not None  # the first (rotate) event: connected and registered
    return reader


def may_list(server: MariaDB, user: ReplUser) -> None:
    """Let `user` list replicas: SHOW SLAVE HOSTS needs REPLICATION MASTER ADMIN on MariaDB."""
    conn = server.root_connect()
    try:
        execute(conn, "SET SESSION sql_log_bin = 0",
                f"GRANT REPLICATION MASTER ADMIN ON *.* TO '{user.name}'@'127.0.0.1'")
    finally:
        conn.close()


def poll_until_error(src: MysqlSource, rounds: int = 200) -> str:
    with pytest.raises(DbusError) as err:
        for _ in range(rounds):
            src.poll(100, 1)
            time.sleep(0.02)
    return str(err.value)


@pytest.mark.parametrize("may_list_replicas", [False, True])
def test_server_id_taken_over_by_another_replica_fails_the_reader(mariadb: MariaDB, may_list_replicas: bool) -> None:
    """Another replica connects with the reader's server_id: the server ends the reader's binlog connection
    (error 4052); the reader fails with one line instead of throwing the other one out in turn, forever."""
    user = ReplUser(mariadb)
    if may_list_replicas:
        may_list(mariadb, user)
    sid = 7211 if may_list_replicas else 7212
    src = MysqlSource("clash-x", MysqlOptions(dsn=user.dsn(), server_id=sid))
    other = None
    try:
        src.open(None)
        drain(src)
        wait_for(user.dump_threads, 10, "the reader's binlog dump thread")
        other = other_replica(mariadb, user, sid)
        message = poll_until_error(src)
        assert "\n" not in message and user.password not in message
        where = f"127.0.0.1:{mariadb.port}"
        named = " (replica-7.example:3307 in SHOW SLAVE HOSTS)" if may_list_replicas else ""
        assert message == (
            f"server_id {sid} is used by another replica of {where}{named}, which took over the binlog "
            "connection: give each pipeline and replica its own source.server_id, or use server_id: auto"
        )
        time.sleep(1.0)  # the failed reader stays away: the other replica keeps its connection
        assert len(user.dump_threads()) == 1
    finally:
        src.close()
        if other is not None:
            other.close()
        user.drop()


def test_pipeline_fails_when_another_replica_takes_its_server_id(mariadb: MariaDB, ray_session: None,
                                                                 tmp_path: Path) -> None:
    from dbus_ray.pipeline import Pipeline

    user = ReplUser(mariadb)
    name = f"clash-{uuid.uuid4().hex[:6]}"
    pipeline = Pipeline(pipeline_config(name, user.dsn(), tmp_path, server_id=7217))
    other = None
    try:
        pipeline.start()
        wait_for(user.dump_threads, 10, "the pipeline's binlog dump thread")
        other = other_replica(mariadb, user, 7217)
        status = wait_for(lambda: (s := pipeline.status())["state"] == "failed" and s, 30, "the pipeline to fail")
        assert status["error"] == (
            f"server_id 7217 is used by another replica of 127.0.0.1:{mariadb.port}, which took over the binlog "
            "connection: give each pipeline and replica its own source.server_id, or use server_id: auto"
        ), status
        time.sleep(1.0)
        assert len(user.dump_threads()) == 1  # only the other replica's
    finally:
        pipeline.kill()
        if other is not None:
            other.close()
        user.drop()


def test_server_id_of_a_registered_replica_is_refused_at_open(mariadb: MariaDB) -> None:
    """When the user may list replicas (SHOW SLAVE HOSTS), a server_id another replica (or another dbus
    pipeline: readers register as `dbus <pipeline>@<host>`) holds is refused before connecting."""
    user = ReplUser(mariadb)
    may_list(mariadb, user)
    other = other_replica(mariadb, user, 7213)
    a = MysqlSource("clash-a", MysqlOptions(dsn=user.dsn(), server_id=7214))
    b = MysqlSource("clash-b", MysqlOptions(dsn=user.dsn(), server_id=7214))
    try:
        with pytest.raises(DbusError) as err:
            MysqlSource("clash-r", MysqlOptions(dsn=user.dsn(), server_id=7213)).open(None)
        where = f"127.0.0.1:{mariadb.port}"
        assert str(err.value) == (
            f"server_id 7213 is already used by another replica of {where} (replica-7.example:3307 in SHOW SLAVE "
            "HOSTS): give each pipeline and replica its own source.server_id, or use server_id: auto"
        )
        assert len(user.dump_threads()) == 1  # the other replica was left alone
        a.open(None)
        drain(a)
        with pytest.raises(DbusError, match=rf"^server_id 7214 is already used by another replica of {where} "
                                            r"\(dbus clash-a@.*:0 in SHOW SLAVE HOSTS\)"):
            b.open(None)
        a.close()  # the same pipeline again: its own registration is no clash
        a.open(None)
        drain(a)
    finally:
        a.close()
        b.close()
        other.close()
        user.drop()
