"""Router actor `dbus:<pipeline>:router`: applies the filter stage to each batch and fans it out to
the batcher of every sink whose `match` patterns select the batch's tables. Decisions are made per
table run, never per row. Every sink receives every batch (possibly with no rows), so its
acknowledgements keep the checkpoint moving even when its tables are quiet."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import ray

from dbus_ray.config import PipelineConfig
from dbus_ray.model import RowBatch
from dbus_ray.routing import TableMatcher
from dbus_ray.sequencer import Sequencer

log = logging.getLogger("dbus.router")


def build_routes(cfg: PipelineConfig) -> tuple[list[TableMatcher], list[TableMatcher]]:
    """(filters every row must pass, one matcher per sink)."""
    filters = [TableMatcher(f.options.include, f.options.exclude) for f in cfg.filters if f.type == "select"]
    sinks = [TableMatcher(s.match) for s in cfg.sinks]
    return filters, sinks


def route(batch: RowBatch, filters: list[TableMatcher], sinks: list[TableMatcher]) -> list[RowBatch]:
    """One batch per sink, in sink order, each holding the table runs that sink receives."""
    kept = [p for p in batch.parts if all(f(p.db, p.table) for f in filters)]
    out = []
    for match in sinks:
        parts = [p for p in kept if match(p.db, p.table)]
        out.append(RowBatch(batch.pipeline, batch.seq, parts, batch.checkpoint, batch.ts))
    return out


@ray.remote(num_cpus=0, max_restarts=0, max_concurrency=64)
class Router:
    def __init__(self, cfg: PipelineConfig, batchers: list[Any]) -> None:
        self.name = cfg.name
        self.filters, self.sinks = build_routes(cfg)
        self.batchers = batchers
        self.rows_in = 0
        self.rows_out = 0
        self.order = Sequencer()

    async def push(self, batch: RowBatch) -> None:
        await self.order.wait(batch.seq)
        self.rows_in += batch.num_rows
        outs = route(batch, self.filters, self.sinks)
        self.rows_out += sum(b.num_rows for b in outs)
        calls = [b.push.remote(out) for b, out in zip(self.batchers, outs)]
        await self.order.advance(batch.seq)
        await asyncio.gather(*calls)

    async def flush(self) -> None:
        await asyncio.gather(*[b.flush.remote() for b in self.batchers])

    async def stats(self) -> dict[str, int]:
        return {"rows_in": self.rows_in, "rows_out": self.rows_out}
