"""Debezium's heartbeat message and option, without a broker. Expected: what Debezium 3.5's MariaDB
connector wrote with heartbeat.interval.ms and topic.prefix peer-defaults (recorded from a run of tests/peer)."""

from __future__ import annotations

import json

import pytest

from dbus_ray.config import Invalid
from dbus_ray.serializers.debezium import DebeziumOptions
from dbus_ray.serializers.debezium_heartbeat import heartbeat_message, heartbeat_topic

DEBEZIUM_KEY = ('{"schema":{"type":"struct","fields":[{"type":"string","optional":false,"field":"serverName"}],'
                '"optional":false,"name":"io.debezium.connector.common.ServerNameKey","version":1},'
                '"payload":{"serverName":"peer-defaults"}}')
DEBEZIUM_VALUE = ('{"schema":{"type":"struct","fields":[{"type":"int64","optional":false,"field":"ts_ms"}],'
                  '"optional":false,"name":"io.debezium.connector.common.Heartbeat","version":1},'
                  '"payload":{"ts_ms":1796086685896}}')


def test_heartbeat_as_debezium_writes_it() -> None:
    key, value = heartbeat_message("peer-defaults", 1796086685896, True)
    assert json.loads(key) == json.loads(DEBEZIUM_KEY) and json.loads(value) == json.loads(DEBEZIUM_VALUE)
    key, value = heartbeat_message("peer-defaults", 5, False)
    assert json.loads(key) == {"serverName": "peer-defaults"} and json.loads(value) == {"ts_ms": 5}
    assert heartbeat_topic("peer-defaults") == "__debezium-heartbeat.peer-defaults"


def test_interval_option() -> None:
    assert DebeziumOptions().heartbeat_interval_ms == 0  # off, as in Debezium
    with pytest.raises(Invalid, match="must be 0") as exc:
        DebeziumOptions(heartbeat_interval_ms=-1)
    assert exc.value.key == "heartbeat_interval_ms"
