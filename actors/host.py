"""Host actor `dbus:host:<n>` (`flow.placement: shared`): runs several pipelines of one node in one process,
each a `FusedPipeline` object (`dbus_ray.actors.fused`) on the host's event loop, with its sinks' I/O on
threads of their own. A pipeline's reader methods are reached through `call(pipeline, method, *args)`
(`dbus_ray.hosting.HostedReader` makes that look like the reader actor); `health_all()` answers the status
of every pipeline in one call.

Crash domains: an exception in one pipeline's code (its source, a sink, an operator) fails that pipeline
alone, as it fails a fused pipeline's actor: its status says `failed`, the others run on, and the controller
removes it (`remove`, which stops it at once) and starts it again, alone. A crash of the process itself (kill
-9, a segfault, the OOM killer) takes every pipeline of the host: the controller restarts each, in another
host, from its own checkpoint."""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import ray

from dbus_ray.actors.fused import FusedPipeline
from dbus_ray.config import PipelineConfig
from dbus_ray.errors import DbusError, reason
from dbus_ray.hosting import forget_hosted, record_hosted

log = logging.getLogger("dbus.host")

#: threads for the blocking work of each hosted pipeline (source polls, checkpoint and sink opens): each
#: pipeline holds about one at a time
THREADS_PER_PIPELINE = 3


class PipelineHost:
    def __init__(self, name: str, capacity: int, detached: bool) -> None:
        self.name = name
        self.capacity = capacity
        self.detached = detached
        self.pipelines: dict[str, FusedPipeline] = {}
        self.starting: set[str] = set()
        self.cancelled: set[str] = set()  # removed while starting (its starter gave up): dropped once started
        self.reserved: set[str] = set()  # places held by `reserve` for the `add` that follows
        self.retiring = False
        self.actor_id = ray.get_runtime_context().get_actor_id()
        self.executor: ThreadPoolExecutor | None = None
        self.health_calls = 0

    def _use_threads(self) -> None:
        """`asyncio.to_thread` of every hosted pipeline shares the loop's default executor: make it big enough
        that one pipeline's blocked poll never waits for another's."""
        if self.executor is None:
            self.executor = ThreadPoolExecutor(THREADS_PER_PIPELINE * self.capacity + 4, thread_name_prefix="hosted")
            asyncio.get_running_loop().set_default_executor(self.executor)

    async def info(self) -> dict[str, Any]:
        return {"name": self.name, "node": ray.get_runtime_context().get_node_id(), "pid": os.getpid(),
                "capacity": self.capacity, "detached": self.detached, "retiring": self.retiring,
                "health_calls": self.health_calls,
                "pipelines": sorted(self.pipelines) + sorted(self.starting)}

    async def add(self, cfg: PipelineConfig, sink_names: list[str], max_rows: int | None, epoch: int | None,
                  secrets: dict[str, str], expect_checkpoint: bool, capacity: int) -> dict[str, Any] | None:
        """Start pipeline `cfg` here (its sinks open, then it reads) and return its identity; None (nothing
        started) when the host holds `capacity` (the pipeline's own limit) or its own capacity of pipelines
        already, or retires (its last pipeline left)."""
        name = cfg.name
        if name not in self.reserved and not await self.reserve(name, capacity):
            return None
        self.reserved.discard(name)
        self._use_threads()
        pipeline = None
        try:
            # opening the checkpoint store and building the source block: off the event loop
            pipeline = await asyncio.to_thread(FusedPipeline, cfg, sink_names, max_rows, epoch, secrets,
                                               expect_checkpoint)
            await pipeline.start()
        except BaseException:
            if pipeline is not None:
                await _quietly(pipeline.abort(30.0))
            raise
        finally:
            self.starting.discard(name)
            cancelled = name in self.cancelled
            self.cancelled.discard(name)
        if cancelled:  # an empty host left by it takes the next pipeline of its node
            await _quietly(pipeline.abort(30.0))
            raise DbusError(f"pipeline {name} was removed from host {self.name} while it started")
        self.pipelines[name] = pipeline
        record_hosted(name, self.name, self.actor_id)
        log.info("[%s] started in host %s (%d pipeline(s))", name, self.name, len(self.pipelines))
        return await pipeline.identity()

    async def reserve(self, pipeline: str, capacity: int) -> bool:
        """Hold a place for `pipeline` (counted as starting) so that concurrent starts choosing a host see it
        taken; False when the host holds `capacity` or its own capacity of pipelines already, or retires. The
        `add` of that pipeline follows."""
        if self.retiring or len(self.pipelines) + len(self.starting) >= min(capacity, self.capacity):
            return False
        if pipeline in self.pipelines or pipeline in self.starting:
            raise DbusError(f"pipeline {pipeline} is already running (in host {self.name})")
        self.starting.add(pipeline)
        self.reserved.add(pipeline)
        return True

    def _get(self, pipeline: str) -> FusedPipeline:
        found = self.pipelines.get(pipeline)
        if found is None:
            raise DbusError(f"pipeline {pipeline} is not running (not in host {self.name})")
        return found

    async def call(self, pipeline: str, method: str, *args: Any, **kwargs: Any) -> Any:
        """`method(*args, **kwargs)` of the hosted pipeline's reader (what its reader actor would answer)."""
        if method.startswith("_") or method in ("start", "stop", "abort"):
            raise DbusError(f"pipeline {pipeline}: {method} cannot be called")
        result = getattr(self._get(pipeline), method)(*args, **kwargs)
        return await result if inspect.isawaitable(result) else result

    async def health_all(self) -> dict[str, dict[str, Any]]:
        """The status of every pipeline of the host, by name (one call for the controller's health check)."""
        self.health_calls += 1
        out = {}
        for name, pipeline in list(self.pipelines.items()):
            try:
                out[name] = pipeline._status()
            except Exception as exc:  # noqa: BLE001 - that pipeline's trouble, not the others'
                out[name] = {"pipeline": name, "state": "failed", "error": f"status: {reason(exc)}"}
        return out

    async def stop_pipeline(self, pipeline: str, timeout: float = 30.0) -> dict[str, Any]:
        """Stop one pipeline cleanly (deliver what is in flight, final checkpoint) and remove it:
        {"final": its last status, "remaining": pipelines left in the host}."""
        hosted = self._get(pipeline)
        try:
            final = await hosted.stop(timeout)
        except BaseException:
            await _quietly(hosted.abort(timeout))
            self._drop(pipeline)
            raise
        self._drop(pipeline)
        return {"final": final, "remaining": self._remaining()}

    async def remove(self, pipeline: str, timeout: float = 30.0) -> int:
        """Remove one pipeline at once (a kill: its sinks see no write after this returns); the number of
        pipelines left in the host."""
        hosted = self.pipelines.get(pipeline)
        if pipeline in self.starting:
            self.cancelled.add(pipeline)
        if hosted is not None:
            try:
                await hosted.abort(timeout)
            finally:
                self._drop(pipeline)
        return self._remaining()

    def _drop(self, pipeline: str) -> None:
        self.pipelines.pop(pipeline, None)
        forget_hosted(pipeline, self.actor_id)
        log.info("[%s] removed from host %s (%d left)", pipeline, self.name, len(self.pipelines))

    def _remaining(self) -> int:
        """Pipelines left; an empty host takes no more (its caller kills it)."""
        left = len(self.pipelines) + len(self.starting)
        if left == 0:
            self.retiring = True
        return left


async def _quietly(call: Any) -> None:
    try:
        await call
    except Exception as exc:  # noqa: BLE001 - cleaning up after an error that is raised instead
        log.warning("cleanup failed: %s", reason(exc))


PipelineHostActor = ray.remote(num_cpus=0, max_restarts=0, max_concurrency=1000)(PipelineHost)
