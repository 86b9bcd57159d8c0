"""Sink `kafka` with a `key` column a table does not have, against a real Apache Kafka broker (session fixture
`broker`): the write fails with one line naming the option, the missing column, the table and its columns,
before any message of the batch is produced (json, json with tombstones, avro, debezium, exactly-once),
instead of keying every row of the table `{"<column>": null}`; through Ray the pipeline stops with that line
and no checkpoint. The table that has the column is keyed by it as before."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from dbus_ray.checkpoints import FileCheckpointStore
from dbus_ray.config import build, parse_config
from dbus_ray.errors import DbusError
from dbus_ray.model import RowBatch, TableRows
from dbus_ray.pipeline import run_pipeline
from dbus_ray.sinks.kafka import KafkaOptions, KafkaSink
from dbus_ray.sources.mock import MockOptions, MockSource
from tests.support.topics import read_topic

pytestmark = pytest.mark.integration

#: what the sink says of table mock.orders (the mock's columns without `name`) and `key: [name]`
ORDERS_ERROR = ("sink key column(s) ['name'] not in table mock.orders (columns: id, seq, amount): every table "
                "the sink writes must have the key columns (or leave key out for the primary key)")


def without(part: TableRows, column: str, table: str) -> TableRows:
    """`part` as rows of `table`, whose images lack `column`."""
    def drop(image: pa.StructArray) -> pa.StructArray:
        keep = [i for i, f in enumerate(image.type) if f.name != column]
        return pa.StructArray.from_arrays([image.field(i) for i in keep], fields=[image.type.field(i) for i in keep],
                                          mask=image.is_null())

    data = part.data
    before, after = drop(data.column("before")), drop(data.column("after"))
    schema = data.schema.set(data.schema.get_field_index("before"), pa.field("before", before.type))
    schema = schema.set(schema.get_field_index("after"), pa.field("after", after.type))
    columns = [*data.columns[:-2], before, after]
    return TableRows(part.db, table, part.key, pa.RecordBatch.from_arrays(columns, schema=schema))


def two_tables() -> RowBatch:
    """One batch: 50 rows of mock.items (which has `name`), then 50 of mock.orders (which has not)."""
    src = MockSource("p", MockOptions(rows=None, keys=10))
    src.open(None)
    batch = src.poll(50, 1)
    orders = without(src.poll(50, 1).parts[0], "name", "orders")
    return RowBatch("p", 1, [batch.parts[0], orders], {"next": 100}, batch.ts)


def open_sink(broker: Any, **options: Any) -> KafkaSink:
    sink = KafkaSink("p", "k", build(KafkaOptions, {"bootstrap": broker.bootstrap, **options}, "sinks[0]"))
    sink.open()
    return sink


@pytest.mark.parametrize("variant", ["json", "json-tombstones", "avro", "debezium", "json-exactly-once"])
def test_a_key_column_the_table_lacks_fails_the_write_before_any_message(broker: Any, variant: str) -> None:
    fmt = variant.split("-")[0]
    topic = f"unit-keycol-{variant}"
    options: dict[str, Any] = {"topic": topic, "format": fmt, "key": ["name"], "partitions": 1}
    if variant == "json-tombstones":
        options["tombstones"] = True
    if variant == "json-exactly-once":
        options["delivery"] = "exactly_once"
    if fmt == "debezium":
        options["debezium"] = {"topic_prefix": topic, "schemas_enable": False}
    sink = open_sink(broker, **options)
    with pytest.raises(DbusError) as info:
        sink.write(two_tables())
    assert str(info.value) == ORDERS_ERROR
    sink.close()
    for name in ([f"{topic}.mock.items", f"{topic}.mock.orders"] if fmt == "debezium" else [topic]):
        assert read_topic(broker.bootstrap, name, idle=0.5, missing_ok=True) == [], \
            f"{name}: nothing of the failed batch may be produced, not even the rows of mock.items before it"


@pytest.mark.parametrize("fmt", ["json", "debezium"])
def test_the_table_with_the_key_column_is_keyed_by_it(broker: Any, fmt: str) -> None:
    """The check lets a table that has the columns through: its messages keyed by them, as before."""
    topic = f"unit-keycol-ok-{fmt}"
    options: dict[str, Any] = {"topic": topic, "format": fmt, "key": ["name"], "partitions": 1}
    if fmt == "debezium":
        options["debezium"] = {"topic_prefix": topic, "schemas_enable": False}
    sink = open_sink(broker, **options)
    batch = two_tables()
    batch.parts = batch.parts[:1]
    sink.write(batch)
    sink.write(batch)  # checked once per table: the second write the same
    sink.close()
    msgs = read_topic(broker.bootstrap, f"{topic}.mock.items" if fmt == "debezium" else topic)
    # (debezium: an update changes `name`, so it is a delete of the old key, its tombstone and a create)
    values = [json.loads(m.value()) for m in msgs if m.value() is not None]
    for msg, value in zip([m for m in msgs if m.value() is not None], values):
        image = value["after"] or value["before"]
        assert json.loads(msg.key()) == {"name": image["name"]}
    if fmt == "json":
        expected = [(c.after or c.before)["name"] for c in batch.parts[0].changes("p")]
        assert [(v["after"] or v["before"])["name"] for v in values] == expected * 2
    else:
        assert len(values) > 100


@pytest.mark.usefixtures("ray_session")
def test_pipeline_stops_with_the_line_and_no_checkpoint(tmp_path: Path, broker: Any) -> None:
    raw = {"name": "kafka-keycol", "source": {"type": "mock", "rows": 500, "keys": 10},
           "sinks": [{"name": "k", "type": "kafka", "bootstrap": broker.bootstrap, "topic": "keycol-pipe",
                      "key": ["tenant"]}],
           "data_dir": str(tmp_path / "data")}
    cfg = parse_config(raw, "keycol.yaml", {})
    final = run_pipeline(cfg, until_caught_up=True, interval=0.05)
    assert final["state"] == "failed"
    assert final["error"] == ("sink k (kafka): sink key column(s) ['tenant'] not in table mock.items (columns: id, "
                              "seq, name, amount): every table the sink writes must have the key columns (or "
                              "leave key out for the primary key)")
    assert final["rows_delivered"] == 0
    assert FileCheckpointStore(cfg.pipeline_dir).load() is None
    assert read_topic(broker.bootstrap, "keycol-pipe", idle=0.5, missing_ok=True) == []
