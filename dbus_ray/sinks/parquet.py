"""Sink `parquet`: the rows of each table in Parquet files, `<path>/<db>/<table>/<number>.parquet`, a new file
every `max_rows` rows or `max_seconds` seconds (after the file's first row), whichever comes first.

Columns: the `TableRows` columns as they are (the meta columns `op`, `file`, `offset`, `gtid`, `index`,
`txid`, `ts`, `read_ts`, then the `before` and `after` structs with the table's column types); the schema
metadata holds `dbus.db`, `dbus.table` and `dbus.key` (the primary key columns as JSON). A table whose
column types change (ALTER TABLE) starts a new file.

Durability (a batch is acknowledged only once its rows survive a crash): a Parquet file is unreadable until
its footer is written, so rows are first appended to a hidden staging file next to it,
`.<number>.arrows` (Arrow IPC stream: readable up to its last complete record batch), which is fsync'ed
before `write` returns. Closing a file converts its staging file to `<number>.parquet.tmp`, fsyncs it,
renames it to `<number>.parquet` (atomic: readers never see a partial file) and removes the staging file.
On open, staging files a crashed writer left behind are converted the same way (once: a staging file whose
Parquet file exists is only removed). Readers that skip hidden files (pyarrow.dataset, Spark, DuckDB) see
only complete files. A clean stop closes every file.

Files are never torn: when a batch cannot be written (`No space left on device`, any OSError), every staging
file the batch touched is cut back to its last complete (fsync'ed) record batch and closed, a Parquet file
being written is removed, and the error names the file. The cut staging files are converted into Parquet
files by the next write (the retry) or, after a crash, by the next open; later rows go to new files.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

import pyarrow as pa
import pyarrow.parquet as pq

from dbus_ray.config import Invalid
from dbus_ray.model import RowBatch, TableRows
from dbus_ray.registry import Sink, sink

log = logging.getLogger("dbus.parquet")

FILE_RE = re.compile(r"^\.?(\d{8})\.(parquet|arrows)$")


@dataclass
class ParquetOptions:
    path: str  # a directory
    max_rows: int = 1_000_000  # rows per file
    max_seconds: float = 300.0  # a file is closed this long after its first row
    compression: Literal["zstd", "snappy", "gzip", "lz4", "none"] = "zstd"
    row_group_rows: int = 128 * 1024

    def __post_init__(self) -> None:
        if not self.path.strip():
            raise Invalid("path", "must not be empty")
        if self.max_rows < 1:
            raise Invalid("max_rows", "must be at least 1")
        if self.max_seconds <= 0:
            raise Invalid("max_seconds", "must be positive")
        if self.row_group_rows < 1:
            raise Invalid("row_group_rows", "must be at least 1")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_staging(path: Path, crashed: bool) -> pa.Table | None:
    """The record batches of a staging file. `crashed` (a file a crashed writer left): a last batch the crash
    cut off is left out, with a warning (it was never fsynced, so never acknowledged), and a file cut before
    its schema holds none (None). A file closed cleanly must read whole: anything else raises, and so does an
    OSError of either (its rows stay in the staging file, never deleted unread). An empty file holds none."""
    batches = []
    if path.stat().st_size == 0:  # cut back to nothing (no batch was ever fsynced)
        return None
    with pa.OSFile(str(path), "rb") as f:
        try:
            reader = pa.ipc.open_stream(f)
        except (pa.ArrowInvalid, EOFError, OSError) as exc:
            if crashed and getattr(exc, "errno", None) is None:
                return None  # cut within its schema: no batch after it
            raise
        while True:
            try:
                batches.append(reader.read_next_batch())
            except StopIteration:
                break
            except (pa.ArrowInvalid, EOFError, OSError) as exc:  # Arrow's short read: an OSError without errno
                if not crashed or getattr(exc, "errno", None) is not None:
                    raise
                log.warning("staging file %s: keeping %d complete record batches (%s)", path, len(batches), exc)
                break
    return pa.Table.from_batches(batches, schema=reader.schema)


class TableFile:
    """The open file of one table: its staging stream and what it holds."""

    def __init__(self, directory: Path, number: int, rows: TableRows) -> None:
        self.directory = directory
        self.number = number
        self.schema = rows.data.schema.with_metadata(
            {"dbus.db": rows.db, "dbus.table": rows.table, "dbus.key": json.dumps(list(rows.key))})
        self.staging = directory / f".{number:08d}.arrows"
        self.final = directory / f"{number:08d}.parquet"
        self.handle: IO[bytes] = open(self.staging, "wb")
        self.writer = pa.ipc.new_stream(self.handle, self.schema)
        self.rows = 0
        self.opened = time.monotonic()
        self.dirty = False
        self.durable = 0  # the staging file's length after its last complete, fsync'ed record batch

    def append(self, data: pa.RecordBatch) -> None:
        self.writer.write_batch(data.replace_schema_metadata(self.schema.metadata))
        self.rows += data.num_rows
        self.dirty = True

    def sync(self) -> None:
        if self.dirty:
            self.handle.flush()
            os.fsync(self.handle.fileno())
            self.dirty = False
            self.durable = self.handle.tell()

    def abandon(self) -> None:
        """After a failed write: close the stream without another byte, cut the staging file back to its
        last complete record batch."""
        try:
            self.handle.close()  # may fail flushing its buffer: the cut below removes those bytes anyway
        except OSError:
            pass
        os.truncate(self.staging, self.durable)

    def close_stream(self) -> None:
        self.writer.close()
        self.handle.flush()
        self.handle.close()


@sink("parquet")
class ParquetSink(Sink):
    Options = ParquetOptions

    def open(self) -> None:
        self.root = Path(os.path.expanduser(self.options.path))
        self.root.mkdir(parents=True, exist_ok=True)
        self.files: dict[tuple[str, str], TableFile] = {}
        self.next_number: dict[Path, int] = {}
        self.lock = threading.Lock()
        self.closed_files: list[Path] = []
        self.pending: list[Path] = []  # staging files cut back after a failed write, to convert on retry
        self.recover()
        self.stopping = threading.Event()
        self.timer = threading.Thread(target=self._timer, name=f"parquet-{self.name}", daemon=True)
        self.timer.start()

    # ------------------------------------------------------------------ files
    def recover(self) -> None:
        """Convert the staging files a crashed writer left into Parquet files."""
        for tmp in self.root.glob("*/*/*.parquet.tmp"):
            tmp.unlink()
        for staging in sorted(self.root.glob("*/*/.*.arrows")):
            self._convert(staging, crashed=True)

    def _convert(self, staging: Path, crashed: bool) -> None:
        final = staging.with_name(staging.name[1:].replace(".arrows", ".parquet"))
        if not final.exists():
            table = read_staging(staging, crashed)
            if table is not None and table.num_rows:
                self._write_parquet(table, final)
                log.info("[%s] parquet sink %s recovered %d rows into %s", self.pipeline, self.name,
                         table.num_rows, final)
        staging.unlink()

    def _retry_pending(self) -> None:
        while self.pending:
            self._convert(self.pending[0], crashed=False)
            self.pending.pop(0)

    def _number(self, directory: Path) -> int:
        number = self.next_number.get(directory)
        if number is None:
            found = [int(m.group(1)) for p in directory.iterdir() if (m := FILE_RE.match(p.name))]
            number = max(found, default=0) + 1
        self.next_number[directory] = number + 1
        return number

    def _file_for(self, rows: TableRows) -> TableFile:
        key = (rows.db, rows.table)
        current = self.files.get(key)
        if current is not None and not current.schema.remove_metadata().equals(rows.data.schema.remove_metadata()):
            self._roll(key)  # the table's columns changed: a new file
            current = None
        if current is None:
            directory = self.root / rows.db / rows.table
            directory.mkdir(parents=True, exist_ok=True)
            current = self.files[key] = TableFile(directory, self._number(directory), rows)
        return current

    def _write_parquet(self, table: pa.Table, final: Path) -> None:
        tmp = final.with_name(final.name + ".tmp")
        compression = None if self.options.compression == "none" else self.options.compression
        try:
            with open(tmp, "wb") as f:
                pq.write_table(table, f, compression=compression, row_group_size=self.options.row_group_rows)
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            tmp.unlink(missing_ok=True)  # never leave half a Parquet file
            raise
        os.rename(tmp, final)
        _fsync_dir(final.parent)

    def _roll(self, key: tuple[str, str]) -> None:
        tf = self.files.pop(key)
        try:
            tf.close_stream()
            table = read_staging(tf.staging, crashed=False)
            if table is not None and table.num_rows:
                self._write_parquet(table, tf.final)
                self.closed_files.append(tf.final)
        except BaseException:
            tf.abandon()
            self.pending.append(tf.staging)
            raise
        tf.staging.unlink()

    def _roll_aged(self) -> None:
        limit = self.options.max_seconds
        now = time.monotonic()
        for key in [k for k, tf in self.files.items() if now - tf.opened >= limit]:
            self._roll(key)

    def _timer(self) -> None:
        interval = min(1.0, self.options.max_seconds / 4)
        while not self.stopping.wait(interval):
            with self.lock:
                try:
                    self._roll_aged()
                except Exception:  # the next write retries the roll and reports the failure
                    log.exception("[%s] parquet sink %s: closing a file failed", self.pipeline, self.name)

    # ------------------------------------------------------------------ writing
    def write(self, batch: RowBatch) -> None:
        with self.lock:
            touched: list[TableFile] = []
            try:
                self._retry_pending()
                self._write(batch, touched)
            except OSError as exc:
                for tf in touched:  # cut back what this batch appended: no staging file keeps a torn batch
                    key = (tf.schema.metadata[b"dbus.db"].decode(), tf.schema.metadata[b"dbus.table"].decode())
                    if self.files.get(key) is tf:
                        del self.files[key]
                        tf.abandon()
                        self.pending.append(tf.staging)
                where = exc.filename or (touched[-1].staging if touched else self.root)
                raise OSError(exc.errno, f"cannot write {where}: {exc.strerror or exc} (cut back to the last "
                                         "complete batch)") from None

    def _write(self, batch: RowBatch, touched: list[TableFile]) -> None:
        limit = self.options.max_rows
        for part in batch.parts:
            data, offset = part.data, 0
            while offset < data.num_rows:
                tf = self._file_for(part)
                if tf not in touched:
                    touched.append(tf)
                n = min(limit - tf.rows, data.num_rows - offset)
                tf.append(data.slice(offset, n))
                offset += n
                if tf.rows >= limit:
                    self._roll((part.db, part.table))  # closed, renamed, fsync'ed: durable
        for tf in touched:
            if self.files.get((tf.schema.metadata[b"dbus.db"].decode(),
                               tf.schema.metadata[b"dbus.table"].decode())) is tf:
                tf.sync()
        self._roll_aged()

    def close(self) -> None:
        stopping = getattr(self, "stopping", None)
        if stopping is None:
            return
        stopping.set()
        self.timer.join(timeout=10)
        with self.lock:
            for key in list(self.files):
                self._roll(key)
