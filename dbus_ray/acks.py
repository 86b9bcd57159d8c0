"""Acknowledgement bookkeeping of a pipeline: which batches were read and handed on, which every sink
has acknowledged, and therefore which checkpoint may be saved. A pure class (no Ray, no I/O, no clock of
its own), like Kafka Connect's `SubmittedRecords`; `dbus_ray.actors.reader` is the async shell around it.

Rules it keeps:
- Batches are numbered 1, 2, 3 ... in read order. A sink acknowledges a sequence number `n` when it has
  delivered every batch up to `n` (writers deliver in order; a batcher merges batches, so one
  acknowledgement may cover several).
- The checkpoint is the source position of the highest batch every sink acknowledged, and never moves
  backwards.
- After a sink reports a failed batch, no acknowledgement of that sink at or past the failed batch
  counts, whatever arrives later: the checkpoint can never pass a batch that was not delivered.
- With nothing in flight, the checkpoint may follow the source past reads that carried no rows.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The position before which every row reached every sink, as saved by a checkpoint store.

    Stored as `{"source": <the source's position>, "seq": <batch number>, "time": <unix seconds>}` plus
    `epoch` (the controller's assignment that saved it) and `set_by` (`operator` after `dbus checkpoint
    set`) when present."""

    source: Any
    seq: int = 0
    time: float = 0.0
    epoch: int | None = None
    set_by: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"source": self.source, "seq": self.seq, "time": self.time}
        if self.epoch is not None:
            out["epoch"] = self.epoch
        if self.set_by is not None:
            out["set_by"] = self.set_by
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Checkpoint | None:
        if data is None:
            return None
        if not isinstance(data, dict) or "source" not in data:
            raise ValueError(f"not a checkpoint: {str(data)[:200]}")
        return cls(data["source"], int(data.get("seq") or 0), float(data.get("time") or 0.0),
                   data.get("epoch"), data.get("set_by"))


@dataclass(slots=True)
class _Batch:
    rows: int
    position: Any  # the source position after this batch (None: it cannot be resumed from)
    ts: float  # when its newest row was written at the source


class SubmittedBatches:
    """Batches read but not yet acknowledged by every sink, and the checkpoint that follows from the acks."""

    def __init__(self, sinks: list[str], start: Checkpoint | None = None) -> None:
        if not sinks:
            raise ValueError("a pipeline needs at least one sink")
        self.acked: dict[str, int] = {name: 0 for name in sinks}
        self.failed: dict[str, tuple[int, str]] = {}  # sink -> (first batch not delivered, why)
        self.pending: OrderedDict[int, _Batch] = OrderedDict()
        self.last_seq = 0  # the newest batch submitted
        self.committed_seq = start.seq if start is not None else 0
        self.rows_in_flight = 0
        self.rows_delivered = 0
        self.checkpoint: Checkpoint | None = start
        self.saved: Checkpoint | None = start

    # ------------------------------------------------------------------ read side
    def submit(self, rows: int, position: Any, ts: float) -> int:
        """A batch read from the source and handed on; returns its sequence number."""
        self.last_seq += 1
        self.pending[self.last_seq] = _Batch(rows, position, ts)
        self.rows_in_flight += rows
        return self.last_seq

    def idle(self, position: Any, now: float) -> None:
        """The source read on without rows to `position`: with nothing in flight the checkpoint follows it."""
        if self.pending or position is None:
            return
        if self.checkpoint is None or self.checkpoint.source != position:
            self.checkpoint = Checkpoint(position, self.committed_seq, now)

    # ------------------------------------------------------------------ sink side
    def ack(self, sink: str, seq: int, now: float) -> int:
        """`sink` delivered every batch up to `seq`. Returns how many rows became delivered to every sink."""
        if sink not in self.acked:
            raise ValueError(f"acknowledgement from unknown sink {sink!r}")
        if seq > self.last_seq:
            raise ValueError(f"sink {sink} acknowledged batch {seq}, but only {self.last_seq} were sent")
        failed = self.failed.get(sink)
        if failed is not None and seq >= failed[0]:
            return 0  # a writer past its failure: nothing it says moves the checkpoint
        if seq <= self.acked[sink]:
            return 0
        self.acked[sink] = seq
        done = min(self.acked.values())
        delivered = 0
        while self.pending:
            first = next(iter(self.pending))
            if first > done:
                break
            batch = self.pending.popitem(last=False)[1]
            self.rows_in_flight -= batch.rows
            delivered += batch.rows
            self.committed_seq = first
            if batch.position is not None:
                self.checkpoint = Checkpoint(batch.position, first, now)
        self.rows_delivered += delivered
        return delivered

    def fail(self, sink: str, first_seq: int, why: str) -> None:
        """`sink` could not deliver batch `first_seq` (nor, so, anything after it)."""
        if sink not in self.acked:
            raise ValueError(f"failure from unknown sink {sink!r}")
        first_seq = max(first_seq, self.acked[sink] + 1)
        current = self.failed.get(sink)
        if current is None or first_seq < current[0]:
            self.failed[sink] = (first_seq, why)

    # ------------------------------------------------------------------ saving
    def to_save(self) -> Checkpoint | None:
        """The checkpoint to write to the store, or None when the store already holds it."""
        if self.checkpoint is None or self.checkpoint is self.saved:
            return None
        return self.checkpoint

    def mark_saved(self, checkpoint: Checkpoint) -> None:
        self.saved = checkpoint

    def delivered_through(self, seq: int) -> bool:
        """Every batch up to `seq` reached every sink (later ones may still be in flight)."""
        return not self.pending or next(iter(self.pending)) > seq

    # ------------------------------------------------------------------ status
    @property
    def oldest_ts(self) -> float | None:
        """When the oldest row still in flight was written at the source (None: nothing in flight)."""
        return next(iter(self.pending.values())).ts if self.pending else None

    @property
    def read_position(self) -> Any:
        """The source position after the newest batch read (the checkpoint's when none is in flight)."""
        for batch in reversed(self.pending.values()):
            if batch.position is not None:
                return batch.position
        return self.checkpoint.source if self.checkpoint is not None else None

    def sink_positions(self) -> dict[str, Any]:
        """Per sink, the source position after the newest batch it acknowledged: the checkpoint's, or later
        for a sink ahead of the others (None: nothing acknowledged and no checkpoint)."""
        base = self.checkpoint.source if self.checkpoint is not None else None
        out: dict[str, Any] = {}
        for sink, acked in self.acked.items():
            position = base
            if acked > self.committed_seq:
                for seq, batch in self.pending.items():
                    if seq > acked:
                        break
                    if batch.position is not None:
                        position = batch.position
            out[sink] = position
        return out

    def __len__(self) -> int:
        return len(self.pending)
