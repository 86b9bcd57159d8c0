"""Sink `jsonl`: one JSON line per row change (the documented form), appended to a file. A batch is
acknowledged after it is written and fsync'ed.

Rotation: with `max_bytes`, lines go to numbered files next to `path` (`out.jsonl` -> `out.000001.jsonl`,
`out.000002.jsonl`, ...), a new file starting before a line would take the current one past `max_bytes` (a
single longer line gets a file of its own). A restarted sink appends to the highest-numbered file. A file
is fsync'ed before the next one is started, so every acknowledged line is on disk.

Files are never torn: a batch that cannot be written whole (`No space left on device`, any OSError) is cut
off again, back to the end of the last complete line, before the error is raised (naming the file); when
even that fails, the next write cuts it first. On open, a file a killed writer left with half a line is cut
back to its last complete line (a warning says how many bytes went)."""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from dbus_ray.config import Invalid
from dbus_ray.model import RowBatch, dumpb
from dbus_ray.registry import Sink, sink
from dbus_ray.serializers import json_columns
from dbus_ray.serializers.json import decimals_as_text
from dbus_ray.serializers.json_columns import messages

log = logging.getLogger("dbus.jsonl")


@dataclass
class JsonlOptions:
    path: str  # the file the lines are appended to (with max_bytes: the name numbered files are made from)
    fsync: bool = True  # fsync after each batch (off: faster, a crash may lose acknowledged lines)
    max_bytes: int | None = None  # rotate into numbered files of at most this many bytes

    def __post_init__(self) -> None:
        if not self.path.strip():
            raise Invalid("path", "must not be empty")
        if self.max_bytes is not None and self.max_bytes < 1:
            raise Invalid("max_bytes", "must be at least 1")


def numbered(path: Path, number: int) -> Path:
    """`out.jsonl` -> `out.000007.jsonl` (`out` -> `out.000007`)."""
    return path.with_name(f"{path.stem}.{number:06d}{path.suffix}") if path.suffix else \
        path.with_name(f"{path.name}.{number:06d}")


def complete_length(fd: int) -> int:
    """The length of the file up to and with its last newline (0 when it has none)."""
    end = os.lseek(fd, 0, os.SEEK_END)
    pos = end
    while pos > 0:
        start = max(0, pos - 65536)
        chunk = os.pread(fd, pos - start, start)
        cut = chunk.rfind(b"\n")
        if cut >= 0:
            return start + cut + 1
        pos = start
    return 0


class LineFile:
    """A file opened for appending whole lines: `append` writes all of it or, on an error, nothing."""

    def __init__(self, path: Path, fsync: bool) -> None:
        self.path = path
        self.fsync = fsync
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        self.size = complete_length(self.fd)
        self.torn: int | None = None  # a length the file must be cut back to before the next append
        end = os.lseek(self.fd, 0, os.SEEK_END)
        if end != self.size:
            log.warning("jsonl file %s ended in half a line: cut back to its last complete line (%d bytes removed)",
                        path, end - self.size)
            self._cut(self.size)

    def _cut(self, length: int) -> None:
        os.ftruncate(self.fd, length)
        if self.fsync:
            os.fsync(self.fd)
        self.torn = None

    def append(self, data: bytes) -> None:
        try:
            if self.torn is not None:  # an earlier append failed and could not be cut back then
                self._cut(self.torn)
            view = memoryview(data)
            while view:
                view = view[os.write(self.fd, view):]
            if self.fsync:
                os.fsync(self.fd)
        except OSError as exc:
            self.torn = self.size
            try:
                self._cut(self.size)
            except OSError:
                pass  # cut before the next append (or on the next open)
            raise OSError(exc.errno, f"cannot write {self.path}: {exc.strerror or exc} (the file was cut back "
                                     "to its last complete line)") from None
        self.size += len(data)

    def close(self) -> None:
        os.close(self.fd)


@sink("jsonl")
class JsonlSink(Sink):
    Options = JsonlOptions

    def open(self) -> None:
        path = Path(os.path.expanduser(self.options.path))
        if path.parent != Path("."):
            os.makedirs(path.parent, exist_ok=True)
        self.path = path
        if self.options.max_bytes is None:
            self.number = 0
            self.file = LineFile(path, self.options.fsync)
            return
        pattern = re.compile(re.escape(numbered(path, 0).name).replace("000000", r"(\d{6,})") + "$")
        found = [int(m.group(1)) for p in path.parent.iterdir() if (m := pattern.match(p.name))]
        self.number = max(found, default=1)
        self.file = LineFile(numbered(path, self.number), self.options.fsync)

    def write(self, batch: RowBatch) -> None:
        if not batch.parts:
            return
        lines = []
        for part in batch.parts:  # each line the row's JSON form, built column-wise when the run allows it
            small = part.num_rows < json_columns.MIN_ROWS  # (its Decimals cost less than converting them)
            built = None if small else messages(decimals_as_text(part), batch.pipeline)
            values = built.values if built is not None else map(dumpb, part.records(batch.pipeline))
            lines += [value + b"\n" for value in values]
        limit = self.options.max_bytes
        if limit is None:
            self.file.append(b"".join(lines))
            return
        size = self.file.size
        chunk: list[bytes] = []
        for line in lines:
            if size and size + len(line) > limit:
                self.file.append(b"".join(chunk))  # fsync'ed before the next file starts
                chunk = []
                self.file.close()
                self.number += 1
                self.file = LineFile(numbered(self.path, self.number), self.options.fsync)
                size = 0
            chunk.append(line)
            size += len(line)
        self.file.append(b"".join(chunk))

    def close(self) -> None:
        self.file.close()
