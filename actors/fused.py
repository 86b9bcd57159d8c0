"""A fused pipeline (`flow.placement: fused`): reader, router, batchers and writers of one pipeline in one
actor process, named like the reader (`dbus:<pipeline>:reader`) and answering everything the reader
answers, so status, peek, backfill, checkpoints and the controller's health checks work as in a spread
pipeline. The stages are the same classes as the spread pipeline's actors, connected through
`LocalHandle`s (`dbus_ray.actors.local`) instead of Ray calls: same order, back-pressure, acknowledgement
and checkpoint rules, one process instead of 2 + 2 per sink.

`flow.placement: split` runs the same actor with each sink's writer as an actor of its own (the spread
pipeline's `WriterActor`, started by `dbus_ray.pipeline`): the batchers hand it parcels through Ray as in a
spread pipeline, and it acknowledges to this actor. The sink's work then has a core of its own, without the
router's and batchers' two processes and their hops.

A writer's sink I/O runs on that writer's own thread (`ThreadedWriter`); everything else on the actor's
event loop. A shared host (`dbus_ray.actors.host`) runs several of them, as objects, in one actor: it removes
one with `abort` (the kill of a fused pipeline's process)."""

from __future__ import annotations

import asyncio
from typing import Any

import ray

from dbus_ray.actors.batcher import Batcher
from dbus_ray.actors.local import LocalHandle, ThreadedWriter
from dbus_ray.actors.reader import Reader
from dbus_ray.actors.router import Router
from dbus_ray.actors.writer import Writer
from dbus_ray.errors import DbusError


class FusedPipeline(Reader):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.writers: dict[str, Writer] = {}
        self.batchers: dict[str, Batcher] = {}
        self.router_stage: Router | None = None
        self.threaded: list[ThreadedWriter] = []
        self.remote_writers: dict[str, Any] = {}  # split: each sink's writer actor
        self.aborted = False

    async def start(self, writers: dict[str, Any] | None = None) -> None:
        """Open every sink (a restarted exactly-once writer fences its zombie), then start reading. `writers`
        (`flow.placement: split`): each sink's writer actor, opened already, in place of writers in here."""
        loop = asyncio.get_running_loop()
        me = LocalHandle(self, loop)
        cfg = self.cfg
        self.remote_writers = writers or {}
        for sink in cfg.sinks:  # opening a sink blocks (brokers, files): off the event loop
            if sink.name not in self.remote_writers:
                self.writers[sink.name] = await asyncio.to_thread(Writer, cfg, sink, me)
        batcher_handles = []
        for sink in cfg.sinks:
            target = self.remote_writers.get(sink.name)
            if target is None:
                threaded = ThreadedWriter(self.writers[sink.name], f"writer:{sink.name}")
                self.threaded.append(threaded)
                target = LocalHandle(threaded, loop)
            self.batchers[sink.name] = Batcher(cfg, sink.name, target, me)
            batcher_handles.append(LocalHandle(self.batchers[sink.name], loop))
        self.router_stage = Router(cfg, batcher_handles, me)
        # one sink and no operator: each batch has one reader, the sink, so it is handed on as it is (no copy
        # into the object store and back); with several sinks each gets its own copy, as in a spread pipeline
        self.local_parcels = len(cfg.sinks) == 1 and not self.router_stage.ops and not self.remote_writers
        await super().start(LocalHandle(self.router_stage, loop))

    async def stop(self, timeout: float = 30.0) -> dict[str, Any]:
        final = await super().stop(timeout)
        for threaded in self.threaded:  # after the writes handed to it
            await threaded.close()
        if self.sampler is not None:  # its process may run on (a shared host): no task left behind
            self.sampler.cancel()
        return final

    async def abort(self, timeout: float = 30.0) -> None:
        """Stop at once (a kill, for a pipeline removed from a shared host): nothing more is read or handed on,
        no checkpoint is saved any more, each sink is closed once its write in progress is done (no later write
        reaches it) and the source is closed. TimeoutError when that takes over `timeout` s."""
        self.aborted = True
        for task in (self.task, self.sampler):
            if task is not None:
                task.cancel()
        wrapped = {id(t.writer) for t in self.threaded}
        closing = [t.close() for t in self.threaded]
        closing += [asyncio.to_thread(w.close) for w in self.writers.values() if id(w) not in wrapped]
        if self.state != "created":
            closing.append(asyncio.to_thread(self.source.close))
        await asyncio.wait_for(asyncio.gather(*closing, return_exceptions=True), timeout)

    def _save(self) -> None:
        if not self.aborted:  # an acknowledgement arriving after `abort` saves nothing
            super()._save()

    def _fail(self, reason: str) -> None:
        if not self.aborted:  # a stage's call cut short by `abort` is no failure of the pipeline
            super()._fail(reason)

    async def stage_stats(self) -> dict[str, dict[str, Any]]:
        """The figures each stage's own actor would give (`stats()`), by stage name (`router`,
        `batcher:<sink>`, `writer:<sink>`)."""
        if self.router_stage is None:
            raise DbusError(f"pipeline {self.name} is not started")
        out: dict[str, dict[str, Any]] = {"router": await self.router_stage.stats()}
        for name, batcher in self.batchers.items():
            out[f"batcher:{name}"] = await batcher.stats()
            writer = self.remote_writers.get(name)
            out[f"writer:{name}"] = self.writers[name].stats() if writer is None else await writer.stats.remote()
        return out


FusedPipelineActor = ray.remote(num_cpus=0, max_restarts=0, max_concurrency=64)(FusedPipeline)
