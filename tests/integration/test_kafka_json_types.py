"""MySQL's type-fidelity table through the Kafka sink (`format: json`, the column-wise messages of
`serializers/json_columns.py`) into a real Apache Kafka broker, read back with Kafka's own consumer: every
value equals the server's `SELECT`; each message's key is its row's id and its position header the `pos`
of its value. Then the rows moved to new keys and deleted: every before and after image equals what `SELECT`
gave."""

from __future__ import annotations

import json
from typing import Any

import pytest

from dbus_ray.config import build
from dbus_ray.kafka.sink_options import KafkaOptions
from dbus_ray.mysql.source import MysqlOptions, MysqlSource
from dbus_ray.sinks.kafka import KafkaSink
from tests.integration.test_mysql_source import select_json
from tests.support.helpers import drain, execute, table_name
from tests.support.mysql_types import TYPE_ROWS, create_type_table
from tests.support.topics import read_topic

pytestmark = pytest.mark.integration


def test_every_type_through_kafka_equals_select(mariadb: Any, root: Any, broker: Any) -> None:
    t = table_name("ktypes")
    start = create_type_table(root, t)
    before = select_json(root, t)
    execute(root, f"UPDATE {t} SET id = id + 1000")  # (still in the non-strict mode of the inserts)
    after_update = select_json(root, t)
    execute(root, f"DELETE FROM {t}")
    src = MysqlSource("ktypes", MysqlOptions(dsn=mariadb.dsn, server_id=7411, start=start, include=[f"dbus_test.{t}"]))
    src.open(None)
    try:
        batches = drain(src)
    finally:
        src.close()
    topic = f"ktypes.{t}"
    sink = KafkaSink("ktypes", "k", build(KafkaOptions, {"bootstrap": broker.bootstrap, "topic": topic,
                                                         "partitions": 1}, "sinks[0]"))
    sink.open()
    try:
        for batch in batches:
            sink.write(batch)
    finally:
        sink.close()
    msgs = read_topic(broker.bootstrap, topic)
    values = [json.loads(m.value()) for m in msgs]
    n = len(TYPE_ROWS)
    # an update of the key is a delete at the old key and an insert at the new one
    assert [v["op"] for v in values] == ["insert"] * n + ["delete", "insert"] * n + ["delete"] * n
    inserts, moved, deletes = values[:n], values[n:3 * n], values[3 * n:]
    for got, want in zip([v["after"] for v in inserts], before, strict=True):
        assert set(got) == set(want)
        for k in want:
            assert got[k] == want[k], f"row {want['id']} column {k}: kafka {got[k]!r} != SELECT {want[k]!r}"
    assert [v["before"] for v in moved[0::2]] == before and all(v["after"] is None for v in moved[0::2])
    assert [v["after"] for v in moved[1::2]] == after_update and all(v["before"] is None for v in moved[1::2])
    assert [v["before"] for v in deletes] == after_update and all(v["after"] is None for v in deletes)
    for m, v in zip(msgs, values, strict=True):
        image = v["after"] or v["before"]
        assert json.loads(m.key()) == v["key"] == {"id": image["id"]}
        headers = dict(m.headers())
        assert headers["op"].decode() == v["op"] and headers["table"].decode() == t
        assert json.loads(headers["position"]) == v["pos"]
