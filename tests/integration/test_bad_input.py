"""The bad-input catalogue of docs/operations.md: every user mistake we know, made for real (MariaDB,
broker and Ray from the session fixtures; the CLI through typer's CliRunner), with the exact one-line
message the user gets. Each message is one line, names what and where, and never holds a password.

Rows covered by other tests are only referenced here (see docs/operations.md):
- unknown keys, bad DSN: tests/unit/test_config.py::test_bad_config_message
- wrong binlog format: tests/integration/test_mysql_source.py::test_preflight_reports_bad_binlog_format_with_the_fix
- unreachable broker: tests/integration/test_kafka_sink.py::test_pipeline_unreachable_broker_fails_to_start
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
import yaml
from typer.testing import CliRunner, Result

from dbus_ray.cli import app
from dbus_ray.devstack import MariaDB, free_port
from tests.support.helpers import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_session")]

#: the password of every DSN in this file: it must never show up in a message
SECRET = "Bad-Input-Pw-7Q2x"


@pytest.fixture(autouse=True)
def _secret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BAD_INPUT_PW", SECRET)


def write(tmp_path: Path, raw: dict[str, Any]) -> Path:
    raw.setdefault("data_dir", str(tmp_path / "data"))
    path = tmp_path / f"{raw['name']}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def mysql_pipeline(tmp_path: Path, name: str, dsn: str, **source: Any) -> Path:
    return write(tmp_path, {"name": name, "source": {"type": "mysql", "dsn": dsn, **source},
                            "sinks": [{"name": "out", "type": "jsonl", "path": str(tmp_path / "out.jsonl")}]})


def dsn(port: int, user: str = "dbus", password: str = "${BAD_INPUT_PW}") -> str:
    return f"mysql://{user}:{password}@127.0.0.1:{port}"


def invoke(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def error_of(result: Result, code: int) -> str:
    """The one `error: ` line of a failed command (checked: exit code, one line, no password)."""
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert result.exit_code == code, result.output
    assert len(errors) == 1, result.output
    assert SECRET not in result.output
    return errors[0]


def check(message: str, expected: str) -> None:
    """`expected` is a regex of the whole message (documented in docs/operations.md)."""
    print(f"MESSAGE {message}")
    assert "\n" not in message and SECRET not in message
    assert re.fullmatch(expected, message), f"\n got: {message}\nwant: {expected}"


def no_actors_of(name: str) -> bool:
    return not [a for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith(f"dbus:{name}:")]


# ------------------------------------------------------------------------------------------ the file


def test_bad_yaml(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: p\nsource: {type: mock\nsinks: []\n")
    check(error_of(invoke("validate", str(path)), 2),
          f"error: {re.escape(str(path))}: line 3: YAML syntax error: expected ',' or '}}', but got ':'")


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    check(error_of(invoke("run", str(path)), 2),
          f"error: {re.escape(str(path))}: cannot read: No such file or directory")


def test_bad_dsn_without_host(tmp_path: Path) -> None:
    path = mysql_pipeline(tmp_path, "nohost", "mysql://dbus:${BAD_INPUT_PW}@:3306")
    check(error_of(invoke("validate", str(path)), 2),
          rf"error: {re.escape(str(path))}: source.dsn: DSN has no host: expected mysql://user:\*\*\*@host:port")


# ------------------------------------------------------------------------------------------ MySQL


def test_wrong_password(tmp_path: Path, mariadb: MariaDB) -> None:
    path = mysql_pipeline(tmp_path, "wrongpw", dsn(mariadb.port))  # BAD_INPUT_PW is not dbus's password
    check(error_of(invoke("run", str(path), "--until-caught-up"), 1),
          rf"error: pipeline wrongpw cannot start: access denied for dbus@127.0.0.1 on 127.0.0.1:{mariadb.port}: "
          r"check the user and password in source.dsn, or set source.ssl_ca when the account requires TLS "
          r"\(REQUIRE SSL\)")
    assert no_actors_of("wrongpw")


def test_missing_grants(tmp_path: Path, mariadb: MariaDB) -> None:
    user = f"weak{uuid.uuid4().hex[:6]}"
    conn = mariadb.root_connect()
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY %s", (SECRET,))
            cur.execute(f"GRANT SELECT ON *.* TO '{user}'@'127.0.0.1'")
        path = mysql_pipeline(tmp_path, "weak", dsn(mariadb.port, user))
        message = error_of(invoke("run", str(path), "--until-caught-up"), 1)
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP USER '{user}'@'127.0.0.1'")
        conn.close()
    check(message, rf"error: pipeline weak cannot start: user {user}@127.0.0.1 lacks REPLICATION SLAVE, "
                   rf"BINLOG MONITOR on 127.0.0.1:{mariadb.port}; "
                   rf"GRANT REPLICATION SLAVE, BINLOG MONITOR ON \*\.\* TO '{user}'@'<host>'")


def test_unreachable_mysql(tmp_path: Path) -> None:
    port = free_port()
    path = mysql_pipeline(tmp_path, "nomysql", dsn(port))
    check(error_of(invoke("run", str(path), "--until-caught-up"), 1),
          rf"error: pipeline nomysql cannot start: cannot connect to MySQL at 127.0.0.1:{port} as dbus: "
          r"Can't connect to MySQL server on '127.0.0.1' \(\[Errno 111\] Connection refused\)")


def test_reader_killed_while_it_connects_names_the_reader(tmp_path: Path) -> None:
    """A server that accepts and never greets holds the reader in its open; killed there, the start fails
    with one line naming the reader (not a bare "actor died")."""
    import socket
    import threading

    from dbus_ray.config import load_config
    from dbus_ray.errors import DbusError
    from dbus_ray.pipeline import actor_name, run_pipeline
    from tests.support.helpers import actor_pid

    silent = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    threading.Thread(target=lambda: accepted.append(silent.accept()[0]), daemon=True).start()
    cfg = load_config(mysql_pipeline(tmp_path, "silent", dsn(silent.getsockname()[1])))
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            run_pipeline(cfg, until_caught_up=True, interval=0.05)
        except BaseException as exc:  # noqa: BLE001 - checked below
            outcome.append(exc)

    runner = threading.Thread(target=run)
    runner.start()
    try:
        wait_for(lambda: accepted, what="the reader's connection")  # the reader is inside its open
        os.kill(actor_pid(actor_name("silent", "reader")), signal.SIGKILL)
        runner.join(timeout=120)
    finally:
        silent.close()
        for conn in accepted:
            conn.close()
    assert len(outcome) == 1 and isinstance(outcome[0], DbusError), outcome
    text = str(outcome[0])
    assert text.startswith("pipeline silent cannot start: its reader died (actor died: ") and "\n" not in text, text


@pytest.fixture(scope="module")
def spare_mariadb() -> Iterator[MariaDB]:
    """A private MariaDB of this module's own: its binlog gets purged."""
    server = MariaDB(server_id=2).start()
    try:
        yield server
    finally:
        server.stop()


def test_binlog_off(tmp_path: Path) -> None:
    server = MariaDB(extra_args=["--skip-log-bin"]).start()
    try:
        path = mysql_pipeline(tmp_path, "nobinlog", dsn(server.port, password=server.password))
        message = error_of(invoke("run", str(path), "--until-caught-up"), 1)
        port = server.port
    finally:
        server.stop()
    check(message, rf"error: pipeline nobinlog cannot start: binary log is off on 127.0.0.1:{port}; "
                   r"start the server with log_bin=ON \(in my.cnf, needs a restart\)")


def test_purged_start_position(tmp_path: Path, spare_mariadb: MariaDB) -> None:
    conn = spare_mariadb.root_connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW MASTER STATUS")
            first = cur.fetchone()[0]
            cur.execute("FLUSH BINARY LOGS")
            cur.execute("SHOW MASTER STATUS")
            now = cur.fetchone()[0]

            def purged() -> bool:  # MariaDB keeps a file until its binlog checkpoint is written: retry
                cur.execute(f"PURGE BINARY LOGS TO '{now}'")
                cur.execute("SHOW BINARY LOGS")
                return first not in [r[0] for r in cur.fetchall()]

            wait_for(purged, timeout=30, what=f"{first} purged", every=0.1)
    finally:
        conn.close()
    path = mysql_pipeline(tmp_path, "purged", dsn(spare_mariadb.port, password=spare_mariadb.password),
                          start=f"{first}:4")
    check(error_of(invoke("run", str(path), "--until-caught-up"), 1),
          rf"error: pipeline purged cannot start: binlog file {re.escape(first)} \(start {re.escape(first)}:4\) is no "
          rf"longer on 127.0.0.1:{spare_mariadb.port} \(purged\? oldest is {re.escape(now)}\): restart from "
          r"`start: earliest` or a snapshot \(the rows in between are lost\) after removing the pipeline's checkpoint")


def test_server_id_clash_between_readers(spare_mariadb: MariaDB) -> None:
    """Two readers with one server_id on one server: the server drops the older binlog connection each time
    the other one connects: the reader thrown out fails with one line instead of reconnecting (see
    docs/operations.md; tests/integration/test_mysql_faults.py has the other cases)."""
    from dbus_ray.errors import DbusError
    from dbus_ray.mysql.source import MysqlOptions, MysqlSource

    a = MysqlSource("clash-a", MysqlOptions(dsn=spare_mariadb.dsn, server_id=4242))
    b = MysqlSource("clash-b", MysqlOptions(dsn=spare_mariadb.dsn, server_id=4242))
    a.open(None)
    b.open(None)
    try:
        with pytest.raises(DbusError) as err:
            for _ in range(200):
                a.poll(10, 1)
                b.poll(10, 1)
    finally:
        a.close()
        b.close()
    check(str(err.value), rf"server_id 4242 is used by another replica of 127.0.0.1:{spare_mariadb.port}, which took "
                          r"over the binlog connection: give each pipeline and replica its own source.server_id, or "
                          r"use server_id: auto")


# ------------------------------------------------------------------------------------------ sinks


def mock_pipeline(tmp_path: Path, name: str, sink: dict[str, Any], **source: Any) -> Path:
    return write(tmp_path, {"name": name, "source": {"type": "mock", "rows": 100, **source}, "sinks": [sink]})


def test_topic_not_creatable(tmp_path: Path, broker: Any) -> None:
    path = mock_pipeline(tmp_path, "notopic", {"name": "k", "type": "kafka", "bootstrap": broker.bootstrap,
                                                "topic": "bad-input-none", "create_topics": False})
    check(error_of(invoke("run", str(path), "--until-caught-up"), 1),
          r"error: pipeline notopic cannot start: kafka sink k: topic bad-input-none does not exist "
          r"\(create_topics is off\)")


def test_oversized_row(tmp_path: Path, mariadb: MariaDB, broker: Any) -> None:
    """A 2 MB BLOB row: more than librdkafka's default message.max.bytes (1 MB)."""
    table = f"big_{uuid.uuid4().hex[:8]}"
    conn = mariadb.root_connect("dbus_test")
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE TABLE {table} (id INT PRIMARY KEY, b LONGBLOB)")
            cur.execute("SHOW MASTER STATUS")
            file, pos = cur.fetchone()[:2]
            cur.execute(f"INSERT INTO {table} VALUES (1, REPEAT('x', 2000000))")
    finally:
        conn.close()
    path = write(tmp_path, {
        "name": "oversized",
        "source": {"type": "mysql", "dsn": dsn(mariadb.port, password=mariadb.password), "start": f"{file}:{pos}",
                   "include": [f"dbus_test.{table}"]},
        "sinks": [{"name": "k", "type": "kafka", "bootstrap": broker.bootstrap, "topic": "bad-input-big"}],
    })
    check(error_of(invoke("run", str(path), "--until-caught-up"), 1),
          r"error: pipeline oversized failed: sink k \(kafka\): topic bad-input-big: cannot produce row at "
          rf"\{{\"file\":\"{re.escape(file)}\",\"offset\":\d+,\"gtid\":\"[\d-]+\",\"index\":0\}} "
          rf"of table dbus_test\.{table}, key \{{\"id\":1\}}: "
          r"Unable to produce message: Broker: Message size too large \(MSG_SIZE_TOO_LARGE\); the message is "
          r"\d{7} bytes, the limit 1000000: raise the sink's producer: message.max.bytes "
          r"\(and the topic's max.message.bytes\) or set on_oversize: dead_letter")


def test_sink_path_not_writable(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    target = tmp_path / "file" / "out.jsonl"  # a directory that is a file
    path = mock_pipeline(tmp_path, "nowrite", {"name": "disk", "type": "jsonl", "path": str(target)})
    check(error_of(invoke("run", str(path), "--until-caught-up"), 1),
          rf"error: pipeline nowrite cannot start: \[Errno 17\] File exists: '{re.escape(str(tmp_path / 'file'))}'")


# ------------------------------------------------------------------------------------------ Ray and the CLI


def test_pipeline_already_running(tmp_path: Path) -> None:
    from dbus_ray.config import load_config
    from dbus_ray.pipeline import Pipeline

    path = mock_pipeline(tmp_path, "twice", {"name": "n", "type": "null"}, rows=None, rate=100)
    first = Pipeline(load_config(path))
    first.start()
    try:
        message = error_of(invoke("run", str(path), "--until-caught-up"), 1)
    finally:
        first.stop()
    check(message, r"error: pipeline twice is already running \(actor dbus:twice:reader exists\)")


@pytest.mark.parametrize("args, expected", [
    (["status", "nope"], "error: no pipeline named 'nope'"),
    (["pause", "nope"], "error: no pipeline named 'nope'"),
    (["remove", "nope"], "error: no pipeline named 'nope'"),
    (["checkpoint", "show", "nope"], "error: no pipeline named 'nope'"),
    (["checkpoint", "set", "nope", "binlog.000001:4", "--yes"], "error: no pipeline named 'nope'"),
    (["peek", "nope"], "error: pipeline nope is not running"),
    (["dag", "nope"], "error: no pipeline named 'nope'"),
])
def test_unknown_pipeline(controller: Any, args: list[str], expected: str) -> None:
    check(error_of(invoke(*args), 2), re.escape(expected))


def test_server_id_taken_by_another_pipeline(controller: Any, tmp_path: Path, mariadb: MariaDB) -> None:
    first = mysql_pipeline(tmp_path, "sid-a", dsn(mariadb.port, password=mariadb.password), server_id=4343)
    second = mysql_pipeline(tmp_path, "sid-b", dsn(mariadb.port, password=mariadb.password), server_id=4343)
    assert invoke("submit", str(first)).exit_code == 0
    check(error_of(invoke("submit", str(second)), 2),
          r"error: pipeline sid-b: server_id 4343 is already used by pipeline sid-a")


def dbus_without_ray(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`dbus ARGS` in its own process (this one is attached to the session's Ray). Only with an address
    that has no Ray behind it: with none, Ray's `auto` would find the session's Ray (it scans processes)."""
    env = {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, **env}
    return subprocess.run([sys.executable, "-m", "dbus_ray.cli", *args], env=env, capture_output=True, text=True,
                          timeout=60, check=False)


@pytest.mark.parametrize("how", ["--address", "RAY_ADDRESS"])
def test_no_ray_cluster_for_submit(tmp_path: Path, how: str) -> None:
    path = mock_pipeline(tmp_path, "noray", {"name": "n", "type": "null"})
    port = free_port()
    if how == "--address":
        done = dbus_without_ray(tmp_path, {}, "submit", str(path), "--address", f"127.0.0.1:{port}")
    else:
        done = dbus_without_ray(tmp_path, {"RAY_ADDRESS": f"127.0.0.1:{port}"}, "submit", str(path))
    assert done.returncode == 3, done.stderr
    check(done.stderr.strip().splitlines()[-1],
          rf"error: no Ray cluster at 127.0.0.1:{port}: nothing answers on 127.0.0.1:{port} \(Connection refused\); "
          r"start one with `ray start --head`, or fix --address / RAY_ADDRESS")
