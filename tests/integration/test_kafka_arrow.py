"""Sink `kafka` with `format: arrow` against the session's broker: one Arrow IPC stream message per table run,
read back as a consumer would (pyarrow into pandas) and compared with the source rows written out by hand."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest

from dbus_ray.config import ConfigError, build, parse_config
from dbus_ray.model import Position, RowBatch, RowChange, TableRows
from dbus_ray.sinks.kafka import KafkaOptions, KafkaSink
from tests.support.topics import read_topic

pytestmark = pytest.mark.integration

IMAGE = pa.struct([("id", pa.int64()), ("name", pa.string()), ("amount", pa.decimal128(10, 2)),
                   ("at", pa.timestamp("us"))])

ANN = {"id": 1, "name": "ann", "amount": Decimal("9.50"), "at": dt.datetime(2024, 1, 2, 3, 4, 5)}
ANN2 = {"id": 1, "name": "ann", "amount": Decimal("12.00"), "at": dt.datetime(2024, 1, 2, 3, 4, 6)}
BOB = {"id": 2, "name": "bob", "amount": Decimal("0.01"), "at": None}
EVE = {"id": 7, "name": "eve", "amount": None, "at": None}
#: (table, op, before, after, offset) of each source row, in source order
SOURCE = [
    ("orders", "insert", None, ANN, 100),
    ("orders", "insert", None, BOB, 110),
    ("orders", "update", ANN, ANN2, 120),
    ("users", "insert", None, EVE, 130),
    ("orders", "delete", BOB, None, 140),
]


def source_batch() -> RowBatch:
    """The rows of SOURCE as the source hands them over: one run per table run of consecutive rows."""
    runs: list[list[RowChange]] = []
    for table, op, before, after, offset in SOURCE:
        image = after if after is not None else before
        change = RowChange("p", "shop", table, op, {"id": image["id"]}, before, after,
                           Position("mysql-bin.000003", offset, "0-1-9", 0), f"tx{offset}", 1700000000.0 + offset,
                           1700000001.0 + offset)
        if runs and runs[-1][0].table == table:
            runs[-1].append(change)
        else:
            runs.append([change])
    return RowBatch("p", 1, [TableRows.from_changes(run, IMAGE) for run in runs], {"at": 140}, 1700000140.0)


def test_arrow_format_one_ipc_message_per_run_read_back_with_pandas(broker: Any) -> None:
    sink = KafkaSink("p", "k", build(KafkaOptions, {"bootstrap": broker.bootstrap, "topic": "arrow-cdc",
                                                    "format": "arrow", "partitions": 3}, "sinks[0]"))
    sink.open()
    try:
        sink.write(source_batch())
    finally:
        sink.close()
    msgs = read_topic(broker.bootstrap, "arrow-cdc", idle=0)
    # three table runs (orders x3, users x1, orders x1): three messages, a table's runs in one partition, in order
    assert len(msgs) == 3
    orders = sorted([m for m in msgs if json.loads(m.key()) == {"db": "shop", "table": "orders"}],
                    key=lambda m: m.offset())
    assert len(orders) == 2 and orders[0].partition() == orders[1].partition()
    headers = [dict(m.headers()) for m in orders]
    assert [(h["db"], h["table"], h["rows"]) for h in headers] == [(b"shop", b"orders", b"3"),
                                                                  (b"shop", b"orders", b"1")]
    assert json.loads(headers[1]["position"]) == {"file": "mysql-bin.000003", "offset": 140, "gtid": "0-1-9",
                                                  "index": 0}

    frames = []
    for msg in msgs:  # what a consumer does: the value is an Arrow IPC stream
        table = pa.ipc.open_stream(msg.value()).read_all()
        meta = table.schema.metadata
        assert meta[b"dbus.db"] == b"shop" and json.loads(meta[b"dbus.key"]) == ["id"]
        frame = table.to_pandas()
        frame.insert(0, "table", meta[b"dbus.table"].decode())
        frames.append(frame)
    got = pd.concat(frames).sort_values("offset").reset_index(drop=True)

    assert list(got["table"]) == [t for t, *_ in SOURCE]
    assert list(got["op"]) == [op for _, op, *_ in SOURCE]
    assert list(got["offset"]) == [offset for *_, offset in SOURCE]
    assert list(got["txid"]) == [f"tx{offset}" for *_, offset in SOURCE]
    assert set(got["file"]) == {"mysql-bin.000003"}

    def image(value: Any) -> dict[str, Any] | None:
        if value is None:
            return None
        out = dict(value)
        if out["at"] is not None:  # pandas gives a Timestamp
            out["at"] = pd.Timestamp(out["at"]).to_pydatetime()
        return out

    assert [image(v) for v in got["before"]] == [before for _, _, before, _, _ in SOURCE]
    assert [image(v) for v in got["after"]] == [after for _, _, _, after, _ in SOURCE]


def test_arrow_format_refuses_key_columns() -> None:
    raw = {"name": "a", "source": {"type": "mock"},
           "sinks": [{"name": "k", "type": "kafka", "bootstrap": "b:1", "format": "arrow", "key": ["id"]}]}
    with pytest.raises(ConfigError, match=r"^a.yaml: sinks\[0\].key: is not for format arrow"):
        parse_config(raw, "a.yaml", {})
