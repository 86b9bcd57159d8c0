"""File sinks: `parquet` (files per table by rows and by time, atomic, crash recovery of staging files) and
`jsonl` rotation by size, end to end through Ray where it matters."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from dbus_ray.config import parse_config
from dbus_ray.model import META_COLUMNS, RowBatch
from dbus_ray.pipeline import run_pipeline
from dbus_ray.sinks.parquet import ParquetOptions, ParquetSink
from dbus_ray.sources.mock import MockOptions, MockSource


def config(tmp_path: Path, name: str, source: dict[str, Any], sinks: list[dict[str, Any]], **extra: Any):
    raw = {"name": name, "source": {"type": "mock", **source}, "sinks": sinks, "data_dir": str(tmp_path / "data"),
           "flow": {"read_batch_rows": 700, "sink_batch_rows": 1500, "max_rows_in_flight": 2800}}
    raw.update(extra)
    return parse_config(raw, f"{name}.yaml", {})


def assert_each_offset_once_in_order(offsets_by_table: dict[str, list[int]], total: int) -> None:
    every = sorted(o for offsets in offsets_by_table.values() for o in offsets)
    assert every == list(range(total)), "a row is missing or duplicated"
    for table, offsets in offsets_by_table.items():
        assert offsets == sorted(offsets), f"{table} out of order"


@pytest.mark.usefixtures("ray_session")
def test_parquet_files_per_table_by_rows(tmp_path: Path) -> None:
    out = tmp_path / "pq"
    cfg = config(tmp_path, "pq-rows", {"rows": 9000, "keys": 100, "tables": 2},
                 [{"name": "pq", "type": "parquet", "path": str(out), "max_rows": 1000}])
    final = run_pipeline(cfg, until_caught_up=True, interval=0.05)
    assert final["state"] == "stopped" and final["rows_delivered"] == 9000
    assert not list(out.rglob(".*")) and not list(out.rglob("*.tmp")), "staging files left behind"
    offsets: dict[str, list[int]] = {}
    for table in ("items_0", "items_1"):
        files = sorted((out / "mock" / table).glob("*.parquet"))
        assert [f.name for f in files] == [f"{i:08d}.parquet" for i in range(1, 6)]  # 4500 rows: 4 full + 1
        sizes = [pq.ParquetFile(f).metadata.num_rows for f in files]
        assert sizes == [1000, 1000, 1000, 1000, 500]
        data = ds.dataset(out / "mock" / table, format="parquet").to_table()
        assert data.schema.names == [*META_COLUMNS, "before", "after"]
        assert data.schema.field("after").type == pa.struct(
            [("id", pa.int64()), ("seq", pa.int64()), ("name", pa.string()), ("amount", pa.int64())])
        meta = pq.read_schema(files[0]).metadata
        assert meta[b"dbus.db"] == b"mock" and meta[b"dbus.table"] == table.encode()
        assert json.loads(meta[b"dbus.key"]) == ["id"]
        ops = data.column("op").to_pylist()
        assert all((b is None) == (op == "insert") for b, op in zip(data.column("before").to_pylist(), ops))
        offsets[table] = data.column("offset").to_pylist()
    assert_each_offset_once_in_order(offsets, 9000)


@pytest.mark.usefixtures("ray_session")
def test_parquet_files_close_by_time_while_running(tmp_path: Path) -> None:
    out = tmp_path / "pq"
    cfg = config(tmp_path, "pq-time", {"rows": None, "rate": 2000, "keys": 100},
                 [{"name": "pq", "type": "parquet", "path": str(out), "max_seconds": 0.5}])
    seen_while_running: list[int] = []

    def stop() -> bool:
        seen_while_running.append(len(list(out.rglob("*.parquet"))))
        return seen_while_running[-1] >= 3

    stopper = threading.Timer(30, lambda: None)
    final = run_pipeline(cfg, should_stop=stop, interval=0.2)
    stopper.cancel()
    assert final["state"] == "stopped"
    assert max(seen_while_running) >= 3, "files were not closed by time"
    data = ds.dataset(out, format="parquet").to_table()
    assert data.num_rows == final["rows_delivered"]
    assert_each_offset_once_in_order({"items": data.column("offset").to_pylist()}, data.num_rows)


def mock_batches(n: int, size: int) -> list[RowBatch]:
    source = MockSource("p", MockOptions(rows=n * size, keys=50))
    source.open(None)
    return [source.poll(size, i + 1) for i in range(n)]


def test_parquet_crash_recovery_keeps_every_acknowledged_batch(tmp_path: Path) -> None:
    sink = ParquetSink("p", "pq", ParquetOptions(path=str(tmp_path), max_rows=10_000))
    sink.open()
    batches = mock_batches(4, 100)
    for b in batches[:3]:
        sink.write(b)  # returned: acknowledged, so it must survive a crash
    staging = next((tmp_path / "mock" / "items").glob(".*.arrows"))
    sink.stopping.set()  # a crash: no close(); and the 4th batch's write is cut in the middle
    with open(staging, "ab") as f:
        f.write(b"\xff\xff\xff\xff\x10\x00")
    assert not list(tmp_path.rglob("*.parquet"))
    again = ParquetSink("p", "pq", ParquetOptions(path=str(tmp_path), max_rows=10_000))
    again.open()
    files = sorted(tmp_path.rglob("*.parquet"))
    assert [f.name for f in files] == ["00000001.parquet"]
    assert pq.read_table(files[0]).column("offset").to_pylist() == list(range(300))
    assert not list(tmp_path.rglob(".*.arrows"))
    again.write(batches[3])  # the source repeats the unacknowledged batch
    again.close()
    files = sorted(tmp_path.rglob("*.parquet"))
    assert [f.name for f in files] == ["00000001.parquet", "00000002.parquet"]
    assert pq.read_table(files[1]).column("offset").to_pylist() == list(range(300, 400))
    # a staging file whose parquet file exists (crash between rename and unlink) is not converted twice
    (files[1].parent / ".00000002.arrows").write_bytes(b"")
    third = ParquetSink("p", "pq", ParquetOptions(path=str(tmp_path)))
    third.open()
    third.close()
    assert len(list(tmp_path.rglob("*.parquet"))) == 2 and not list(tmp_path.rglob(".*"))


def test_parquet_schema_change_starts_a_new_file(tmp_path: Path) -> None:
    from dbus_ray.model import Position, RowChange, TableRows

    def part(after: dict) -> TableRows:
        image = pa.struct([(k, pa.int64() if k == "id" else pa.string()) for k in after])
        return TableRows.from_changes([RowChange("p", "s", "t", "insert", {}, None, after, Position(), "x", 0, 0)],
                                      image)

    sink = ParquetSink("p", "pq", ParquetOptions(path=str(tmp_path)))
    sink.open()
    sink.write(RowBatch("p", 1, [part({"id": 1}), part({"id": 2, "added": "x"})]))
    sink.close()
    files = sorted(tmp_path.rglob("*.parquet"))
    assert [pq.read_table(f).column("after").to_pylist() for f in files] == [[{"id": 1}], [{"id": 2, "added": "x"}]]


@pytest.mark.usefixtures("ray_session")
def test_jsonl_rotation_by_size_and_resume(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    limit = 50_000
    cfg = config(tmp_path, "jsonl-rot", {"rows": 6000, "keys": 100},
                 [{"name": "f", "type": "jsonl", "path": str(path), "max_bytes": limit}])
    first = run_pipeline(cfg, max_rows=2100, interval=0.05)
    assert first["rows_delivered"] == 2100
    before = sorted(tmp_path.glob("out.*.jsonl"))
    second = run_pipeline(cfg, until_caught_up=True, interval=0.05)
    assert second["rows_delivered"] == 3900
    files = sorted(tmp_path.glob("out.*.jsonl"))
    assert not path.exists()
    assert [f.name for f in files] == [f"out.{i:06d}.jsonl" for i in range(1, len(files) + 1)]
    assert len(files) > len(before) > 1
    assert all(f.stat().st_size <= limit for f in files)
    assert all(f.stat().st_size > limit - 400 for f in files[:-1])  # filled up to about a line of the limit
    rows = [json.loads(line) for f in files for line in f.read_text().splitlines()]
    assert [r["pos"]["offset"] for r in rows] == list(range(6000))


def test_jsonl_line_longer_than_max_bytes_gets_its_own_file(tmp_path: Path) -> None:
    from dbus_ray.sinks.jsonl import JsonlOptions, JsonlSink

    sink = JsonlSink("p", "f", JsonlOptions(path=str(tmp_path / "x.jsonl"), max_bytes=10))
    sink.open()
    sink.write(mock_batches(1, 3)[0])
    sink.close()
    files = sorted(tmp_path.iterdir())
    assert [f.name for f in files] == ["x.000001.jsonl", "x.000002.jsonl", "x.000003.jsonl"]
    assert [len(f.read_text().splitlines()) for f in files] == [1, 1, 1]
