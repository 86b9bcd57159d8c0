"""Sink `stdout`: one JSON line per row change on the writer's standard output (shown in the
driver's console and in the Ray dashboard's actor logs)."""

from __future__ import annotations

import sys

from dbus_ray.model import RowBatch, dumps
from dbus_ray.registry import Sink, sink


@sink("stdout")
class StdoutSink(Sink):
    def write(self, batch: RowBatch) -> None:
        if batch.parts:
            sys.stdout.write("".join(dumps(record) + "\n" for record in batch.records()))
            sys.stdout.flush()
