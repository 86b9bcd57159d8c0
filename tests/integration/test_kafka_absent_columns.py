"""Row images that leave columns out (binlog_row_image MINIMAL/NOBLOB: the row's `absent`) through the `kafka`
sink, against the session's real MariaDB and Apache Kafka broker: formats `avro` and `debezium`, which have no
field to tell an absent column from SQL NULL, refuse such a run with one line before any message of the batch
is produced (through Ray: the pipeline stops with it, no checkpoint); a `key` column neither image carries
stops the write with one line naming the column, the table, the op and the position, while a key column one
image lacks and the other carries gets the value the server's SELECT shows. FULL images go on as before."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pymysql
import pytest

from dbus_ray.checkpoints import FileCheckpointStore
from dbus_ray.config import build, parse_config
from dbus_ray.errors import DbusError
from dbus_ray.model import RowBatch
from dbus_ray.mysql.source import MysqlOptions, MysqlSource
from dbus_ray.pipeline import run_pipeline
from dbus_ray.serializers import get_serializer
from dbus_ray.sinks.kafka import KafkaOptions, KafkaSink
from tests.support.helpers import drain, execute, position, table_name
from tests.support.topics import read_topic

pytestmark = pytest.mark.integration

DB = "dbus_test"
FIX = "set binlog_row_image=FULL on the server, or key the sink on primary-key columns"


def format_error(fmt: str, t: str) -> str:
    return (f"format {fmt}: table {DB}.{t} has row images without some columns (binlog_row_image MINIMAL/NOBLOB): "
            "the format needs binlog_row_image=FULL (format json names them in absent)")


def changes(mariadb: Any, t: str, full: list[str], minimal: list[str]) -> RowBatch:
    """Table `t` (`id` its primary key, `tenant`, `name`, `n`), `full`'s statements
    written with binlog_row_image FULL, then `minimal`'s with MINIMAL (in one session of their own), read back
    by the mysql source: one batch of the table's runs."""
    conn = mariadb.root_connect(DB)
    try:
        execute(conn, f"CREATE TABLE {t} (id INT PRIMARY KEY, tenant VARCHAR(10), name VARCHAR(20), n INT)")
        start = position(conn)
        execute(conn, *full, "SET SESSION binlog_row_image = 'MINIMAL'", *minimal)
    finally:
        conn.close()
    src = MysqlSource("absent-test", MysqlOptions(dsn=mariadb.dsn, server_id=7311, start=start,
                                                  include=[f"{DB}.{t}"]))
    src.open(None)
    try:
        parts = [p for b in drain(src) for p in b.parts]
    finally:
        src.close()
    return RowBatch("p", 1, parts, None)


def records(batch: RowBatch) -> list[dict[str, Any]]:
    return [r for part in batch.parts for r in part.records("p")]


def select(root: Any, t: str) -> list[dict[str, Any]]:
    with root.cursor(pymysql.cursors.DictCursor) as cur:
        cur.execute(f"SELECT * FROM {t} ORDER BY id")
        return list(cur.fetchall())


def open_sink(broker: Any, topic: str, **options: Any) -> KafkaSink:
    raw = {"bootstrap": broker.bootstrap, "topic": topic, "partitions": 1, **options}
    if options.get("format") == "debezium":
        raw["debezium"] = {"topic_prefix": topic, "schemas_enable": False}
    sink = KafkaSink("p", "k", build(KafkaOptions, raw, "sinks[0]"))
    sink.open()
    return sink


def messages(broker: Any, topic: str) -> list[tuple[Any, Any]]:
    """(key, value) of every message of `topic`, both as JSON (None for a null one)."""
    return [(m.key() and json.loads(m.key()), m.value() and json.loads(m.value()))
            for m in read_topic(broker.bootstrap, topic, idle=0.5, missing_ok=True)]


INSERTS = ["INSERT INTO {t} VALUES (1, 'a', 'one', 10), (2, 'a', 'two', 20), (3, 'b', 'three', 30)"]


# ------------------------------------------------------------------------------------------ avro, debezium


@pytest.mark.parametrize("fmt", ["avro", "debezium"])
def test_a_format_without_absent_refuses_the_run_and_produces_nothing(mariadb: Any, broker: Any, fmt: str) -> None:
    """FULL rows, then a MINIMAL update (its before image the key only, its after image the changed column):
    the write fails with the line, and not even the FULL rows before it go out; the serializer alone says the
    same of the run."""
    t = table_name("absfmt")
    batch = changes(mariadb, t, [INSERTS[0].format(t=t)], [f"UPDATE {t} SET name = 'uno' WHERE id = 1"])
    assert [r["op"] for r in records(batch)] == ["insert"] * 3 + ["update"]
    assert records(batch)[-1]["absent"] == {"before": ["tenant", "name", "n"], "after": ["id", "tenant", "n"]}
    topic = f"absent-{fmt}-{t}".replace("_", "-")
    sink = open_sink(broker, topic, format=fmt)
    with pytest.raises(DbusError) as info:
        sink.write(batch)
    assert str(info.value) == format_error(fmt, t)
    sink.close()
    assert messages(broker, f"{topic}.{DB}.{t}" if fmt == "debezium" else topic) == []
    options = {"options": sink.options.debezium} if fmt == "debezium" else {}
    for part in batch.parts:
        if "absent" in part.data.schema.names:
            with pytest.raises(DbusError) as info:
                get_serializer(fmt, **options).encode(part, "p")
            assert str(info.value) == format_error(fmt, t)


@pytest.mark.parametrize("fmt", ["avro", "debezium"])
def test_full_images_go_out_as_before(mariadb: Any, root: Any, broker: Any, fmt: str) -> None:
    """FULL images only (no `absent`): every row goes out, its after image the row the server's SELECT shows."""
    t = table_name("absfull")
    batch = changes(mariadb, t, [INSERTS[0].format(t=t), f"UPDATE {t} SET name = 'uno' WHERE id = 1"], [])
    assert all("absent" not in part.data.schema.names for part in batch.parts)
    topic = f"absent-full-{fmt}-{t}".replace("_", "-")
    sink = open_sink(broker, topic, format=fmt)
    sink.write(batch)
    sink.close()
    if fmt == "debezium":
        got = [v["after"] for _, v in messages(broker, f"{topic}.{DB}.{t}")]
    else:
        got = [sink.serializer.decode(m.value(), batch.parts[0])["after"]
               for m in read_topic(broker.bootstrap, topic)]
    rows = {r["id"]: r for r in select(root, t)}
    assert [g["id"] for g in got] == [1, 2, 3, 1]
    assert got[3] == rows[1] and got[1:3] == [rows[2], rows[3]]


@pytest.mark.usefixtures("ray_session")
@pytest.mark.parametrize("fmt", ["avro", "debezium"])
def test_pipeline_stops_with_the_line_and_no_checkpoint(tmp_path: Path, mariadb: Any, root: Any, broker: Any,
                                                        fmt: str) -> None:
    """A MINIMAL delete (its before image the key only) through Ray: the sink's batch fails, the pipeline stops
    with the line, nothing is delivered or produced, and no checkpoint is saved."""
    t = table_name("abspipe")
    execute(root, f"CREATE TABLE {t} (id INT PRIMARY KEY, tenant VARCHAR(10), name VARCHAR(20), n INT)",
            INSERTS[0].format(t=t))
    start = position(root)
    conn = mariadb.root_connect(DB)
    try:
        execute(conn, "SET SESSION binlog_row_image = 'MINIMAL'", f"DELETE FROM {t} WHERE id = 3")
    finally:
        conn.close()
    topic = f"absent-pipe-{fmt}-{t}".replace("_", "-")
    sink: dict[str, Any] = {"name": "k", "type": "kafka", "bootstrap": broker.bootstrap, "topic": topic,
                            "format": fmt}
    if fmt == "debezium":
        sink["debezium"] = {"topic_prefix": topic, "schemas_enable": False}
    raw = {"name": topic, "sinks": [sink], "data_dir": str(tmp_path / "data"),
           "source": {"type": "mysql", "dsn": "mysql://dbus:${PW}@127.0.0.1:" + str(mariadb.port),
                      "start": start, "include": [f"{DB}.{t}"]}}
    cfg = parse_config(raw, "absent.yaml", {"PW": mariadb.password})
    final = run_pipeline(cfg, until_caught_up=True, interval=0.05)
    assert final["state"] == "failed"
    assert final["error"] == f"sink k (kafka): {format_error(fmt, t)}"
    assert final["rows_delivered"] == 0
    assert FileCheckpointStore(cfg.pipeline_dir).load() is None
    assert messages(broker, f"{topic}.{DB}.{t}" if fmt == "debezium" else topic) == []


# ------------------------------------------------------------------------------------------ the sink's key


def key_error(column: str, t: str, record: dict[str, Any], old: bool = False) -> str:
    pos = f"{record['pos']['file']}:{record['pos']['offset']}"
    where = (f"not in the before image of the {record['op']} at {pos}, whose old key the tombstone needs" if old
             else f"in no row image of the {record['op']} at {pos}")
    return (f"sink key column {column!r} of table {DB}.{t} is {where} (binlog_row_image MINIMAL/NOBLOB left it "
            f"out): {FIX}")


def test_a_key_column_neither_image_carries_stops_the_write(mariadb: Any, broker: Any) -> None:
    """`key: [tenant]`: a MINIMAL update of `name` has `tenant` in neither image (before: the key only,
    after: `name`), so the message key cannot be known: one line, and the row does not go out."""
    t = table_name("abskey")
    batch = changes(mariadb, t, [], [INSERTS[0].format(t=t), f"UPDATE {t} SET name = 'uno' WHERE id = 1"])
    [*inserts, update] = records(batch)
    assert "absent" not in inserts[0] and update["absent"]["before"] == ["tenant", "name", "n"]
    topic = f"absent-key-{t}".replace("_", "-")
    sink = open_sink(broker, topic, format="json", key=["tenant"])
    with pytest.raises(DbusError) as info:
        sink.write(batch)
    assert str(info.value) == key_error("tenant", t, update)
    sink.close()
    assert [k for k, _ in messages(broker, topic)] == [{"tenant": "a"}, {"tenant": "a"}, {"tenant": "b"}]


def test_a_minimal_insert_without_the_key_column_stops_the_write(mariadb: Any, broker: Any) -> None:
    """A MINIMAL insert logs the columns the statement set only: `tenant`'s value (its default) is in no image."""
    t = table_name("abskeyins")
    batch = changes(mariadb, t, [], [f"INSERT INTO {t} (id, name) VALUES (1, 'one')"])
    [insert] = records(batch)
    assert insert["absent"] == {"after": ["tenant", "n"]}
    topic = f"absent-key-ins-{t}".replace("_", "-")
    sink = open_sink(broker, topic, format="json", key=["tenant", "id"])
    with pytest.raises(DbusError) as info:
        sink.write(batch)
    assert str(info.value) == key_error("tenant", t, insert)
    sink.close()
    assert messages(broker, topic) == []


def test_the_old_key_of_a_tombstone_needs_the_before_image(mariadb: Any, broker: Any) -> None:
    """`tombstones: true` with `key: [tenant]`: a MINIMAL update that sets `tenant` has the new value, but its
    before image has no `tenant`, so the old key (whose tombstone it would send) is not known."""
    t = table_name("abstomb")
    batch = changes(mariadb, t, [INSERTS[0].format(t=t)], [f"UPDATE {t} SET tenant = 'c' WHERE id = 1"])
    update = records(batch)[-1]
    assert update["absent"] == {"before": ["tenant", "name", "n"], "after": ["id", "name", "n"]}
    topic = f"absent-tomb-{t}".replace("_", "-")
    sink = open_sink(broker, topic, format="json", key=["tenant"], tombstones=True)
    with pytest.raises(DbusError) as info:
        sink.write(batch)
    assert str(info.value) == key_error("tenant", t, update, old=True)
    sink.close()
    assert [k for k, _ in messages(broker, topic)] == [{"tenant": "a"}, {"tenant": "a"}, {"tenant": "b"}]


def test_a_key_column_the_other_image_carries_keys_the_row(mariadb: Any, root: Any, broker: Any) -> None:
    """`key: [id]` and tombstones: a MINIMAL update's after image lacks the unchanged `id`, its before image has
    it: the message is keyed by the row's `id` (as SELECT shows it), and no tombstone goes out (the key did not
    change)."""
    t = table_name("absother")
    batch = changes(mariadb, t, [INSERTS[0].format(t=t)], [f"UPDATE {t} SET name = 'uno' WHERE id = 2"])
    assert records(batch)[-1]["absent"]["after"] == ["id", "tenant", "n"]
    topic = f"absent-other-{t}".replace("_", "-")
    sink = open_sink(broker, topic, format="json", key=["id"], tombstones=True)
    sink.write(batch)
    sink.close()
    got = messages(broker, topic)
    assert [k for k, _ in got] == [{"id": 1}, {"id": 2}, {"id": 3}, {"id": 2}]
    assert all(v is not None for _, v in got)  # no tombstone
    assert got[-1][0] == {"id": [r["id"] for r in select(root, t) if r["name"] == "uno"][0]}


def test_each_key_column_comes_from_the_image_that_carries_it(mariadb: Any, root: Any, broker: Any) -> None:
    """`key: [tenant, id]`: a MINIMAL update that sets `tenant` carries it in its after image only, and the
    unchanged `id` in its before image only: the key has both, as the server's SELECT shows the row. (A table
    without a primary key gets whole images from MariaDB's MINIMAL: nothing absent there.)"""
    t = table_name("absboth")
    batch = changes(mariadb, t, [INSERTS[0].format(t=t)], [f"UPDATE {t} SET tenant = 'z' WHERE id = 2"])
    update = records(batch)[-1]
    assert update["absent"] == {"before": ["tenant", "name", "n"], "after": ["id", "name", "n"]}
    topic = f"absent-both-{t}".replace("_", "-")
    sink = open_sink(broker, topic, format="json", key=["tenant", "id"])
    sink.write(batch)
    sink.close()
    [row] = [r for r in select(root, t) if r["id"] == 2]
    assert [k for k, _ in messages(broker, topic)] == [
        {"tenant": "a", "id": 1}, {"tenant": "a", "id": 2}, {"tenant": "b", "id": 3},
        {"tenant": row["tenant"], "id": row["id"]}]
    assert row["tenant"] == "z"


def test_full_images_keep_their_keys(mariadb: Any, root: Any, broker: Any) -> None:
    """FULL images: `key: [tenant]` with tombstones keys each row by its image, a key change tombstones the old."""
    t = table_name("abskeyfull")
    batch = changes(mariadb, t, [INSERTS[0].format(t=t), f"UPDATE {t} SET tenant = 'c' WHERE id = 1",
                                 f"DELETE FROM {t} WHERE id = 3"], [])
    topic = f"absent-keyfull-{t}".replace("_", "-")
    sink = open_sink(broker, topic, format="json", key=["tenant"], tombstones=True)
    sink.write(batch)
    sink.close()
    got = [(k, v and v["op"]) for k, v in messages(broker, topic)]
    assert got == [({"tenant": "a"}, "insert"), ({"tenant": "a"}, "insert"), ({"tenant": "b"}, "insert"),
                   ({"tenant": "a"}, None), ({"tenant": "c"}, "update"), ({"tenant": "b"}, "delete"),
                   ({"tenant": "b"}, None)]
    assert {r["tenant"] for r in select(root, t)} == {"a", "c"}
