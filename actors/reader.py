"""Reader actor `dbus:<pipeline>:reader`: pulls batches from the pipeline's source, sends them to the
router, and owns the checkpoint.

Back-pressure: the reader stops reading while `flow.max_rows_in_flight` rows are read but not yet
delivered to every sink. Writers acknowledge each batch they delivered (`ack(sink, seq)`); the
checkpoint is the source position after the highest batch every sink has acknowledged, saved in
order, at most every `checkpoint.every_ms` and always on stop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import ray

from dbus_ray import fencing, heap, registry
from dbus_ray.acks import Checkpoint, SubmittedBatches
from dbus_ray.actors.decoder import DecoderPool
from dbus_ray.actors.snapshot_worker import WorkerPool
from dbus_ray.checkpoints import open_store
from dbus_ray.config import PipelineConfig
from dbus_ray.errors import DbusError, reason
from dbus_ray.metrics import ReaderMetrics, Samples
from dbus_ray.model import RowBatch
from dbus_ray.parcel import Parcel, Remote

log = logging.getLogger("dbus.reader")

#: Router calls the reader may have outstanding (each holds one batch).
MAX_PENDING_CALLS = 16
#: Row changes the reader keeps for `peek` (the newest ones).
PEEK_ROWS = 1000
#: When the source fails, the longest the reader waits for the batches it handed on before to be delivered.
SOURCE_FAILURE_DRAIN_S = 10.0


class Reader:
    def __init__(
        self,
        cfg: PipelineConfig,
        sink_names: list[str],
        max_rows: int | None = None,
        epoch: int | None = None,
        secrets: dict[str, str] | None = None,
        expect_checkpoint: bool = False,
    ) -> None:
        heap.use_system_pool()
        self.cfg = cfg
        self.name = cfg.name
        self.epoch = epoch
        # the values of the spec's `${VAR}`s, in this process's memory only: a restarted controller
        # asks for them back (`secrets()`), so it can keep supervising without writing them anywhere
        self._secrets = dict(secrets or {})
        self.expect_checkpoint = expect_checkpoint  # the controller knows a checkpoint was saved before
        self.store = open_store(cfg.checkpoint.store, cfg.name, cfg.pipeline_dir, cfg)
        self.source = registry.source_class(cfg.source.type)(cfg.name, cfg.source.options)
        self.source.worker_pool = WorkerPool  # for a source that reads with worker actors of its own
        self.source.decode_pool = DecoderPool  # ... or decodes with some
        self.max_rows = max_rows
        self.sink_names = list(sink_names)
        self.book = SubmittedBatches(self.sink_names)  # replaced by start() once the checkpoint is loaded
        self.rows_read = 0
        self.batches_read = 0  # batches handed on (rows_read / batches_read: rows per batch)
        self.max_in_flight = 0
        self.local_parcels = False  # batches handed on as objects, not through the object store (fused)
        self.last_save = 0.0
        self.error: str | None = None
        self.state = "created"
        self.caught_up = False
        # the newest batch read when the source was first seen caught up: the pipeline is caught up once it and
        # the batches before it are delivered, whatever was read after it (steady writes)
        self.caught_up_seq: int | None = None
        self.capacity = asyncio.Event()
        self.task: asyncio.Task | None = None
        self.router: Any = None
        self.metrics = ReaderMetrics(cfg.name)
        self.recent: deque[RowBatch | Remote] = deque()  # the newest batches, for peek
        self.recent_rows = 0
        self.samples = Samples()  # the figures over the last hour, for `bus.lag()`
        self.sampler: asyncio.Task | None = None
        self.saving: asyncio.Task | None = None  # the checkpoint save `_maybe_save` started, while it runs

    # ------------------------------------------------------------------ lifecycle
    def _open(self) -> None:
        """Load the checkpoint and open the source there. Done by `start`, which the pipeline calls once
        its writers are up: a restarted exactly-once writer has then fenced its predecessor's open
        transaction, so no commit of a zombie can land after the checkpoint is read."""
        saved = Checkpoint.from_dict(self.store.load())
        if saved is None and self.expect_checkpoint and self.cfg.checkpoint.on_missing == "fail":
            raise DbusError(
                f"pipeline {self.name}: checkpoint store {self.store.describe()} is empty, but the pipeline "
                "saved checkpoints before: starting anew would skip rows. Restore the store, or set "
                "checkpoint.on_missing: start to start from source.start"
            )
        self.book = SubmittedBatches(self.sink_names, saved)
        self.source.open(saved.source if saved else None)
        log.info("[%s] reader opened %s at %s", self.name, self.cfg.source.type, saved)
        begun = self.source.start_checkpoint()
        if begun is not None and (saved is None or saved.source != begun):  # saved before the first batch goes out
            self.book.idle(begun, time.time())
            self._save()

    async def start(self, router: Any) -> None:
        await asyncio.to_thread(self._open)
        self.router = router
        self.state = "running"
        self.task = asyncio.get_running_loop().create_task(self._run())
        self.sampler = asyncio.get_running_loop().create_task(self._sample())

    async def _sample(self) -> None:
        """One sample of the figures a second while the pipeline runs (`samples`)."""
        while self.state in ("running", "stopping"):
            self.samples.add(time.time(), self.rows_read, self.book.rows_delivered, self._lag(),
                             self.book.rows_in_flight)
            await asyncio.sleep(self.samples.every_s)

    async def samples_since(self, t: float = 0.0) -> list[dict[str, Any]]:
        """The samples taken at or after `t` (unix seconds), oldest first: time, rows_read, rows_delivered,
        lag_seconds, rows_in_flight."""
        return self.samples.since(t)

    async def _run(self) -> None:
        calls: list[ray.ObjectRef] = []
        flow = self.cfg.flow
        try:
            while self.state == "running":
                if self.max_rows is not None and self.rows_read >= self.max_rows:
                    self._note_caught_up(True)
                    await asyncio.sleep(0.02)
                    continue
                want = flow.read_batch_rows
                if self.max_rows is not None:
                    want = min(want, self.max_rows - self.rows_read)
                await self._until(lambda n=want: self.book.rows_in_flight + n <= flow.max_rows_in_flight)
                if self.state != "running":
                    break
                polled = time.monotonic()
                try:
                    batch = await asyncio.to_thread(self.source.poll, want, self.book.last_seq + 1)
                except Exception:  # the source cannot go on: what it handed out before is delivered, then it fails
                    for call in calls:
                        await call
                    calls.clear()
                    await self._deliver_in_flight(SOURCE_FAILURE_DRAIN_S)
                    await self._settle_save()
                    self._save()
                    raise
                if batch is None or batch.num_rows == 0:
                    self._note_caught_up(self.source.caught_up())
                    self.book.idle(self.source.position(), time.time())
                    self._maybe_save()  # also a change an earlier idle poll made but could not save yet
                    # a source whose poll waited for rows already (the binlog's blocks until a heartbeat) is
                    # polled again at once: a fixed pause would delay the next row by up to that long
                    pause = (0.005 if not self.caught_up else 0.02) - (time.monotonic() - polled)
                    if pause > 0:
                        await asyncio.sleep(pause)
                    continue
                rows = batch.num_rows
                seq = self.book.submit(rows, batch.checkpoint, batch.ts)
                assert seq == batch.seq, f"batch {batch.seq} submitted as {seq}"
                self._note_caught_up(self.source.caught_up())
                self.rows_read += rows
                self.batches_read += 1
                self.metrics.rows_in.inc(rows)
                self._remember(batch)
                self.max_in_flight = max(self.max_in_flight, self.book.rows_in_flight)
                calls.append(self.router.push.remote(Parcel.put(batch, self.local_parcels)))
                heap.trim()
                if len(calls) >= MAX_PENDING_CALLS:
                    await calls.pop(0)
                self._maybe_save()
                if self.source.drained() and len(self.book) > 1:
                    # the source has nothing more and an earlier batch is still being delivered: the next poll
                    # waits for it, so the rows that commit meanwhile go on as one batch, not one per commit
                    # (each batch costs its own Arrow columns, calls and flush whatever its rows)
                    await self._until(lambda: len(self.book) <= 1)
            for call in calls:
                await call
        except Exception as exc:  # a stage failed: the pipeline stops, the checkpoint stays behind
            self._fail(reason(exc))

    async def _until(self, ready: Callable[[], bool]) -> None:
        """Wait while the pipeline runs and `ready()` is false, looking again at each acknowledgement."""
        while not ready() and self.state == "running":
            self.capacity.clear()
            try:
                await asyncio.wait_for(self.capacity.wait(), 0.1)
            except TimeoutError:
                pass

    def _note_caught_up(self, now: bool) -> None:
        """The source says whether it is caught up after the batches read so far (see `caught_up_seq`)."""
        self.caught_up = now
        if not now:
            self.caught_up_seq = None
        elif self.caught_up_seq is None:
            self.caught_up_seq = self.book.last_seq

    def _remember(self, batch: RowBatch | Remote) -> None:
        self.recent.append(batch)
        self.recent_rows += batch.num_rows
        while self.recent_rows - self.recent[0].num_rows >= PEEK_ROWS:
            self.recent_rows -= self.recent.popleft().num_rows

    async def peek(self, n: int = 20) -> list[dict[str, Any]]:
        """The newest `n` row changes read (JSON form), oldest first."""
        out: list[dict[str, Any]] = []
        for batch in reversed(self.recent):
            if type(batch) is Remote:  # decoded by a decoder actor: its rows are in the object store
                batch = await batch.ref
            for part in reversed(batch.parts):
                data = part.data.slice(max(0, part.num_rows - (n - len(out))))
                rows = list(type(part)(part.db, part.table, part.key, data).records(self.name))
                out[:0] = rows
                if len(out) >= n:
                    return out
        return out

    def _fail(self, reason: str) -> None:
        if self.error is None:
            self.error = reason
            self.metrics.errors.inc()
            log.error("[%s] pipeline failed: %s", self.name, reason)
        self.state = "failed"
        self.capacity.set()

    async def fail(self, reason: str) -> None:
        self._fail(reason)

    async def sink_failed(self, sink: str, first_seq: int, reason: str) -> None:
        """A writer could not deliver batch `first_seq`: no later acknowledgement of it counts, the
        pipeline stops, and its checkpoint stays before that batch."""
        self.book.fail(sink, first_seq, reason)
        self._fail(reason)

    async def secrets(self) -> dict[str, str]:
        """The values of the spec's `${VAR}`s this pipeline was started with (for a restarted controller)."""
        return dict(self._secrets)

    async def stop(self, timeout: float = 30.0) -> dict[str, Any]:
        """Stop reading, deliver what is in flight, save the final checkpoint, close the source."""
        if self.state == "running":
            self.state = "stopping"
        if self.task is not None:
            await self.task
        await self._deliver_in_flight(timeout)
        if self.error is None and self.state != "created":
            # the source read on past the last batch to a commit (a transaction's last rows went out before
            # its commit was read): the final checkpoint follows it, as the next idle poll would have made it
            self.book.idle(self.source.position(), time.time())
        await self._settle_save()
        self._save()
        await asyncio.to_thread(self.source.close)
        if self.state != "failed":
            self.state = "stopped"
        return self._status()

    async def _deliver_in_flight(self, timeout: float) -> None:
        """Flush the router's batchers and wait until every batch handed on is acknowledged, a stage fails,
        or `timeout` s pass."""
        if self.router is None or self.error is not None:
            return
        deadline = time.monotonic() + timeout
        try:
            await asyncio.wait_for(self.router.flush.remote(), timeout)
        except Exception as exc:
            self._fail(reason(exc))
        while self.book.pending and self.error is None and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    async def backfill(self, tables: list[str], where: str | None = None) -> dict[str, Any]:
        """An on-demand snapshot of `tables` while the stream runs (`dbus snapshot`)."""
        fn = self.source.backfill if self.source.supports_backfill else None
        if fn is None or self.state != "running":
            why = "is not running" if fn is not None else f"has a {self.cfg.source.type} source, which cannot backfill"
            raise DbusError(f"pipeline {self.name} {why}")
        return await asyncio.to_thread(fn, tables, where)

    # ------------------------------------------------------------------ acks and checkpoints
    async def ack(self, sink: str, seq: int) -> None:
        try:
            delivered = self.book.ack(sink, seq, time.time())
        except ValueError as exc:  # nobody awaits an ack: a refused one must fail the pipeline, not vanish
            self._fail(f"acknowledgement refused: {exc}")
            return
        if delivered:
            self.metrics.rows_delivered.inc(delivered)
        self.capacity.set()
        self._maybe_save()

    def _maybe_save(self) -> None:
        """Save the checkpoint when `checkpoint.every_ms` passed since the last save, on a thread: a slow store
        (an fsync on a busy disk) must not hold the event loop, where acknowledgements (and, fused, every
        stage) run. One save at a time."""
        if self.saving is None and time.monotonic() - self.last_save >= self.cfg.checkpoint.every_ms / 1000:
            self.last_save = time.monotonic()
            self.saving = asyncio.get_running_loop().create_task(self._save_off_loop())

    async def _save_off_loop(self) -> None:
        try:
            checkpoint = self.book.to_save()
            if checkpoint is not None:
                self._stored(checkpoint, await asyncio.to_thread(self._store, checkpoint))
        except Exception as exc:  # as a save on the loop would: the pipeline stops, the checkpoint stays behind
            self._fail(f"checkpoint store {self.store.describe()}: {reason(exc)}")
        finally:
            self.saving = None

    async def _settle_save(self) -> None:
        """Wait for the save `_maybe_save` started, if any (before a save on the caller's thread)."""
        if self.saving is not None:
            await self.saving

    def _save(self) -> None:
        """Save the checkpoint now, on the caller's thread (at open, at stop, when the source failed)."""
        self.last_save = time.monotonic()
        checkpoint = self.book.to_save()
        if checkpoint is not None:
            self._stored(checkpoint, self._store(checkpoint))

    def _store(self, checkpoint: Checkpoint) -> Checkpoint | str:
        """Write `checkpoint` (with this run's epoch) to the store; why not when the epoch is stale."""
        if self.epoch is not None:
            current = fencing.current_epoch(self.name)
            if current != self.epoch:
                return f"stale epoch {self.epoch} (the controller's is {current}): checkpoint refused"
            checkpoint = dataclasses.replace(checkpoint, epoch=self.epoch)
        self.store.save(checkpoint.to_dict())
        return checkpoint

    def _stored(self, taken: Checkpoint, saved: Checkpoint | str) -> None:
        """`taken` (the book's checkpoint when the save began) is in the store as `saved`."""
        if isinstance(saved, str):
            self._fail(saved)
            return
        self.book.mark_saved(saved)
        if self.book.checkpoint is taken:  # no later one was acknowledged while it was written
            self.book.checkpoint = saved
        self.source.committed(saved.source)

    # ------------------------------------------------------------------ status
    async def identity(self) -> dict[str, Any]:
        return {"pipeline": self.name, "epoch": self.epoch, "node": ray.get_runtime_context().get_node_id(),
                "pid": os.getpid()}

    async def status(self) -> dict[str, Any]:
        return self._status()

    def _lag(self) -> float:
        oldest = self.book.oldest_ts
        if oldest is not None:
            return max(0.0, time.time() - oldest)
        if self.state == "created":  # the source is not open yet
            return 0.0
        return self.source.lag_seconds()

    def _status(self) -> dict[str, Any]:
        lag = self._lag()
        self.metrics.lag.set(lag)
        self.metrics.in_flight.set(self.book.rows_in_flight)
        checkpoint = self.book.checkpoint
        return {
            "pipeline": self.name,
            "state": self.state,
            "rows_read": self.rows_read,
            "batches_read": self.batches_read,
            "rows_delivered": self.book.rows_delivered,
            "rows_in_flight": self.book.rows_in_flight,
            "max_rows_in_flight": self.max_in_flight,
            "caught_up": self.caught_up and self.caught_up_seq is not None
            and self.book.delivered_through(self.caught_up_seq),
            "lag_seconds": lag,
            "checkpoint": checkpoint.to_dict() if checkpoint is not None else None,
            "checkpoint_saved": self.book.saved is not None,
            "checkpoint_store": self.store.describe(),
            "read_position": _brief(self.book.read_position),
            "sink_positions": {k: _brief(v) for k, v in self.book.sink_positions().items()},
            "snapshot": self.source.snapshot_progress() if self.state != "created" else None,
            "source_host": self.source.host(),
            "error": self.error,
        }


def _brief(position: Any) -> Any:
    """A source position without what only a resume needs (schema history, patterns, fences)."""
    if not isinstance(position, dict):
        return position
    return {k: v for k, v in position.items() if k not in ("schema_history", "selected", "fences")}


#: the stage as its own actor (`flow.placement: spread`); `Reader` itself runs inside a fused pipeline
ReaderActor = ray.remote(num_cpus=0, max_restarts=0, max_concurrency=64)(Reader)
