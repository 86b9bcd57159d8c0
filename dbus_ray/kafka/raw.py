"""Raw Kafka messages as table runs, for mirroring (source `kafka` -> sink `kafka` with `format: raw`).

The `kafka` source delivers each partition's messages as a run with `db` = topic and `table` = partition
number; the run's `after` image holds the message as it was: `topic`, `partition`, `offset`, `key` and
`value` (binary, null when absent), `headers` (a list of `{key, value}`, in order, duplicates kept),
`timestamp` (ms since the epoch) and `timestamp_type` (0 none, 1 create time, 2 log append time).

`raw_messages` yields everything a producer needs to reproduce each message: `(partition, key, value, headers,
timestamp_ms)`; `raw_positions` the source position of each (for error lines and dead-letter records).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

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


def _check_raw(rows: TableRows) -> None:
    if not is_raw(rows):
        raise ValueError(f"table {rows.name} does not hold raw Kafka messages (format raw mirrors a kafka source)")


def raw_messages(rows: TableRows) -> Iterator[tuple[int, bytes | None, bytes | None, list[tuple[str, bytes]], int]]:
    """(source partition, key, value, headers, timestamp ms) of each message of a raw run, in order."""
    _check_raw(rows)
    after = rows.data.column("after")
    cols = {name: after.field(name).to_pylist() for name in ("partition", "key", "value", "headers", "timestamp")}
    for i in range(rows.num_rows):
        headers = [(h["key"], h["value"]) for h in cols["headers"][i] or ()]
        yield cols["partition"][i], cols["key"][i], cols["value"][i], headers, cols["timestamp"][i]


def raw_positions(rows: TableRows) -> list[str]:
    """The source position of each message of a raw run: `{"topic":..,"partition":..,"offset":..}`."""
    _check_raw(rows)
    after = rows.data.column("after")
    topic = json.dumps(rows.db)
    return [f'{{"topic":{topic},"partition":{partition},"offset":{offset}}}'
            for partition, offset in zip(after.field("partition").to_pylist(), after.field("offset").to_pylist())]
