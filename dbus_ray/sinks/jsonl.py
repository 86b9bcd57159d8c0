"""Sink `jsonl`: one JSON line per row change (the documented form), appended to a file. A batch is
acknowledged after it is written and fsync'ed.

Rotation: with `max_bytes`, lines go to numbered files next to `path` (`out.jsonl` -> `out.000001.jsonl`,
`out.000002.jsonl`, ...), a new file starting before a line would take the current one past `max_bytes` (a
single longer line gets a file of its own). A restarted sink appends to the highest-numbered file. A file
is fsync'ed before the next one is started, so every acknowledged line is on disk."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from dbus_ray.config import Invalid
from dbus_ray.model import RowBatch, dumpb
from dbus_ray.registry import Sink, sink


@dataclass
class JsonlOptions:
    path: str
    fsync: bool = True
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
            self.file = open(path, "ab")
            return
        pattern = re.compile(re.escape(numbered(path, 0).name).replace("000000", r"(\d{6,})") + "$")
        found = [int(m.group(1)) for p in path.parent.iterdir() if (m := pattern.match(p.name))]
        self.number = max(found, default=1)
        self.file = open(numbered(path, self.number), "ab")

    def _sync(self) -> None:
        self.file.flush()
        if self.options.fsync:
            os.fsync(self.file.fileno())

    def write(self, batch: RowBatch) -> None:
        if not batch.parts:
            return
        lines = [dumpb(record) + b"\n" for record in batch.records()]
        limit = self.options.max_bytes
        if limit is None:
            self.file.write(b"".join(lines))
            self._sync()
            return
        size = self.file.tell()
        chunk: list[bytes] = []
        for line in lines:
            if size and size + len(line) > limit:
                self.file.write(b"".join(chunk))
                chunk = []
                self._sync()
                self.file.close()
                self.number += 1
                self.file = open(numbered(self.path, self.number), "ab")
                size = 0
            chunk.append(line)
            size += len(line)
        self.file.write(b"".join(chunk))
        self._sync()

    def close(self) -> None:
        self.file.close()
