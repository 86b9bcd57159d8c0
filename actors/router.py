"""Router actor `dbus:<pipeline>:router`: applies the filter stage (the operators of `filters:`, in config
order, see `dbus_ray.operators`) to each table run of each batch and fans the runs out to the batcher of
every sink whose `match` patterns select their table (narrowed by `route` operators, row by row). Every
sink receives every batch (possibly with no rows), so its acknowledgements keep the checkpoint moving even
when its tables are quiet or the operators dropped every row.

Batches arrive as parcels (`dbus_ray.parcel`): a sink that gets a batch unchanged (no operators, every
table selected) is handed the same object-store references, without the router fetching the rows."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import ray

from dbus_ray.config import PipelineConfig
from dbus_ray.errors import DbusError, reason
from dbus_ray.model import RowBatch
from dbus_ray.operators import Operator, apply_operators, build_operators
from dbus_ray.parcel import Parcel
from dbus_ray.routing import TableMatcher
from dbus_ray.sequencer import Sequencer

log = logging.getLogger("dbus.router")


def build_routes(cfg: PipelineConfig) -> tuple[list[Operator], list[tuple[str, TableMatcher]]]:
    """(the operators every run goes through, (name, matcher) of each sink in sink order)."""
    names = [s.name for s in cfg.sinks]
    ops = build_operators(cfg.filters, cfg.name, names)
    sinks = [(s.name, TableMatcher(s.match)) for s in cfg.sinks]
    return ops, sinks


def route(batch: RowBatch, ops: list[Operator], sinks: list[tuple[str, TableMatcher]]) -> list[RowBatch]:
    """One batch per sink, in sink order, each holding the table runs (in source order) that sink receives.
    Every sink gets a batch with the sequence number and checkpoint, even one without rows."""
    runs = apply_operators(batch.parts, ops)
    out = []
    for name, match in sinks:
        parts = []
        for run in runs:
            if match(run.rows.db, run.rows.table):
                rows = run.for_sink(name)
                if rows is not None:
                    parts.append(rows)
        out.append(RowBatch(batch.pipeline, batch.seq, parts, batch.checkpoint, batch.ts))
    return out


class Router:
    def __init__(self, cfg: PipelineConfig, batchers: list[Any], reader: Any) -> None:
        self.name = cfg.name
        self.reader = reader
        self.ops, self.sinks = build_routes(cfg)
        self.batchers = batchers
        self.rows_in = 0
        self.rows_out = 0
        self.order = Sequencer()
        self.error: str | None = None

    def _unchanged(self, parcel: Parcel) -> list[bool]:
        """For each sink: whether it gets the parcel as it is (so its rows need not be fetched)."""
        if self.ops:
            return [False] * len(self.sinks)
        return [all(match(db, table) for db, table in parcel.tables) for _, match in self.sinks]

    async def _route(self, parcel: Parcel, unchanged: list[bool]) -> list[Parcel]:
        if all(unchanged):
            return [parcel] * len(self.sinks)
        batch = parcel.unpack(await parcel.fetch())
        outs = route(batch, self.ops, self.sinks)
        return [parcel if same else Parcel.put(out) for same, out in zip(unchanged, outs)]

    async def push(self, parcel: Parcel) -> None:
        await self.order.wait(parcel.seq)
        self.rows_in += parcel.rows
        if self.error is None:
            try:
                outs = await self._route(parcel, self._unchanged(parcel))
            except Exception as exc:  # e.g. an expression comparing a column with a literal of another type
                self.error = f"router: {reason(exc)}"
                self.reader.fail.remote(self.error)
        if self.error is not None:  # no batch passes a failed one: the checkpoint stays before it
            await self.order.advance(parcel.seq)
            raise DbusError(self.error)
        self.rows_out += sum(p.rows for p in outs)
        calls = [b.push.remote(out) for b, out in zip(self.batchers, outs)]
        await self.order.advance(parcel.seq)
        await asyncio.gather(*calls)

    async def flush(self) -> None:
        await asyncio.gather(*[b.flush.remote() for b in self.batchers])

    async def stats(self) -> dict[str, int]:
        return {"rows_in": self.rows_in, "rows_out": self.rows_out}


#: the stage as its own actor (`flow.placement: spread`); `Router` itself runs inside a fused pipeline
RouterActor = ray.remote(num_cpus=0, max_restarts=0, max_concurrency=64)(Router)
