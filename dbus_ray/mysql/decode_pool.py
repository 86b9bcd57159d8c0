"""Rows decoded by decoder actors (`source.decoders` >= 1), so that one pipeline's decoding uses more than
one core or node: the stream reads the binlog and hands out whole transactions as their raw rows events
(`RawTxn`); a decoder actor turns them into Arrow runs (`decode_packed`, the same `row_images` and `runs` as
the stream's own decoding); the source hands the decoded batches on in binlog order (`InOrder`). While
every decoder has DEPTH_PER_DECODER batches in flight, the reader decodes the next batch itself (`decoded`),
up to READER_AHEAD of them while the oldest is still at a decoder: its core is one decoder more, and it
does not wait for a decoder while it could decode.

On MariaDB a transaction of one small rows event (INLINE_ROWS_BYTES, a one-row statement) is decoded by
the stream itself, as without decoders; the read hands out the rows decoded so far before the next
transaction for a decoder. Only a transaction the stream can hand out whole goes to a decoder: not one it
resumes inside (a checkpoint's `skip`), not an XA group, not one with a DDL row, and not one larger than
`RAW_TXN_BYTES` (those are decoded by the stream itself, `BinlogStream._undefer`). A row's position is the
same either way: its ROWS event's offset and its index among the transaction's rows. A decode error names the binlog
position of its event and stops the pipeline as it would in the stream; a decoder that dies does too
(`DecoderLost`): its batch and every later one are never acknowledged, so the checkpoint stays before
them."""

from __future__ import annotations

import pickle
from collections import deque
from collections.abc import Callable
from typing import Any

from dbus_ray.errors import DbusError
from dbus_ray.model import RowBatch
from dbus_ray.mysql.batches import Segment, runs
from dbus_ray.mysql.decoder import Layout
from dbus_ray.mysql.gc_hold import gc_held
from dbus_ray.mysql.row_images import row_images
from dbus_ray.parcel import Remote

#: A transaction's rows events up to this many bytes go to a decoder; a larger one is decoded by the stream.
RAW_TXN_BYTES = 4 << 20
#: A poll hands a decoder transactions of about this many bytes of rows events, and of at most `read_batch_rows`
#: rows events (or fewer: whatever came). Each batch costs the reader, the decoder, the raylets (across nodes)
#: and every later stage about as much whatever its size: 2 MiB moved 1.5-1.9x the rows of 1 MiB through two
#: one-core nodes (README, "Performance").
RAW_BATCH_BYTES = 2 << 20
#: A transaction of one rows event of at most this many bytes of row images is decoded by the reader even with
#: decoders (`dbus_ray.mysql.quick_txn`): handing it out costs the reader more than decoding it (one-row
#: transactions handed out ran at 0.59x the reader decoding them all).
INLINE_ROWS_BYTES = 1024
#: Batches a source keeps in flight per decoder actor.
DEPTH_PER_DECODER = 3
#: Batches the reader may decode itself while the oldest batch in flight is still at a decoder: it decodes on
#: instead of waiting for a decoder that is behind (its first batch waits for its process to start, about 1 s
#: here; a decoder sharing its core with the server falls behind). The reader holds them decoded, beyond the
#: flow's `max_rows_in_flight`: at most this many batches of `read_batch_rows` rows and RAW_BATCH_BYTES each.
READER_AHEAD = 12


class DecoderLost(DbusError):
    """A decoder actor ended before it returned its batch."""


class RawRows:
    """One rows event of an included table, not decoded: what `row_images` reads (`type`, `data`, `end`)
    and where (the layout of its table map, the body's start and column bitmaps, its binlog position)."""

    __slots__ = ("layout", "type", "data", "end", "pos", "bitmap", "bitmap2", "file", "offset", "ts")

    def __init__(self, layout: Layout, ev: Any, pos: int, bitmap: bytes, bitmap2: bytes | None, file: str,
                 offset: int) -> None:
        self.layout, self.type, self.data, self.end = layout, ev.type, ev.data, ev.end
        self.pos, self.bitmap, self.bitmap2 = pos, bitmap, bitmap2
        self.file, self.offset, self.ts = file, offset, float(ev.timestamp)

    def __getstate__(self) -> tuple[Any, ...]:  # (spelled out: a generator over the slots cost 30 % more)
        return (self.layout, self.type, self.data, self.end, self.pos, self.bitmap, self.bitmap2, self.file,
                self.offset, self.ts)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        (self.layout, self.type, self.data, self.end, self.pos, self.bitmap, self.bitmap2, self.file, self.offset,
         self.ts) = state


class RawTxn:
    """A whole transaction's rows events, with what every row's position and checkpoint need."""

    __slots__ = ("file", "offset", "gtid", "txid", "before", "marks", "events")

    def __init__(self, txn: Any, events: list[RawRows]) -> None:
        self.file, self.offset, self.gtid, self.txid = txn.file, txn.offset, txn.gtid, txn.txid
        self.before, self.marks, self.events = txn.before, txn.marks, events

    def __getstate__(self) -> tuple[Any, ...]:
        return self.file, self.offset, self.gtid, self.txid, self.before, self.marks, self.events

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self.file, self.offset, self.gtid, self.txid, self.before, self.marks, self.events = state


class RawTxns:
    """Transactions the stream read, in binlog order, for a decoder: their tables and newest event time."""

    __slots__ = ("txns", "tables", "ts")

    def __init__(self, txns: list[RawTxn]) -> None:
        self.txns = txns
        self.tables = frozenset((r.layout.db, r.layout.table) for t in txns for r in t.events)
        self.ts = max(r.ts for t in txns for r in t.events)


def pack(txns: list[RawTxn]) -> bytes:
    """`txns` as the bytes a decoder actor receives (unpacked there with the garbage collector held off)."""
    return pickle.dumps(txns, protocol=pickle.HIGHEST_PROTOCOL)


def decode_packed(pipeline: str, packed: bytes, keys: Any) -> RowBatch:
    """The rows of packed transactions as Arrow runs (what a decoder actor returns), keyed by `keys`
    (`MessageKeys`). The collector is held off meanwhile, as in the stream (`dbus_ray.mysql.gc_hold`): with
    one-row transactions it re-scanned every unpacked event again and again, and doubled the time."""
    with gc_held():
        txns = pickle.loads(packed)
        return keys.apply(RowBatch(pipeline, 0, decoded(txns), None, max(r.ts for t in txns for r in t.events)))


def decoded(txns: list[RawTxn]) -> list[Any]:
    """The rows of `txns` as Arrow runs, decoded in this process: by a decoder actor (`decode_packed`), or by
    the reader while every decoder is full (`InOrder.add`). The collector is held off meanwhile."""
    with gc_held():
        return runs(segments(txns))


def segments(txns: list[RawTxn]) -> list[Segment]:
    """The decoded rows of `txns`, a segment per rows event."""
    segs: list[Segment] = []
    for t in txns:
        index = 0
        for r in t.events:
            op, before, after, n, absent = row_images(r, r.layout, r.file, r.offset, r.bitmap, r.bitmap2, r.pos)
            segs.append(Segment(r.layout, op, before, after, n, r.file, r.offset, t.gtid, index, t.txid, r.ts,
                                t.file, t.offset, absent, t.before, t.marks))
            index += n
    return segs


class InOrder:
    """The source's decoded batches in flight, handed out in the order they were read. Each entry is
    (a decoder's handle or rows the stream decoded itself, the checkpoint after it, its newest time)."""

    def __init__(self, pool: Any, decoders: int) -> None:
        self.pool = pool  # decode(packed) -> handle; result(handle) -> (rows, ref); done(handle); full(); close()
        self.depth = decoders * DEPTH_PER_DECODER + READER_AHEAD
        self.flight: deque[tuple[Any, RawTxns | None, dict[str, Any] | None, float]] = deque()
        self.lost: BaseException | None = None  # the stream failed after the batches in flight were read

    def __len__(self) -> int:
        return len(self.flight)

    def oldest_ts(self) -> float | None:
        return min((e[3] for e in self.flight), default=None)

    def add(self, got: tuple[Any, float], checkpoint: dict[str, Any] | None) -> None:
        """What the stream's `read` returned: raw transactions go to a decoder now, or are decoded here when
        every decoder has its batches in flight (the reader's core is one decoder more)."""
        parts, ts = got
        if isinstance(parts, RawTxns):
            if self.pool.full():
                self.flight.append((decoded(parts.txns), None, checkpoint, ts))
            else:
                self.flight.append((self.pool.decode(pack(parts.txns)), parts, checkpoint, ts))
        else:
            self.flight.append((parts, None, checkpoint, ts))

    def ready(self) -> bool:
        """The oldest batch can be handed out without waiting."""
        return bool(self.flight) and (self.flight[0][1] is None or self.pool.done(self.flight[0][0]))

    def poll(self, stream: Any, max_rows: int, pipeline: str, seq: int,
             checkpoint: Callable[[], dict[str, Any] | None]) -> RowBatch | Remote | None:
        """The next batch in binlog order: reads on (`stream.read`) while fewer than `depth` batches are in
        flight (the decoders' and READER_AHEAD the reader decodes), the server has sent more and the oldest
        is not decoded yet or a decoder has room; then waits for the oldest. An error of the stream (or of a
        batch decoded here) is raised once the batches read before it are handed out."""
        while self.lost is None and len(self.flight) < self.depth and not (self.ready() and self.pool.full()):
            if self.flight and not stream.buffered():  # nothing more came: wait for the decoder, not the server
                break
            try:
                got = stream.read(max_rows)
                if got is not None:
                    self.add(got, checkpoint())
            except Exception as exc:
                if not self.flight:
                    raise
                self.lost = exc
                break
            if got is None:
                break
        if not self.flight:
            if self.lost is not None:
                exc, self.lost = self.lost, None
                raise exc
            return None
        return self.take(pipeline, seq)

    def take(self, pipeline: str, seq: int) -> RowBatch | Remote:
        """The oldest batch, waiting for its decoder."""
        handle, raw, checkpoint, ts = self.flight.popleft()
        if raw is None:
            return RowBatch(pipeline, seq, handle, checkpoint, ts)
        rows, ref = self.pool.result(handle)
        return Remote(pipeline, seq, rows, raw.tables, checkpoint, ts, ref)

    def close(self) -> None:
        self.flight.clear()
        self.pool.close()
