"""Files are never torn: a full disk (a real, small tmpfs) or a writer killed in the middle of a line leaves
every jsonl line parsable and every Parquet file complete; the retry after space came back delivers the
batch once. Every line is checked with the json module, every Parquet file with pyarrow."""

from __future__ import annotations

import errno
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from dbus_ray.model import RowBatch
from dbus_ray.sinks.jsonl import JsonlOptions, JsonlSink
from dbus_ray.sinks.parquet import ParquetOptions, ParquetSink
from dbus_ray.sources.mock import MockOptions, MockSource
from tests.support.helpers import small_tmpfs

DISK_BYTES = 256 * 1024


def batches(n: int, size: int) -> list[RowBatch]:
    source = MockSource("p", MockOptions(rows=n * size, keys=50))
    source.open(None)
    return [source.poll(size, i + 1) for i in range(n)]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of DISK_BYTES mounted for the test (the sandbox runs tests as root)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    with small_tmpfs(mount, DISK_BYTES):
        yield mount


def fill(disk: Path, keep_free: int) -> Path:
    """Take all space on `disk` but about `keep_free` bytes with a filler file (removed to make room)."""
    filler = disk / f"filler-{uuid.uuid4().hex}"
    st = os.statvfs(disk)
    free = st.f_bavail * st.f_frsize
    with open(filler, "wb") as f:
        f.write(b"\0" * max(0, free - keep_free))
    return filler


def jsonl_offsets(path: Path) -> list[int]:
    return [json.loads(line)["pos"]["offset"] for line in path.read_bytes().decode().split("\n")[:-1]]


def write_until_full(sink: Any, bs: list[Any]) -> tuple[int, OSError]:
    """Write the batches until the disk is full: (how many were written, the ENOSPC error), some and not all."""
    written = 0
    with pytest.raises(OSError) as failure:
        for b in bs:
            sink.write(b)
            written += 1
    assert failure.value.errno == errno.ENOSPC
    assert 0 < written < len(bs)
    return written, failure.value


def test_jsonl_full_disk_leaves_whole_lines_and_the_retry_appends_once(small_disk: Path) -> None:
    path = small_disk / "out.jsonl"
    bs = batches(8, 100)  # ~25 kB per batch, 200 kB in all
    filler = fill(small_disk, 60 * 1024)
    sink = JsonlSink("p", "f", JsonlOptions(path=str(path)))
    sink.open()
    written, failure = write_until_full(sink, bs)
    assert jsonl_offsets(path) == list(range(written * 100))  # every line parses: the torn one was cut off
    assert path.read_bytes().endswith(b"\n")
    assert str(path) in str(failure) and "No space left on device" in str(failure)
    filler.unlink()  # space again: the writer retries the failed batch, then goes on
    for b in bs[written:]:
        sink.write(b)
    sink.close()
    assert jsonl_offsets(path) == list(range(800))


def test_jsonl_failed_cut_is_made_by_the_retry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ENOSPC in the middle of a batch and the cut-back failing too (e.g. an I/O error): the next write
    cuts the half line off before it appends."""
    import dbus_ray.sinks.jsonl as jsonl

    path = tmp_path / "out.jsonl"
    bs = batches(3, 50)
    sink = JsonlSink("p", "f", JsonlOptions(path=str(path)))
    sink.open()
    sink.write(bs[0])
    real_write, real_truncate = os.write, os.ftruncate

    def half_then_full(fd: int, data) -> int:
        monkeypatch.setattr(jsonl.os, "write", lambda fd, data: (_ for _ in ()).throw(
            OSError(errno.ENOSPC, "No space left on device")))
        return real_write(fd, bytes(data[: len(data) // 2]))

    def broken_truncate(fd: int, length: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(jsonl.os, "write", half_then_full)
    monkeypatch.setattr(jsonl.os, "ftruncate", broken_truncate)
    with pytest.raises(OSError, match=f"cannot write {path}: No space left on device"):
        sink.write(bs[1])
    assert not path.read_bytes().endswith(b"\n")  # torn for now: the cut failed
    monkeypatch.setattr(jsonl.os, "write", real_write)
    monkeypatch.setattr(jsonl.os, "ftruncate", real_truncate)
    sink.write(bs[1])
    sink.write(bs[2])
    sink.close()
    assert jsonl_offsets(path) == list(range(150))


@pytest.mark.parametrize("rotate", [None, 4000])
def test_jsonl_writer_killed_mid_line_leaves_a_clean_file_after_reopen(tmp_path: Path, rotate: int | None) -> None:
    path = tmp_path / "out.jsonl"
    bs = batches(3, 20)
    sink = JsonlSink("p", "f", JsonlOptions(path=str(path), max_bytes=rotate))
    sink.open()
    sink.write(bs[0])
    sink.write(bs[1])
    last = sorted(tmp_path.iterdir())[-1]
    with open(last, "ab") as f:  # what a writer killed inside a write() leaves
        f.write(b'{"pipeline":"p","db":"mock","table":"items","op":"upd')
    again = JsonlSink("p", "f", JsonlOptions(path=str(path), max_bytes=rotate))
    again.open()
    again.write(bs[2])  # the source repeats the unacknowledged batch
    again.close()
    files = sorted(tmp_path.iterdir())
    offsets = [o for f in files for o in jsonl_offsets(f)]
    assert offsets == list(range(60))


def test_parquet_full_disk_keeps_complete_files_and_the_retry_delivers_once(small_disk: Path) -> None:
    out = small_disk / "pq"
    bs = batches(200, 100)
    filler = fill(small_disk, 100 * 1024)
    sink = ParquetSink("p", "pq", ParquetOptions(path=str(out), max_rows=2000, compression="none"))
    sink.open()
    written, failure = write_until_full(sink, bs)
    assert not list(out.rglob("*.tmp")), "half a Parquet file left"
    for f in out.rglob("*.parquet"):
        pq.read_table(f)  # complete
    assert str(out) in str(failure) and "No space left on device" in str(failure)
    filler.unlink()
    for b in bs[written:written + 5]:  # the retry, then more
        sink.write(b)
    sink.close()
    assert not list(out.rglob(".*")) and not list(out.rglob("*.tmp"))
    offsets = [o for f in sorted(out.rglob("*.parquet")) for o in pq.read_table(f).column("offset").to_pylist()]
    assert offsets == list(range((written + 5) * 100))


def test_parquet_read_error_at_a_roll_keeps_the_staging_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An I/O error reading a cleanly closed staging file (EIO, EMFILE) fails the roll: its acknowledged rows
    stay in the staging file and the retry delivers them, never a partial or missing Parquet file with the
    staging file deleted."""
    import pyarrow as pa

    from dbus_ray.sinks import parquet

    out = tmp_path / "pq"
    bs = batches(4, 100)
    sink = ParquetSink("p", "pq", ParquetOptions(path=str(out), max_rows=100_000, compression="none"))
    sink.open()
    for b in bs[:3]:
        sink.write(b)
    real = pa.OSFile
    failures = iter([OSError(errno.EIO, "Input/output error")])

    def flaky(path: str, mode: str = "r") -> Any:
        exc = next(failures, None) if mode == "rb" else None
        if exc is not None:
            raise exc
        return real(path, mode)

    monkeypatch.setattr(parquet.pa, "OSFile", flaky)
    with pytest.raises(OSError, match="Input/output error"):
        sink.close()  # rolls the open file
    staging = list(out.rglob(".*.arrows"))
    assert len(staging) == 1 and not list(out.rglob("*.parquet"))  # the rows are still there, unread
    sink = ParquetSink("p", "pq", ParquetOptions(path=str(out), max_rows=100_000, compression="none"))
    sink.open()  # converts what the last one left
    sink.write(bs[3])
    sink.close()
    offsets = [o for f in sorted(out.rglob("*.parquet")) for o in pq.read_table(f).column("offset").to_pylist()]
    assert offsets == list(range(400))


def test_parquet_recovery_keeps_the_complete_batches_of_a_crashed_writer(tmp_path: Path) -> None:
    """A writer killed in the middle of a record batch: the next one converts the complete (fsynced) batches
    and leaves out only the cut one."""
    out = tmp_path / "pq"
    bs = batches(3, 100)
    sink = ParquetSink("p", "pq", ParquetOptions(path=str(out), max_rows=100_000, compression="none"))
    sink.open()
    for b in bs:
        sink.write(b)
    staging = next(out.rglob(".*.arrows"))
    whole = staging.read_bytes()
    crashed = tmp_path / "crashed"
    (crashed / staging.parent.relative_to(out)).mkdir(parents=True)
    (crashed / staging.relative_to(out)).write_bytes(whole[:-200])  # the last batch cut
    sink.close()
    sink = ParquetSink("p", "pq", ParquetOptions(path=str(crashed), max_rows=100_000, compression="none"))
    sink.open()
    sink.close()
    offsets = [o for f in sorted(crashed.rglob("*.parquet")) for o in pq.read_table(f).column("offset").to_pylist()]
    assert offsets == list(range(200))
