"""Debezium's heartbeat topic for `format: debezium` (`heartbeat_interval_ms`, Debezium's
`heartbeat.interval.ms`; 0, the default, is off): every interval while the kafka sink is open, a message
to `__debezium-heartbeat.<topic_prefix>` with key `{"serverName": topic_prefix}` and value `{"ts_ms": now}`,
as Debezium writes it, also when the source is idle.

The kafka sink writes only when batches arrive, so the heartbeat is a thread of its own with a producer of
its own (the sink's may be transactional): it beats from the sink's open to its close, whatever the rows do.
It says the pipeline is running; the source's progress while idle is in the checkpoint, which the reader
moves on idle polls."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from confluent_kafka import Producer

from dbus_ray.kafka.sink_options import sink_producer_config
from dbus_ray.model import dumpb

log = logging.getLogger("dbus.kafka")

KEY_SCHEMA = {"type": "struct", "fields": [{"type": "string", "optional": False, "field": "serverName"}],
              "optional": False, "name": "io.debezium.connector.common.ServerNameKey", "version": 1}
VALUE_SCHEMA = {"type": "struct", "fields": [{"type": "int64", "optional": False, "field": "ts_ms"}],
                "optional": False, "name": "io.debezium.connector.common.Heartbeat", "version": 1}


def heartbeat_topic(prefix: str) -> str:
    return f"__debezium-heartbeat.{prefix}"


def heartbeat_message(prefix: str, ts_ms: int, schemas_enable: bool) -> tuple[bytes, bytes]:
    """Key and value of a heartbeat at `ts_ms`."""
    key, value = {"serverName": prefix}, {"ts_ms": ts_ms}
    if schemas_enable:
        return (dumpb({"schema": KEY_SCHEMA, "payload": key}), dumpb({"schema": VALUE_SCHEMA, "payload": value}))
    return dumpb(key), dumpb(value)


class Heartbeat:
    """The heartbeat thread of a kafka sink with `format: debezium` (see the module docstring)."""

    def __init__(self, sink: Any, prefix: str, interval_ms: int, schemas_enable: bool) -> None:
        self.topic = heartbeat_topic(prefix)
        self.prefix = prefix
        self.interval = interval_ms / 1000
        self.schemas_enable = schemas_enable
        self.where = sink.where
        sink._ensure_topic(self.topic, partitions=1)
        config = sink_producer_config(sink.options, f"dbus-{sink.pipeline}-{sink.name}-heartbeat")
        config["error_cb"] = lambda err: log.warning("%s heartbeat: %s", self.where, err)
        config["linger.ms"] = 0  # one message per interval, never flushed before the next: nothing to gather
        self.producer = Producer(config)
        self.sent = 0
        self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{sink.name}", daemon=True)

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def _on_delivery(self, err: Any, _msg: Any) -> None:
        if err is not None:
            self.failed += 1
            if self.failed == 1 or self.failed % 100 == 0:
                log.warning("%s: heartbeat to %s not delivered (%d so far): %s", self.where, self.topic,
                            self.failed, err)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            key, value = heartbeat_message(self.prefix, time.time_ns() // 1_000_000, self.schemas_enable)
            try:
                self.producer.produce(self.topic, value, key, on_delivery=self._on_delivery)
                self.sent += 1
            except BufferError:  # the broker is away and the queue full: this beat is skipped
                pass
            self.producer.poll(0)

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout)
        self.producer.flush(timeout)
