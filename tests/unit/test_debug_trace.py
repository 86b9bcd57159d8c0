"""Checkpoint comparisons of `bus.trace` (`dbus_ray.debug.trace.covers`) and the positions the acknowledgement
bookkeeping reports per sink (`SubmittedBatches.sink_positions`, `read_position`)."""

from __future__ import annotations

import pytest

from dbus_ray.acks import SubmittedBatches
from dbus_ray.debug.trace import RowAt, covers, row_at
from dbus_ray.errors import DbusError


def test_a_checkpoint_covers_the_rows_before_it_and_the_skipped_rows_of_its_transaction() -> None:
    cp = {"file": "binlog.000002", "offset": 500, "skip": 2, "gtid": "0-1-9"}
    assert covers(cp, RowAt("binlog.000001", 9000, 5, "0-1-3")) is True  # an older file
    assert covers(cp, RowAt("binlog.000002", 400, 0, "0-1-8")) is True
    assert covers(cp, RowAt("binlog.000002", 560, 1, "0-1-9")) is True  # skipped rows of the open transaction
    assert covers(cp, RowAt("binlog.000002", 560, 2, "0-1-9")) is False
    assert covers(cp, RowAt("binlog.000002", 700, 0, "0-1-10")) is False
    assert covers(cp, RowAt("binlog.000010", 4, 0, None)) is False  # file 10 sorts after file 2
    no_gtid = {"file": "binlog.000002", "offset": 500, "skip": 1, "gtid": None}
    assert covers(no_gtid, RowAt("binlog.000002", 560, 0, "binlog.000002:500")) is True
    assert covers({"snapshot": {}}, RowAt("binlog.000002", 560)) is None
    assert covers(None, RowAt("binlog.000002", 560)) is None


def test_row_at_forms() -> None:
    assert row_at("binlog.000003:77") == RowAt("binlog.000003", 77)
    got = row_at({"file": "b.000001", "offset": 9, "index": 2, "txid": "0-1-4", "db": "d", "table": "t"})
    assert (got.index, got.txid, got.db, got.table) == (2, "0-1-4", "d", "t")
    with pytest.raises(DbusError, match="expected FILE:OFFSET"):
        row_at("b.000001")


def test_sink_positions_follow_each_sinks_acknowledgements() -> None:
    book = SubmittedBatches(["a", "b"])
    for i in (1, 2, 3):
        book.submit(10, {"file": "f.000001", "offset": 100 * i}, 0.0)
    assert book.read_position == {"file": "f.000001", "offset": 300}
    assert book.sink_positions() == {"a": None, "b": None}
    book.ack("a", 2, 1.0)
    book.ack("b", 1, 1.0)
    assert book.sink_positions() == {"a": {"file": "f.000001", "offset": 200}, "b": {"file": "f.000001", "offset": 100}}
    book.ack("b", 3, 2.0)
    assert book.sink_positions()["b"] == {"file": "f.000001", "offset": 300}
    assert book.sink_positions()["a"] == {"file": "f.000001", "offset": 200}
    book.ack("a", 3, 3.0)
    assert book.sink_positions() == {"a": {"file": "f.000001", "offset": 300}, "b": {"file": "f.000001", "offset": 300}}
    assert book.read_position == {"file": "f.000001", "offset": 300}
