"""The private dev stack against the real things: Debian's mariadbd and the Apache Kafka broker (KRaft)."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pymysql
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.row_event import WriteRowsEvent

from dbus_ray.devstack import (
    STATE_FILE,
    Broker,
    DevStackError,
    MariaDB,
    dev_down,
    dev_status,
    dev_up,
    kafka_libs,
    kafka_version,
    redacted,
)

pytestmark = pytest.mark.integration


def _gone(pid: int) -> bool:
    """The process no longer exists (or is a zombie nobody reaped yet: it runs no code)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return text.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def _wait_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not _gone(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


# --------------------------------------------------------------------------- MariaDB


def test_mariadb_runs_privately_with_row_binlog(mariadb: MariaDB) -> None:
    assert mariadb.host == "127.0.0.1"
    assert mariadb.port != 3306  # never the system server
    assert mariadb.socket.startswith(str(mariadb.base_dir))
    assert mariadb.datadir.startswith(str(mariadb.base_dir))
    assert mariadb.dsn == f"mysql://dbus:dbus-pass@127.0.0.1:{mariadb.port}"
    conn = mariadb.root_connect()
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SHOW VARIABLES WHERE Variable_name IN "
                "('log_bin', 'binlog_format', 'binlog_row_image', 'binlog_row_metadata', 'server_id', 'port',"
                " 'datadir')"
            )
            variables = dict(cur.fetchall())
            cur.execute("SHOW DATABASES")
            databases = {row[0] for row in cur.fetchall()}
    finally:
        conn.close()
    assert variables["log_bin"] == "ON"
    assert variables["binlog_format"] == "ROW"
    assert variables["binlog_row_image"] == "FULL"
    assert variables["binlog_row_metadata"] == "FULL"
    assert variables["server_id"] == "1"
    assert int(variables["port"]) == mariadb.port
    assert Path(variables["datadir"]) == Path(mariadb.datadir)
    assert "dbus_test" in databases


def test_root_over_tcp_with_known_password(mariadb: MariaDB) -> None:
    conn = pymysql.connect(
        host=mariadb.host, port=mariadb.port, user=mariadb.root_user, password=mariadb.root_password
    )
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT CURRENT_USER()")
            assert cur.fetchone() == ("root@127.0.0.1",)
    finally:
        conn.close()
    with pytest.raises(pymysql.err.OperationalError):
        pymysql.connect(host=mariadb.host, port=mariadb.port, user="root", password="")


def test_dbus_user_queries_and_reads_master_status(mariadb: MariaDB) -> None:
    conn = mariadb.connect("dbus_test")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT CURRENT_USER(), DATABASE(), 6 * 7")
            assert cur.fetchone() == ("dbus@127.0.0.1", "dbus_test", 42)
            cur.execute("SHOW MASTER STATUS")
            rows = cur.fetchall()
            cur.execute("SHOW BINARY LOGS")
            binlogs = cur.fetchall()
    finally:
        conn.close()
    assert len(rows) == 1
    binlog_file, position = rows[0][0], int(rows[0][1])
    assert binlog_file.startswith("binlog.")
    assert position > 0
    assert binlog_file in {row[0] for row in binlogs}
    assert (Path(mariadb.datadir) / binlog_file).exists()


def test_dbus_user_can_stream_the_binlog(mariadb: MariaDB) -> None:
    table = f"t_{uuid.uuid4().hex[:8]}"
    admin = mariadb.root_connect("dbus_test")
    try:
        with admin.cursor() as cur:
            cur.execute("SHOW MASTER STATUS")
            log_file, log_pos = cur.fetchone()[:2]
            cur.execute(f"CREATE TABLE {table} (id INT PRIMARY KEY, name VARCHAR(20)) ENGINE=InnoDB")
            cur.execute(f"INSERT INTO {table} VALUES (1, 'a'), (2, 'b')")
    finally:
        admin.close()
    stream = BinLogStreamReader(
        connection_settings=mariadb.connection_settings(),
        server_id=4242,
        log_file=log_file,
        log_pos=log_pos,
        resume_stream=True,
        blocking=False,
        only_events=[WriteRowsEvent],
        only_tables=[table],
        is_mariadb=True,
    )
    try:
        rows = [row["values"] for event in stream for row in event.rows]
    finally:
        stream.close()
    assert rows == [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]


def test_mariadb_stop_removes_process_and_dir(tmp_path: Path) -> None:
    server = MariaDB(parent_dir=tmp_path).start()
    pid, base_dir = server.pid, server.base_dir
    assert base_dir.is_dir()
    assert not _gone(pid)
    server.stop()
    assert _gone(pid)
    assert not base_dir.exists()
    assert list(tmp_path.iterdir()) == []
    server.stop()  # idempotent


def test_mariadb_startup_failure_shows_the_log(tmp_path: Path) -> None:
    server = MariaDB(parent_dir=tmp_path, extra_args=["--no-such-option-for-dbus"])
    with pytest.raises(DevStackError, match="no-such-option-for-dbus"):
        server.start()
    assert list(tmp_path.iterdir()) == []  # temp dir removed even though the start failed


# --------------------------------------------------------------------------- Broker


def test_broker_topic_produce_and_read_back_with_assign(broker: Broker) -> None:
    assert broker.bootstrap == f"127.0.0.1:{broker.port}"
    topic = f"devstack-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    for future in admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)]).values():
        future.result(10)
    assert len(admin.list_topics(topic=topic, timeout=10).topics[topic].partitions) == 3

    producer = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True})
    sent: dict[bytes, list[bytes]] = {f"key-{i % 4}".encode(): [] for i in range(12)}
    partition_of: dict[bytes, set[int]] = {key: set() for key in sent}
    errors: list[KafkaError] = []

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            errors.append(err)
        else:
            partition_of[msg.key()].add(msg.partition())

    for i in range(12):
        key = f"key-{i % 4}".encode()
        value = f"value-{i}".encode()
        sent[key].append(value)
        producer.produce(topic, key=key, value=value, on_delivery=on_delivery)
    assert producer.flush(10) == 0
    assert errors == []
    assert all(len(parts) == 1 for parts in partition_of.values())  # one key -> one partition

    consumer = Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": f"g-{topic}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(3)])
        received: dict[bytes, list[bytes]] = {}
        count = 0
        deadline = time.monotonic() + 15
        while count < 12 and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            assert msg.partition() in partition_of[msg.key()]
            received.setdefault(msg.key(), []).append(msg.value())
            count += 1
    finally:
        consumer.close()
    assert received == sent  # every message, in order per key


def test_broker_is_apache_kafka_in_kraft_mode_with_bounded_heap(broker: Broker) -> None:
    libs = kafka_libs()
    assert (libs / f"kafka_2.13-{broker.version}.jar").is_file()  # the jar Maven fetched for pom.xml
    assert broker.version.split(".")[0] == "4"
    log = broker.log_path.read_text()
    assert f"Kafka version: {broker.version}" in log  # what the running broker itself reports
    assert "process.roles = [broker, controller]" in log  # KRaft combined mode, no ZooKeeper
    cmdline = Path(f"/proc/{broker.pid}/cmdline").read_bytes().split(b"\0")
    assert b"-Xmx512m" in cmdline and b"kafka.Kafka" in cmdline
    print(f"\nApache Kafka {broker.version} started in {broker.start_seconds:.1f} s")


def test_broker_startup_failure_shows_the_error(tmp_path: Path) -> None:
    server = Broker(parent_dir=tmp_path, config={"num.partitions": "many"})
    with pytest.raises(DevStackError, match="num.partitions"):
        server.start()
    assert list(tmp_path.iterdir()) == []  # temp dir removed even though the start failed


def test_broker_stop_removes_process_and_dir(tmp_path: Path) -> None:
    server = Broker(parent_dir=tmp_path).start()
    pid, base_dir, port = server.pid, server.base_dir, server.port
    assert base_dir.is_dir()
    server.stop()
    assert _gone(pid)
    assert not base_dir.exists()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    server.stop()  # idempotent


# --------------------------------------------------------------------------- dev up / status / down


def test_dev_up_status_down_round_trip(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    # `dbus dev up` runs in a process that exits right away: the stack must outlive it.
    code = "import sys, json; from dbus_ray.devstack import dev_up; print(json.dumps(dev_up(sys.argv[1])))"
    proc = subprocess.run(
        [sys.executable, "-c", code, str(state_dir)], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    up = json.loads(proc.stdout.strip().splitlines()[-1])
    assert up["running"] is True

    state_file = state_dir / STATE_FILE
    assert stat.S_IMODE(state_file.stat().st_mode) == 0o600  # it holds passwords
    status = dev_status(state_dir)
    assert status is not None and status["running"] is True
    db, kafka = status["mariadb"], status["broker"]
    assert db["alive"] and db["answering"] and kafka["alive"] and kafka["answering"]
    pids = [db["pid"], kafka["pid"]]
    dirs = [Path(db["base_dir"]), Path(kafka["base_dir"])]
    assert all(d.is_dir() for d in dirs)
    assert kafka["bootstrap"] == f"127.0.0.1:{kafka['port']}"
    assert kafka["version"] == kafka_version() and kafka["start_seconds"] > 0
    assert "dbus-pass" not in json.dumps(redacted(status))

    # The recorded DSN works and the broker answers.
    dsn = urlsplit(db["dsn"])
    conn = pymysql.connect(host=dsn.hostname, port=dsn.port, user=dsn.username, password=dsn.password)
    with conn.cursor() as cur:
        cur.execute("SHOW MASTER STATUS")
        assert cur.fetchone() is not None
    conn.close()
    AdminClient({"bootstrap.servers": kafka["bootstrap"]}).list_topics(timeout=10)

    # A second `up` finds the running stack instead of starting another one.
    again = dev_up(state_dir)
    assert [again["mariadb"]["pid"], again["broker"]["pid"]] == pids

    assert dev_down(state_dir) is True
    for pid in pids:
        assert _wait_gone(pid), f"pid {pid} still running after dev_down"
    assert not any(d.exists() for d in dirs)
    assert not state_file.exists()
    assert dev_status(state_dir) is None
    assert dev_down(state_dir) is False


def test_dev_up_replaces_a_stale_record(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    first = dev_up(state_dir, broker=False)
    try:
        assert first["broker"] is None and first["running"] is True
        os.kill(first["mariadb"]["pid"], 9)  # the stack died behind our back
        assert _wait_gone(first["mariadb"]["pid"])
        stale = dev_status(state_dir)
        assert stale is not None and stale["running"] is False and stale["mariadb"]["alive"] is False

        second = dev_up(state_dir, broker=False)
        assert second["running"] is True
        assert second["mariadb"]["pid"] != first["mariadb"]["pid"]
        assert not Path(first["mariadb"]["base_dir"]).exists()  # the dead one's dir was cleaned up
    finally:
        dev_down(state_dir)
    assert dev_status(state_dir) is None
