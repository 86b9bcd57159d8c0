"""Raw Kafka messages as table runs, for mirroring (source `kafka` -> sink `kafka` with `format: raw`).

The `kafka` source delivers each partition's messages as a run with `db` = topic and `table` = partition
number; the run's `after` image holds the message as it was: `topic`, `partition`, `offset`, `key` and
`value` (binary, null when absent), `headers` (a list of `{key, value}`, in order, duplicates kept),
`timestamp` (ms since the epoch) and `timestamp_type` (0 none, 1 create time, 2 log append time).

`RawSerializer.encode` returns the values; `raw_messages` yields everything a producer needs to reproduce
each message: `(partition, key, value, headers, timestamp_ms)`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, ClassVar

import pyarrow as pa

from dbus_ray.model import TableRows

HEADER_TYPE = pa.struct([("key", pa.string()), ("value", pa.binary())])
RAW_TYPE = pa.struct([
    ("topic", pa.string()),
    ("partition", pa.int32()),
    ("offset", pa.int64()),
    ("key", pa.binary()),
    ("value", pa.binary()),
    ("headers", pa.list_(HEADER_TYPE)),
    ("timestamp", pa.int64()),
    ("timestamp_type", pa.int8()),
])


def is_raw(rows: TableRows) -> bool:
    return rows.data.schema.field("after").type == RAW_TYPE


def raw_messages(rows: TableRows) -> Iterator[tuple[int, bytes | None, bytes | None, list[tuple[str, bytes]], int]]:
    """(source partition, key, value, headers, timestamp ms) of each message of a raw run, in order."""
    if not is_raw(rows):
        raise ValueError(f"table {rows.name} does not hold raw Kafka messages (format raw mirrors a kafka source)")
    after = rows.data.column("after")
    cols = {name: after.field(name).to_pylist() for name in ("partition", "key", "value", "headers", "timestamp")}
    for i in range(rows.num_rows):
        headers = [(h["key"], h["value"]) for h in cols["headers"][i] or ()]
        yield cols["partition"][i], cols["key"][i], cols["value"][i], headers, cols["timestamp"][i]


class RawSerializer:
    name: ClassVar[str] = "raw"
    per_row: ClassVar[bool] = True
    content_type: ClassVar[str] = "application/octet-stream"

    def encode(self, rows: TableRows, pipeline: str, records: list[dict[str, Any]] | None = None) -> list[bytes]:
        return [value or b"" for _, _, value, _, _ in raw_messages(rows)]


def produce_raw(sink: Any, topic: str, rows: TableRows) -> int:
    """Produce a raw run with `sink`'s producer (a `KafkaSink`): same key, value, headers and timestamp, to
    the source partition modulo the topic's partition count (so each source partition's order is kept).
    Returns how many messages went out; delivery reports go to the sink's `_on_delivery`, a message over the
    producer's `message.max.bytes` is handled by the sink's `on_oversize`. The position of a message is
    `{"topic":..,"partition":..,"offset":..}` of the source."""
    partitions = sink.producer.list_topics(topic, timeout=sink.options.timeout_s).topics[topic].partitions
    count = max(len(partitions), 1)
    offsets = rows.data.column("after").field("offset").to_pylist()
    source = json.dumps(rows.db)
    n = 0
    for (partition, key, value, headers, timestamp), offset in zip(raw_messages(rows), offsets):
        position = f'{{"topic":{source},"partition":{partition},"offset":{offset}}}'
        sink._produce(topic, value, key, headers or None, position, f"{rows.db}/{partition}",
                      partition=partition % count, timestamp=timestamp or 0)
        n += 1
    return n
