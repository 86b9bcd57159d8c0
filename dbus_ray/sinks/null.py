"""Sink `null`: counts rows and drops them (benchmarks, dry runs). `delay_ms` makes each write take
that long, to see back-pressure from a slow destination."""

from __future__ import annotations

import time
from dataclasses import dataclass

from dbus_ray.model import RowBatch
from dbus_ray.registry import Sink, sink
from dbus_ray.validation import Invalid


@dataclass
class NullOptions:
    delay_ms: float = 0.0

    def __post_init__(self) -> None:
        if self.delay_ms < 0:
            raise Invalid("delay_ms", "must not be negative")


@sink("null")
class NullSink(Sink):
    Options = NullOptions

    def open(self) -> None:
        self.rows = 0

    def write(self, batch: RowBatch) -> None:
        if self.options.delay_ms:
            time.sleep(self.options.delay_ms / 1000)
        self.rows += batch.num_rows
