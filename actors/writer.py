"""Writer actor `dbus:<pipeline>:writer:<sink>`: delivers batches to one sink, one at a time and in
order, then acknowledges each to the reader, which advances the checkpoint. The rows come as object-store
references (`dbus_ray.parcel`), fetched here.

A batch that fails is the writer's last: it reports the failure to the reader (after every earlier
acknowledgement, so in order) and refuses every later batch without touching the sink, so nothing after
a row that was not delivered is delivered or acknowledged, and the checkpoint stays before it. The
pipeline stops; the controller restarts it from that checkpoint."""

from __future__ import annotations

import logging
import time
from typing import Any

import ray

from dbus_ray import heap, registry
from dbus_ray.config import PipelineConfig, SinkConfig
from dbus_ray.metrics import WriterMetrics
from dbus_ray.parcel import Parcel

log = logging.getLogger("dbus.writer")



# `write` runs on the default thread, one batch at a time and in order; `stats` answers on its own
# thread so a health check gets through while a slow destination holds a write.
class Writer:
    def __init__(self, cfg: PipelineConfig, sink: SinkConfig, reader: Any) -> None:
        heap.use_system_pool()
        self.pipeline = cfg.name
        self.sink_name = sink.name
        self.sink = registry.sink_class(sink.type)(cfg.name, sink.name, sink.options)
        self.sink.open()
        self.reader = reader
        self.rows = 0
        self.batches = 0
        self.last_latency = 0.0
        self.acked_seq = 0  # the last batch acknowledged
        self.failure: str | None = None  # why a batch failed: the writer delivers nothing after it
        self.metrics = WriterMetrics(cfg.name, sink.name)

    def write(self, parcel: Parcel) -> int:
        return self.deliver(parcel, None)

    def deliver(self, parcel: Parcel, fetched: list[Any] | None) -> int:
        """Write the parcel's rows (`fetched`: its batches, when the caller fetched them already)."""
        if self.failure is not None:
            raise RuntimeError(f"{self.failure} (batch {parcel.seq} not written: the sink failed before it)")
        started = time.monotonic()
        try:
            batch = parcel.unpack(fetched if fetched is not None else ray.get(parcel.refs))
            with heap.collector_paused:  # see dbus_ray.heap: the per-row path's dicts trigger no collection
                self.sink.write(batch)
        except Exception as exc:
            self.metrics.errors.inc()
            self.failure = f"sink {self.sink_name} ({self.sink.type_name}): {exc}"
            self.reader.sink_failed.remote(self.sink_name, self.acked_seq + 1, self.failure)
            raise RuntimeError(self.failure) from exc
        self.last_latency = time.monotonic() - started
        self.metrics.latency.observe(self.last_latency)
        if batch.num_rows:  # a sink whose `match` takes none of a batch's tables gets it without rows
            self.metrics.rows_out.inc(batch.num_rows)  # (Ray's counters refuse an increment of 0)
        self.rows += batch.num_rows
        self.batches += 1
        self.acked_seq = batch.seq
        self.reader.ack.remote(self.sink_name, batch.seq)
        del batch
        heap.trim()
        return parcel.rows

    def close(self) -> None:
        self.sink.close()

    @ray.method(concurrency_group="control")
    def stats(self) -> dict[str, Any]:
        return {"rows": self.rows, "batches": self.batches, "last_latency_s": self.last_latency,
                "failure": self.failure}


#: the stage as its own actor (`flow.placement: spread` and `split`); `Writer` itself runs inside a fused pipeline
WriterActor = ray.remote(num_cpus=0, max_restarts=0, concurrency_groups={"control": 1})(Writer)
