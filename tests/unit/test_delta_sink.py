"""The delta sink without Ray: its type mapping (expected Delta types written out by hand from the mapping's
table), the collapse per key (insert, update, primary-key change, delete within one batch), commit rounds by
`commit_interval_s`, compaction by `compact_every`, and which checkpoint the store resumes from when a round
reached only some of its tables (tables written here with deltalake itself)."""

from __future__ import annotations

import datetime as dt
import decimal
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from deltalake import CommitProperties, DeltaTable, write_deltalake

from dbus_ray.model import Position, RowBatch, RowChange, TableRows
from dbus_ray.sinks.delta import DeltaCheckpointStore, DeltaOptions, DeltaSink, read_checkpoint
from dbus_ray.sinks.delta_types import delta_type, to_delta

IMAGE = pa.struct([("id", pa.int32()), ("v", pa.string()), ("u", pa.uint64())])


def test_type_mapping() -> None:
    cases = {pa.int8(): pa.int8(), pa.int16(): pa.int16(), pa.uint8(): pa.int16(), pa.uint16(): pa.int32(),
             pa.int32(): pa.int32(), pa.uint32(): pa.int64(), pa.int64(): pa.int64(),
             pa.uint64(): pa.decimal128(20, 0), pa.decimal128(12, 3): pa.decimal128(12, 3),
             pa.decimal256(65, 30): pa.string(), pa.float32(): pa.float32(), pa.float64(): pa.float64(),
             pa.string(): pa.string(), pa.binary(): pa.binary(), pa.duration("us"): pa.int64(),
             pa.bool_(): pa.bool_(), pa.date32(): pa.date32(), pa.null(): pa.string(),
             pa.timestamp("us", tz="+02:00"): pa.timestamp("us", tz="UTC")}
    for arrow, delta in cases.items():
        assert delta_type(arrow, "c") == delta, arrow
    with pytest.raises(ValueError, match="column t.c: no Delta Lake type"):
        delta_type(pa.list_(pa.int8()), "t.c")
    wide = pa.array([decimal.Decimal("-999.9"), decimal.Decimal("0E-30"), None], pa.decimal256(65, 30))
    assert to_delta(wide, "c").to_pylist() == ["-999.900000000000000000000000000000",
                                               "0.000000000000000000000000000000", None]
    times = pa.array([dt.timedelta(hours=-838, minutes=-59, seconds=-59), dt.timedelta(microseconds=1)],
                     pa.duration("us"))
    assert to_delta(times, "c").to_pylist() == [-3_020_399_000_000, 1]
    assert to_delta(pa.array([2**64 - 1], pa.uint64()), "c").to_pylist() == [decimal.Decimal(2**64 - 1)]


def change(op: str, before: dict[str, Any] | None, after: dict[str, Any] | None, offset: int) -> RowChange:
    image = after or before
    return RowChange("p", "db", "t", op, {"id": image["id"]}, before, after, Position("b.1", offset), "tx", 0.0, 0.0)


def batch(seq: int, changes: list[RowChange]) -> RowBatch:
    return RowBatch("p", seq, [TableRows.from_changes(changes, IMAGE)], {"file": "b.1", "offset": seq})


def rows(path: Path) -> list[dict[str, Any]]:
    return sorted(DeltaTable(str(path)).to_pyarrow_table().to_pylist(), key=lambda r: r["id"])


def test_one_batch_collapses_per_key_and_commits_its_checkpoint(tmp_path: Path) -> None:
    sink = DeltaSink("p", "lake", DeltaOptions(path=str(tmp_path)))
    sink.open()
    sink.write(batch(1, [change("insert", None, {"id": 1, "v": "a", "u": 2**64 - 1}, 1),
                         change("insert", None, {"id": 2, "v": "b", "u": 0}, 2),
                         change("insert", None, {"id": 3, "v": "c", "u": 0}, 3)]))
    sink.write(batch(2, [change("update", {"id": 1, "v": "a", "u": 2**64 - 1}, {"id": 1, "v": "a2", "u": 1}, 4),
                         change("update", {"id": 2, "v": "b", "u": 0}, {"id": 20, "v": "b", "u": 0}, 5),  # new key
                         change("delete", {"id": 3, "v": "c", "u": 0}, None, 6),
                         change("insert", None, {"id": 4, "v": None, "u": None}, 7),
                         change("update", {"id": 4, "v": None, "u": None}, {"id": 4, "v": "d", "u": 5}, 8)]))
    sink.close()
    assert rows(tmp_path / "db" / "t") == [{"id": 1, "v": "a2", "u": decimal.Decimal(1)},
                                           {"id": 4, "v": "d", "u": decimal.Decimal(5)},
                                           {"id": 20, "v": "b", "u": decimal.Decimal(0)}]
    history = DeltaTable(str(tmp_path / "db" / "t")).history()
    merges = [h for h in history if h["operation"] == "MERGE"]
    assert len(merges) == 2 and merges[0]["dbus.batch"] == "2"
    assert json.loads(merges[0]["dbus.checkpoint"])["source"] == {"file": "b.1", "offset": 2}
    assert json.loads(merges[0]["dbus.prev"])["source"] == {"file": "b.1", "offset": 1}
    assert read_checkpoint(tmp_path, "p")[0] == 2


def test_commit_interval_merges_several_batches_once_and_compaction_runs(tmp_path: Path) -> None:
    sink = DeltaSink("p", "lake", DeltaOptions(path=str(tmp_path), commit_interval_s=3600, compact_every=2,
                                               vacuum_hours=0))
    sink.open()
    for seq in range(1, 6):
        sink.write(batch(seq, [change("insert", None, {"id": seq, "v": str(seq), "u": 0}, seq)]))
    assert not (tmp_path / "db" / "t").exists()  # nothing committed before the interval or the close
    sink.close()
    history = DeltaTable(str(tmp_path / "db" / "t")).history()
    assert [h["operation"] for h in history if "dbus.batch" in h] == ["MERGE"]
    assert [r["id"] for r in rows(tmp_path / "db" / "t")] == [1, 2, 3, 4, 5]
    assert DeltaCheckpointStore("p", str(tmp_path)).load()["source"] == {"file": "b.1", "offset": 5}
    sink = DeltaSink("p", "lake", DeltaOptions(path=str(tmp_path), compact_every=2, vacuum_hours=0))
    sink.open()
    sink.write(batch(6, [change("insert", None, {"id": 6, "v": "6", "u": 0}, 6)]))
    sink.write(batch(7, [change("insert", None, {"id": 7, "v": "7", "u": 0}, 7)]))  # the 2nd commit: compaction
    ops = [h["operation"] for h in DeltaTable(str(tmp_path / "db" / "t")).history()]
    assert "OPTIMIZE" in ops and "VACUUM END" in ops, ops
    assert len(DeltaTable(str(tmp_path / "db" / "t")).file_uris()) == 1
    assert DeltaCheckpointStore("p", str(tmp_path)).load()["source"] == {"file": "b.1", "offset": 7}


def commit(path: Path, number: int, tables: list[str], checkpoint: int, prev: int | None) -> None:
    meta = {"dbus.pipeline": "p", "dbus.batch": str(number), "dbus.checkpoint": json.dumps({"n": checkpoint}),
            "dbus.prev": json.dumps(None if prev is None else {"n": prev}), "dbus.tables": json.dumps(tables)}
    write_deltalake(str(path), pa.table({"id": [number]}), mode="append",
                    commit_properties=CommitProperties(custom_metadata=meta))


def test_store_resumes_before_a_round_that_reached_only_some_tables(tmp_path: Path) -> None:
    assert DeltaCheckpointStore("p", str(tmp_path)).load() is None
    both = ["d/a", "d/b"]
    commit(tmp_path / "d" / "a", 1, both, 10, None)
    assert DeltaCheckpointStore("p", str(tmp_path)).load() is None  # round 1 cut: before it, the config's start
    commit(tmp_path / "d" / "b", 1, both, 10, None)
    assert DeltaCheckpointStore("p", str(tmp_path)).load() == {"n": 10}
    commit(tmp_path / "d" / "a", 2, ["d/a"], 20, 10)  # a round of one table only
    assert DeltaCheckpointStore("p", str(tmp_path)).load() == {"n": 20}
    commit(tmp_path / "d" / "a", 3, both, 30, 20)  # cut after a
    assert read_checkpoint(tmp_path, "p") == (3, {"n": 20})
    assert read_checkpoint(tmp_path, "other") is None  # another pipeline's commits are not ours
    store = DeltaCheckpointStore("p", str(tmp_path))
    store.save({"n": 99})  # the reader's own save: a no-op
    assert store.load() == {"n": 20}
    store.save({"source": {"n": 40}, "set_by": "operator"})
    assert store.load() == {"source": {"n": 40}, "set_by": "operator"}


def test_commit_interval_needs_the_delta_store_and_a_failed_batch_commits_nothing(tmp_path: Path) -> None:
    from dbus_ray.config import ConfigError, parse_config

    raw = {"name": "p", "source": {"type": "mock", "rows": 1},
           "sinks": [{"name": "lake", "type": "delta", "path": str(tmp_path), "commit_interval_s": 5}]}
    with pytest.raises(ConfigError, match=r"sinks\[0\]\.commit_interval_s: needs checkpoint.store: delta, not file"):
        parse_config(raw, "x.yaml", {})
    assert parse_config({**raw, "checkpoint": {"store": "delta"}}, "x.yaml", {}).sinks[0].type == "delta"
    sink = DeltaSink("p", "lake", DeltaOptions(path=str(tmp_path), commit_interval_s=3600))
    sink.open()
    sink.write(batch(1, [change("insert", None, {"id": 1, "v": "a", "u": 0}, 1)]))
    bad = batch(2, [change("upsert", None, {"id": 2, "v": "b", "u": 0}, 2)])
    with pytest.raises(Exception, match="unknown op 'upsert'"):
        sink.write(bad)
    sink.close()
    assert not (tmp_path / "db" / "t").exists()


def test_a_table_whose_log_has_no_commit_yet_holds_no_checkpoint(tmp_path: Path) -> None:
    """A writer killed while it created a table leaves `_delta_log` without a commit: no checkpoint there (the
    pipeline starts), not an error."""
    from dbus_ray.sinks.delta import last_commit, read_checkpoint

    (tmp_path / "db" / "t" / "_delta_log").mkdir(parents=True)
    assert last_commit(tmp_path / "db" / "t", "p") is None
    assert read_checkpoint(tmp_path, "p") is None
