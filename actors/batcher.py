"""Batcher actor `dbus:<pipeline>:batcher:<sink>`: gathers routed batches for one sink and hands them
to its writer as one batch of at most `flow.sink_batch_rows` rows, or whatever it holds after
`flow.linger_ms` once the writer is done with the batch before (with 0, the default: at once, so a
row waits only while the writer writes earlier ones, and batches grow with the rate). Batches keep their
order; the merged batch carries the last one's sequence number and checkpoint, so one acknowledgement
covers all of them. The batcher never fetches rows: it counts
them from the parcels' heads and hands the writer their object-store references."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import ray

from dbus_ray.config import PipelineConfig
from dbus_ray.errors import reason
from dbus_ray.parcel import Parcel
from dbus_ray.sequencer import Sequencer

log = logging.getLogger("dbus.batcher")


class Batcher:
    def __init__(self, cfg: PipelineConfig, sink: str, writer: Any, reader: Any) -> None:
        self.name = cfg.name
        self.sink = sink
        self.limit = cfg.flow.sink_batch_rows
        self.linger = cfg.flow.linger_ms / 1000
        self.writer = writer
        self.reader = reader
        self.buffer: list[Parcel] = []
        self.rows = 0
        self.since = 0.0
        self.timer: asyncio.Task | None = None
        self.flushes = 0
        self.order = Sequencer()

    async def push(self, parcel: Parcel) -> None:
        await self.order.wait(parcel.seq)
        if not self.buffer:
            self.since = time.monotonic()
        self.buffer.append(parcel)
        self.rows += parcel.rows
        call = self._submit() if self.rows >= self.limit else None
        await self.order.advance(parcel.seq)
        if call is not None:
            await self._delivered(call)
        elif self.timer is None:
            self.timer = asyncio.get_running_loop().create_task(self._linger())

    def _submit(self) -> ray.ObjectRef | None:
        """Hand what is buffered to the writer (no await in here: calls leave in buffer order)."""
        if not self.buffer:
            return None
        parcel = Parcel.merge(self.buffer)
        self.buffer, self.rows = [], 0
        self.flushes += 1
        return self.writer.write.remote(parcel)

    async def _delivered(self, call: ray.ObjectRef) -> None:
        try:
            await call
        except Exception as exc:
            self.reader.fail.remote(reason(exc))
            raise

    async def _linger(self) -> None:
        try:
            while self.buffer:
                wait = self.since + self.linger - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                    continue
                call = self._submit()
                if call is not None:
                    await self._delivered(call)
        except Exception:
            pass  # _delivered has reported the failure to the reader
        finally:
            self.timer = None

    async def flush(self) -> None:
        call = self._submit()
        if call is not None:
            await self._delivered(call)

    async def stats(self) -> dict[str, Any]:
        return {"buffered_rows": self.rows, "flushes": self.flushes}


#: the stage as its own actor (`flow.placement: spread`); `Batcher` itself runs inside a fused pipeline
BatcherActor = ray.remote(num_cpus=0, max_restarts=0, max_concurrency=64)(Batcher)
