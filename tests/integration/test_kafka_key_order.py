"""One key order for a row wherever it was read: a table whose PRIMARY KEY (b, a) is not in column order (a,
b, v) is snapshotted into Kafka, then its rows change; read back with Apache Kafka's own Java consumer
(tests/support/KafkaDump.java), a row's snapshot message and the messages of its later changes have equal key
bytes, in the key's order (`{"b":..,"a":..}`), and land in one partition, for the row formats (json, avro,
debezium, whose key struct follows the key's order too); the arrow format's runs and the Parquet files
carry `dbus.key` ["b", "a"]. A key change goes out as a delete of the old key and an insert of the new. A key
with a prefix column keys binlog rows too (it was lost: such a table's binlog rows had an empty key)."""

from __future__ import annotations

import io
import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dbus_ray.config import parse_config
from dbus_ray.devstack.kafka import _java, kafka_libs
from dbus_ray.pipeline import run_pipeline
from tests.support.helpers import execute
from tests.support.topics import partition_of

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_session")]

DB = "dbus_test"
PARTITIONS = 6
ROWS = [(i, f"k{i % 3}", f"v{i}") for i in range(12)]  # (a, b, v)
DUMP = Path(__file__).parents[1] / "support" / "KafkaDump.java"


def dump(bootstrap: str, topic: str) -> list[tuple[int, bytes | None, bytes | None]]:
    """(partition, key, value) of every message of `topic`, in offset order per partition, as Kafka's Java
    consumer reads them."""
    proc = subprocess.run([_java(), "-cp", f"{kafka_libs()}/*", str(DUMP), bootstrap, topic],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = []
    for line in proc.stdout.splitlines():
        partition, _, key, value = line.split("\t")
        out.append((int(partition), None if key == "-" else bytes.fromhex(key),
                    None if value == "-" else bytes.fromhex(value)))
    return out


def key_bytes(b: str, a: int) -> bytes:
    """The expected message key of row (a, b): the primary key's columns in the key's order, compact JSON."""
    return f'{{"b":"{b}","a":{a}}}'.encode()


def ordered(data: bytes) -> Any:
    return json.loads(data, object_pairs_hook=list)


@pytest.mark.parametrize("fmt", ["json", "avro", "debezium", "arrow", "json-update"])
def test_snapshot_and_stream_messages_of_a_row_have_one_key(tmp_path: Path, mariadb: Any, root: Any, broker: Any,
                                                           fmt: str) -> None:
    """`json-update`: format json with the source's `key_change: update`."""
    fmt, _, key_change = fmt.partition("-")
    t = f"keyorder_{fmt}_{uuid.uuid4().hex[:6]}"
    execute(root, f"CREATE TABLE {t} (a INT NOT NULL, b VARCHAR(8) NOT NULL, v VARCHAR(20), PRIMARY KEY (b, a))",
            *(f"INSERT INTO {t} VALUES ({a}, '{b}', '{v}')" for a, b, v in ROWS))
    root.commit()
    name = f"keyorder-{fmt}-{uuid.uuid4().hex[:6]}"
    topic = f"{name}.{t}" if fmt != "debezium" else f"{name}.{DB}.{t}"
    sink: dict[str, Any] = {"name": "k", "type": "kafka", "bootstrap": broker.bootstrap, "format": fmt,
                            "partitions": PARTITIONS}
    if fmt == "debezium":
        sink["debezium"] = {"topic_prefix": name}
    else:
        sink["topic"] = topic
    if fmt in ("json", "avro"):
        sink["tombstones"] = True  # (debezium's own tombstones_on_delete is on by default)
    raw = {"name": name,
           "source": {"type": "mysql", "dsn": "mysql://dbus:${PW}@127.0.0.1:" + str(mariadb.port),
                      "snapshot": "initial", "include": [f"{DB}.{t}"], "key_change": key_change or "delete_insert"},
           "sinks": [sink, {"name": "pq", "type": "parquet", "path": str(tmp_path / "pq")}],
           "data_dir": str(tmp_path / "data")}
    cfg = parse_config(raw, f"{name}.yaml", {"PW": mariadb.password})
    assert run_pipeline(cfg, until_caught_up=True, interval=0.1)["error"] is None  # the snapshot
    execute(root, f"UPDATE {t} SET v = CONCAT(v, '+')",  # every row changes once
            f"UPDATE {t} SET b = 'moved' WHERE a = 4")  # and row (4, 'k1') changes its key
    root.commit()
    assert run_pipeline(cfg, until_caught_up=True, interval=0.1)["error"] is None  # the stream

    tables = [pq.read_table(f) for f in sorted((tmp_path / "pq").rglob("*.parquet"))]
    rows = [table for table in tables if set(table.column("op").to_pylist()) != {"ddl"}]  # not the markers
    split = set() if key_change == "update" else {"delete", "insert"}
    assert {op for table in rows for op in table.column("op").to_pylist()} == {"read", "update"} | split
    assert {table.schema.metadata[b"dbus.key"] for table in rows} == {b'["b", "a"]'}
    messages = dump(broker.bootstrap, topic)
    if fmt == "arrow":
        runs = [pa.ipc.open_stream(io.BytesIO(value)).read_all() for _, _, value in messages]
        runs = [run for run in runs if set(run.column("op").to_pylist()) != {"ddl"}]  # not the markers
        ops = [op for run in runs for op in run.column("op").to_pylist()]
        assert ops == ["read"] * len(ROWS) + ["update"] * len(ROWS) + ["delete", "insert"]
        assert {run.schema.metadata[b"dbus.key"] for run in runs} == {b'["b", "a"]'}
        assert {key for _, key, _ in messages} == {json.dumps({"db": DB, "table": t}, separators=(",", ":")).encode()}
        return

    by_key: dict[bytes, list[tuple[int, str]]] = {}
    for partition, key, value in messages:
        if key is None:  # the snapshot's start and end markers (no row, no key)
            assert fmt != "json" or json.loads(value)["op"] == "ddl", value
            continue
        if fmt == "debezium":
            assert key is not None
            envelope = ordered(key)
            payload = dict(envelope)["payload"]
            assert [k for k, _ in payload] == ["b", "a"], key  # Debezium's key struct in the key's order
            schema_fields = [dict(f)["field"] for f in dict(dict(envelope)["schema"])["fields"]]
            assert schema_fields == ["b", "a"]
            key = key_bytes(dict(payload)["b"], dict(payload)["a"])
            op = "tombstone" if value is None else dict(dict(ordered(value))["payload"])["op"]
        else:
            op = "tombstone" if value is None else (json.loads(value)["op"] if fmt == "json" else "row")
        by_key.setdefault(key, []).append((partition, op))

    expected = {key_bytes(b, a) for a, b, _ in ROWS} | {key_bytes("moved", 4)}
    assert set(by_key) == expected
    for key, seen in by_key.items():
        partitions = {p for p, _ in seen}
        assert len(partitions) == 1, f"key {key!r} in partitions {partitions}"
        if fmt != "debezium":  # the topic's partition is Kafka's murmur2 of the key bytes
            assert partitions == {partition_of(key, PARTITIONS)}, key
    ops = {key: [op for _, op in seen] for key, seen in by_key.items()}
    read, update, delete, insert = {"json": ("read", "update", "delete", "insert"), "avro": ("row",) * 4,
                                    "debezium": ("r", "u", "d", "c")}[fmt]
    old, new = key_bytes("k1", 4), key_bytes("moved", 4)
    if key_change == "update":  # one update keyed by the new key, after a tombstone of the old key
        assert (ops.pop(old), ops.pop(new)) == ([read, update, "tombstone"], [update])
    else:
        assert ops.pop(old) == [read, update, delete, "tombstone"]  # the key change's old key: deleted, tombstoned
        assert ops.pop(new) == [insert]
    assert ops == {key_bytes(b, a): [read, update] for a, b, _ in ROWS if a != 4}


def test_a_key_with_a_prefix_column_keys_binlog_rows_in_its_order(mariadb: Any, root: Any) -> None:
    """PRIMARY KEY (b(4), a): the TABLE_MAP lists it as PRIMARY_KEY_WITH_PREFIX (not SIMPLE_PRIMARY_KEY); the
    rows are keyed by it, in its order, as the snapshot keys them."""
    from dbus_ray.mysql.source import MysqlOptions, MysqlSource
    from tests.support.helpers import drain, position

    t = f"keyprefix_{uuid.uuid4().hex[:6]}"
    execute(root, f"CREATE TABLE {t} (a INT NOT NULL, b VARCHAR(20) NOT NULL, v INT, PRIMARY KEY (b(4), a))")
    start = position(root)
    execute(root, f"INSERT INTO {t} VALUES (1, 'long text', 10)", f"UPDATE {t} SET v = 11")
    root.commit()
    src = MysqlSource("key-prefix", MysqlOptions(dsn=mariadb.dsn, server_id=7411, start=start,
                                                 include=[f"{DB}.{t}"], snapshot="initial"))
    src.open(None)
    try:
        rows = [r for b in drain(src) for r in b.records() if r["op"] != "ddl"]
    finally:
        src.close()
    # (the snapshot's stream starts after the writes): the binlog rows from a second source started at `start`
    src = MysqlSource("key-prefix", MysqlOptions(dsn=mariadb.dsn, server_id=7411, start=start,
                                                 include=[f"{DB}.{t}"]))
    src.open(None)
    try:
        rows += [r for b in drain(src) for r in b.records() if r["op"] != "ddl"]
    finally:
        src.close()
    assert [(r["op"], list(r["key"].items())) for r in rows] == [
        ("read", [("b", "long text"), ("a", 1)]),
        ("insert", [("b", "long text"), ("a", 1)]), ("update", [("b", "long text"), ("a", 1)])]
