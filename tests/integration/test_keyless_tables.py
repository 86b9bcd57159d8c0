"""Tables without a primary key: warned about once, sent with a null Kafka key (the producer's partitioner
spreads them; librdkafka's sticky partitioner keeps a burst in one partition),
or keyed by `message_key_columns` (MariaDB, broker and Ray for real; keys read back by Kafka's consumer)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from dbus_ray.cli import app
from dbus_ray.devstack import MariaDB
from tests.support.topics import read_topic

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_session")]


def messages(bootstrap: str, topic: str) -> list[tuple[int, bytes | None, dict[str, Any]]]:
    """(partition, key, value) of every message of `topic`, read by a plain consumer."""
    return [(m.partition(), m.key(), json.loads(m.value())) for m in read_topic(bootstrap, topic)]


def run(tmp_path: Path, mariadb: MariaDB, broker: Any, table: str, start: str, topic: str,
        **source: Any) -> Any:
    raw = {"name": f"keyless-{uuid.uuid4().hex[:6]}",
           "source": {"type": "mysql", "dsn": f"mysql://{mariadb.user}:{mariadb.password}@127.0.0.1:{mariadb.port}",
                      "start": start, "include": [f"dbus_test.{table}"], **source},
           "sinks": [{"name": "k", "type": "kafka", "bootstrap": broker.bootstrap, "topic": topic, "partitions": 4}],
           "data_dir": str(tmp_path / "data")}
    path = tmp_path / f"{raw['name']}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return CliRunner().invoke(app, ["run", str(path), "--until-caught-up"])


@pytest.fixture
def keyless(mariadb: MariaDB) -> tuple[str, str]:
    """A table without a key and 40 rows written to it; (table, binlog position before them)."""
    table = f"nokey_{uuid.uuid4().hex[:8]}"
    conn = mariadb.root_connect("dbus_test")
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE TABLE {table} (ts INT NOT NULL, id INT NOT NULL, note VARCHAR(20))")
            cur.execute("SHOW MASTER STATUS")
            file, pos = cur.fetchone()[:2]
            cur.executemany(f"INSERT INTO {table} VALUES (%s, %s, %s)", [(i // 4, i, f"n{i}") for i in range(40)])
            conn.commit()
    finally:
        conn.close()
    return table, f"{file}:{pos}"


def test_a_keyless_table_goes_out_with_null_keys_and_one_warning(
    tmp_path: Path, mariadb: MariaDB, broker: Any, keyless: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    table, start = keyless
    topic = f"keyless-{uuid.uuid4().hex[:6]}"
    result = run(tmp_path, mariadb, broker, table, start, topic)
    warned = [line for line in result.output.splitlines() if f"table dbus_test.{table} has no primary key" in line]
    assert len(warned) <= 1, result.output  # the reader's log line, when Ray forwards it
    assert result.exit_code == 0, result.output
    got = messages(broker.bootstrap, topic)
    assert sorted(v["after"]["id"] for _, _, v in got) == list(range(40))
    assert {k for _, k, _ in got} == {None}, "a keyless table's messages carry a null key"
    assert all(v["key"] == {} for _, _, v in got)


def test_message_key_columns_key_a_keyless_table(tmp_path: Path, mariadb: MariaDB, broker: Any,
                                                 keyless: tuple[str, str]) -> None:
    table, start = keyless
    topic = f"keyed-{uuid.uuid4().hex[:6]}"
    result = run(tmp_path, mariadb, broker, table, start, topic,
                 message_key_columns={f"dbus_test.{table}": ["ts", "id"]})
    assert result.exit_code == 0, result.output
    got = messages(broker.bootstrap, topic)
    assert len(got) == 40
    for _, key, value in got:
        assert json.loads(key) == {"ts": value["after"]["ts"], "id": value["after"]["id"]} == value["key"]


def test_message_key_columns_naming_a_missing_column_stop_the_pipeline_in_one_line(
    tmp_path: Path, mariadb: MariaDB, broker: Any, keyless: tuple[str, str]
) -> None:
    table, start = keyless
    result = run(tmp_path, mariadb, broker, table, start, f"bad-{uuid.uuid4().hex[:6]}",
                 message_key_columns={"dbus_test.nokey_*": ["id", "nope"]})
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.output
    assert (f"source.message_key_columns['dbus_test.nokey_*']: table dbus_test.{table} has no column nope "
            "(it has id, note, ts)") in errors[0]


def test_a_tables_create_read_first_is_no_keyless_table(mariadb: MariaDB, caplog: pytest.LogCaptureFixture) -> None:
    """The stream reads each table's CREATE TABLE (a DDL row, no key) before its rows: only the table without a
    primary key is warned about, and a `message_key_columns` rule applies to the rows, not to the DDL row."""
    from dbus_ray.mysql.source import MysqlOptions, MysqlSource
    from tests.support.helpers import drain, execute, position

    tag = uuid.uuid4().hex[:8]
    keyed, bare, ruled = f"pk_{tag}", f"nopk_{tag}", f"ruled_{tag}"
    conn = mariadb.root_connect("dbus_test")
    try:
        start = position(conn)
        execute(conn, f"CREATE TABLE {keyed} (id INT PRIMARY KEY, note VARCHAR(20))",
                f"CREATE TABLE {bare} (id INT, note VARCHAR(20))", f"CREATE TABLE {ruled} (id INT, note VARCHAR(20))",
                *(f"INSERT INTO {t} VALUES (1, 'one')" for t in (keyed, bare, ruled)))
        conn.commit()
        for i in (2, 3):  # more rows of the keyless table, each its own transaction: still one warning
            execute(conn, f"INSERT INTO {bare} VALUES ({i}, 'more')")
            conn.commit()
    finally:
        conn.close()
    src = MysqlSource("create-first", MysqlOptions(dsn=mariadb.dsn, server_id=7409, start=start,
                                                   include=[f"dbus_test.*_{tag}"],
                                                   message_key_columns={f"dbus_test.{ruled}": ["note"]}))
    with caplog.at_level("WARNING", logger="dbus.mysql"):
        src.open(None)
        try:
            rows = [r for b in drain(src) for r in b.records()]
        finally:
            src.close()
    assert [(r["table"], r["op"], r["key"]) for r in rows if r["op"] != "ddl"] == [
        (keyed, "insert", {"id": 1}), (bare, "insert", {}), (ruled, "insert", {"note": "one"}),
        (bare, "insert", {}), (bare, "insert", {})]
    assert [r["table"] for r in rows if r["op"] == "ddl"] == [keyed, bare, ruled]  # each CREATE came first
    warned = [r.getMessage() for r in caplog.records if "has no primary key" in r.getMessage()]
    assert warned == [f"[create-first] table dbus_test.{bare} has no primary key: its row changes carry an empty "
                      "key (the kafka sink sends them with a null message key, spread over partitions without "
                      "per-key order); set source.message_key_columns to give it one"]
