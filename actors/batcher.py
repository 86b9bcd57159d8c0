"""Batcher actor `dbus:<pipeline>:batcher:<sink>`: gathers routed batches for one sink and hands them
to its writer as one batch of at most `flow.sink_batch_rows` rows, or whatever it holds after
`flow.linger_ms`. Batches keep their order; the merged batch carries the last one's sequence number
and checkpoint, so one acknowledgement covers all of them."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import ray

from dbus_ray.config import PipelineConfig
from dbus_ray.errors import reason
from dbus_ray.model import RowBatch

log = logging.getLogger("dbus.batcher")


def merge(batches: list[RowBatch]) -> RowBatch:
    last = batches[-1]
    parts = [p for b in batches for p in b.parts]
    return RowBatch(last.pipeline, last.seq, parts, last.checkpoint, max(b.ts for b in batches))


@ray.remote(num_cpus=0, max_restarts=0, max_concurrency=64)
class Batcher:
    def __init__(self, cfg: PipelineConfig, sink: str, writer: Any, reader: Any) -> None:
        self.name = cfg.name
        self.sink = sink
        self.limit = cfg.flow.sink_batch_rows
        self.linger = cfg.flow.linger_ms / 1000
        self.writer = writer
        self.reader = reader
        self.buffer: list[RowBatch] = []
        self.rows = 0
        self.since = 0.0
        self.timer: asyncio.Task | None = None
        self.flushes = 0

    async def push(self, batch: RowBatch) -> None:
        if not self.buffer:
            self.since = time.monotonic()
        self.buffer.append(batch)
        self.rows += batch.num_rows
        if self.rows >= self.limit:
            await self.flush()
        elif self.timer is None:
            self.timer = asyncio.get_running_loop().create_task(self._linger())

    async def _linger(self) -> None:
        try:
            while self.buffer:
                wait = self.since + self.linger - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                    continue
                await self.flush()
        except Exception:
            pass  # flush() has reported the failure to the reader
        finally:
            self.timer = None

    async def flush(self) -> None:
        if not self.buffer:
            return
        batch = merge(self.buffer)
        self.buffer, self.rows = [], 0
        self.flushes += 1
        try:
            await self.writer.write.remote(batch)
        except Exception as exc:
            self.reader.fail.remote(reason(exc))
            raise

    async def stats(self) -> dict[str, Any]:
        return {"buffered_rows": self.rows, "flushes": self.flushes}
