"""Sink `jsonl`: one JSON line per row change (the documented form), appended to a file. A batch is
acknowledged after it is written and fsync'ed."""

from __future__ import annotations

import os
from dataclasses import dataclass

from dbus_ray.config import Invalid
from dbus_ray.model import RowBatch
from dbus_ray.registry import Sink, sink


@dataclass
class JsonlOptions:
    path: str
    fsync: bool = True

    def __post_init__(self) -> None:
        if not self.path.strip():
            raise Invalid("path", "must not be empty")


@sink("jsonl")
class JsonlSink(Sink):
    Options = JsonlOptions

    def open(self) -> None:
        path = os.path.expanduser(self.options.path)
        if os.path.dirname(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
        self.file = open(path, "a", encoding="utf-8")

    def write(self, batch: RowBatch) -> None:
        if not batch.parts:
            return
        self.file.write("".join(change.to_json() + "\n" for change in batch.changes()))
        self.file.flush()
        if self.options.fsync:
            os.fsync(self.file.fileno())

    def close(self) -> None:
        self.file.close()
