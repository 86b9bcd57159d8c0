"""Sink `kafka` with `format: avro` and `schema_registry:` against a real registry (Apicurio Registry from the dev
stack, its Confluent-compatible API): a mysql -> kafka pipeline over the type-fidelity table, read back as any
Confluent consumer would (confluent-kafka's `AvroDeserializer`, the schema fetched from the registry by the id in
each message) and compared, column by column, with the text MariaDB's own SELECT gives for the same rows."""

from __future__ import annotations

import datetime as dt
import json
import struct
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from dbus_ray.config import ConfigError, parse_config
from dbus_ray.devstack.registry import SchemaRegistry
from tests.support.helpers import table_name
from tests.support.mysql_types import TYPE_ROWS, create_type_table
from tests.support.topics import read_topic

pytestmark = pytest.mark.integration

DB = "dbus_test"


@pytest.fixture(scope="module")
def registry() -> Iterator[SchemaRegistry]:
    server = SchemaRegistry().start()
    try:
        yield server
    finally:
        server.stop()


def pipeline_config(mariadb: Any, broker: Any, tmp_path: Path, name: str, start: str, table: str,
                    **sink: Any) -> Any:
    raw = {
        "name": name,
        "source": {"type": "mysql", "dsn": "mysql://dbus:${PW}@127.0.0.1:" + str(mariadb.port), "start": start,
                   "include": [f"{DB}.{table}"]},
        "sinks": [{"name": "kafka", "type": "kafka", "bootstrap": broker.bootstrap, "format": "avro", **sink}],
        "data_dir": str(tmp_path / "data"),
    }
    return parse_config(raw, "avro.yaml", {"PW": mariadb.password})


def select_text(mariadb: Any, t: str) -> tuple[list[dict[str, Any]], dict[str, tuple[int, int]]]:
    """The rows as MariaDB's SELECT sends them over the text protocol (no conversion: str, or bytes for binary
    columns) in a UTC session, and each column's (MySQL type code, decimals) from the result's metadata."""
    import pymysql

    conn = mariadb.root_connect(DB, conv={})
    try:
        with conn.cursor(pymysql.cursors.DictCursor) as cur:
            cur.execute("SET time_zone = '+00:00'")
            cur.execute(f"SELECT * FROM {t} ORDER BY id")
            rows = cur.fetchall()
            columns = {d[0]: (d[1], d[5]) for d in cur.description}
    finally:
        conn.close()
    return list(rows), columns


def _fraction(micros: int, digits: int) -> str:
    return f".{micros:06d}"[: digits + 1] if digits else ""


def as_text(value: Any, avro: Any, mysql_type: int, decimals: int) -> Any:
    """What MariaDB's SELECT prints for the value an Avro consumer read (`avro`: the field's Avro type, without
    its null branch), from the Avro value and the column's MySQL type alone. Bytes stay bytes; FLOAT and
    DOUBLE stay floats (MariaDB prints the shortest text of the float, compared by value)."""
    from pymysql.constants import FIELD_TYPE

    if value is None or isinstance(value, bytes | float):
        return value
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(avro, dict) and avro.get("dbus.type") == "duration-micros":  # TIME
        sign, micros = ("-" if value < 0 else ""), abs(value)
        seconds, frac = divmod(micros, 1_000_000)
        return f"{sign}{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}{_fraction(frac, decimals)}"
    if mysql_type == FIELD_TYPE.YEAR:
        return f"{value:04d}"
    if isinstance(value, str) and mysql_type in (FIELD_TYPE.DATE, FIELD_TYPE.DATETIME, FIELD_TYPE.TIMESTAMP):
        if value.startswith("0000-") or "-00" in value[:10]:
            return value  # a zero or partly zero date: MariaDB's own text, kept as a string
        value = dt.datetime.fromisoformat(value) if mysql_type != FIELD_TYPE.DATE else dt.date.fromisoformat(value)
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)  # the session's time zone is UTC
        return value.strftime("%Y-%m-%d %H:%M:%S") + _fraction(value.microsecond, decimals)
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def f32(x: float) -> float:
    return struct.unpack("<f", struct.pack("<f", x))[0]


def test_type_fidelity_through_a_real_registry(mariadb: Any, root: Any, broker: Any, registry: SchemaRegistry,
                                              ray_session: None, tmp_path: Path) -> None:
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.avro import AvroDeserializer
    from confluent_kafka.serialization import MessageField, SerializationContext
    from pymysql.constants import FIELD_TYPE

    from dbus_ray.pipeline import run_pipeline

    t = table_name("avro_types")
    start = create_type_table(root, t)
    topic = f"avro.{DB}.{t}"
    cfg = pipeline_config(mariadb, broker, tmp_path, f"avro-{t}".replace("_", "-"), start, t,
                          topic="avro.{db}.{table}", schema_registry=registry.url)
    final = run_pipeline(cfg, until_caught_up=True, interval=0.1)
    assert final["error"] is None and final["state"] == "stopped"

    client = SchemaRegistryClient({"url": registry.url})
    assert f"{topic}-value" in client.get_subjects()  # TopicNameStrategy, the default
    msgs = read_topic(broker.bootstrap, topic)
    assert len(msgs) == len(TYPE_ROWS)
    ids = {struct.unpack(">I", m.value()[1:5])[0] for m in msgs}
    assert all(m.value()[:1] == b"\x00" for m in msgs) and len(ids) == 1  # Confluent wire format, one schema
    registered = client.get_latest_version(f"{topic}-value")
    assert registered.schema_id in ids
    fields = json.loads(registered.schema.schema_str)["fields"]
    image = next(f for f in fields if f["name"] == "before")["type"][1]["fields"]
    avro_types = {f["name"]: f["type"][1] for f in image}

    deserialize = AvroDeserializer(client)  # confluent-kafka's own: the schema by the message's id
    ctx = SerializationContext(topic, MessageField.VALUE)
    changes = sorted((deserialize(m.value(), ctx) for m in msgs), key=lambda c: c["key"]["id"])
    assert [c["op"] for c in changes] == ["insert"] * len(TYPE_ROWS)
    rows, columns = select_text(mariadb, t)
    assert len(rows) == len(changes) == 4
    for change, row in zip(changes, rows):
        got = change["after"]
        assert set(got) == set(row) == set(avro_types)
        for name, text in row.items():
            mysql_type, decimals = columns[name]
            value = as_text(got[name], avro_types[name], mysql_type, decimals)
            if mysql_type == FIELD_TYPE.FLOAT and text is not None:
                text, value = f32(float(text)), f32(value)
            elif mysql_type == FIELD_TYPE.DOUBLE and text is not None:
                text = float(text)
            assert value == text, f"row {row['id']} column {name}: Avro {got[name]!r} ({avro_types[name]}) " \
                                  f"reads as {value!r}, MariaDB's SELECT says {text!r}"
    first = changes[0]["after"]
    assert first["bu"] == Decimal(2**64 - 1) and avro_types["bu"]["logicalType"] == "decimal"  # unsigned BIGINT
    assert all(v is None for k, v in changes[3]["after"].items() if k != "id")


def test_topic_strategy_needs_a_topic_per_table() -> None:
    raw = {"name": "p", "source": {"type": "mysql", "dsn": "mysql://u:p@127.0.0.1:1"},
           "sinks": [{"name": "k", "type": "kafka", "bootstrap": "b:1", "topic": "cdc", "format": "avro",
                      "schema_registry": "http://r"}]}
    wanted = r"sinks\[0\]\.subject_name_strategy: topic .* topic 'cdc' has no \{table\}: use record or topic_record"
    with pytest.raises(ConfigError, match=wanted):
        parse_config(raw, "avro.yaml", {})
    raw["sinks"][0]["subject_name_strategy"] = "record"
    assert parse_config(raw, "avro.yaml", {}).sinks[0].options.subject_name_strategy == "record"
