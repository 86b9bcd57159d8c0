"""Sink `null`: counts rows and drops them (benchmarks, dry runs)."""

from __future__ import annotations

from dbus_ray.model import RowBatch
from dbus_ray.registry import Sink, sink


@sink("null")
class NullSink(Sink):
    def open(self) -> None:
        self.rows = 0

    def write(self, batch: RowBatch) -> None:
        self.rows += batch.num_rows
