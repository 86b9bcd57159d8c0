"""Rows the `mysql` source's stream decoded and has not handed out yet: `Segment`s (the rows of one ROWS
event, or one DDL row, with their binlog position), and how consecutive segments of one table
definition become one Arrow record batch (`runs`)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from itertools import chain
from operator import itemgetter
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from dbus_ray.model import ABSENT_TYPE, META_SCHEMA, TableRows

if TYPE_CHECKING:
    from dbus_ray.mysql.xa import Marks


class Segment:
    """Pending rows of one ROWS event (or one DDL row): images as one value list per column (None: the
    event has no such image), and the position of its first row. Rows leave from the front."""

    __slots__ = ("layout", "op", "before", "after", "n", "file", "offset", "gtid", "index", "txid", "ts",
                 "tfile", "toffset", "absent", "before_state", "xa")

    def __init__(self, layout: Any, op: str, before: list[list[Any]] | None, after: list[list[Any]] | None,
                 n: int, file: str, offset: int, gtid: str | None, index: int, txid: str, ts: float,
                 tfile: str, toffset: int, absent: dict[str, list[str]] | None = None,
                 before_state: str | None = None, xa: Any = None) -> None:
        self.layout, self.op, self.before, self.after, self.n = layout, op, before, after, n
        self.file, self.offset, self.gtid, self.index, self.txid = file, offset, gtid, index, txid
        self.ts, self.tfile, self.toffset = ts, tfile, toffset
        self.absent = absent  # image -> columns the event's image leaves out (binlog_row_image MINIMAL/NOBLOB)
        self.before_state = before_state  # the GTID state before its transaction (MariaDB), for the checkpoint
        self.xa = xa  # the XA transactions prepared before its transaction (dbus_ray.mysql.xa.Marks), ditto

    def split(self, k: int) -> Segment:
        """Remove the first `k` rows (k < n) and return them as a segment."""
        b, a = self.before, self.after
        head = Segment(self.layout, self.op, None if b is None else [c[:k] for c in b],
                    None if a is None else [c[:k] for c in a], k, self.file, self.offset, self.gtid,
                    self.index, self.txid, self.ts, self.tfile, self.toffset, self.absent, self.before_state,
                    self.xa)
        self.before = None if b is None else [c[k:] for c in b]
        self.after = None if a is None else [c[k:] for c in a]
        self.n -= k
        self.index += k
        return head


def take(pending: list[Segment], max_rows: int) -> tuple[list[Segment], list[Segment], int]:
    """(the segments of the first `max_rows` rows of `pending`, splitting one when needed, the rest, their
    row count)."""
    got = 0
    i = 0
    while i < len(pending) and got + pending[i].n <= max_rows:
        got += pending[i].n
        i += 1
    out = pending[:i]
    rest = pending[i:]
    if got < max_rows and rest:
        out.append(rest[0].split(max_rows - got))
        got = max_rows
    return out, rest, got


def runs(segs: list[Segment]) -> list[TableRows]:
    """Consecutive segments of one table definition -> one Arrow record batch each."""
    parts: list[TableRows] = []
    now = time.time()
    start = 0
    n = len(segs)
    while start < n:
        layout = segs[start].layout
        end = start + 1
        while end < n and segs[end].layout is layout:
            end += 1
        run = segs[start:end]
        k = sum(s.n for s in run)
        ops: list[str] = []
        files: list[str] = []
        offsets: list[int] = []
        gtids: list[str | None] = []
        indexes: list[int] = []
        txids: list[str] = []
        tss: list[float] = []
        if k == len(run):  # one row per segment (one-row transactions): a list per field in one pass each
            ops = [s.op for s in run]
            files = [s.file for s in run]
            offsets = [s.offset for s in run]
            gtids = [s.gtid for s in run]
            indexes = [s.index for s in run]
            txids = [s.txid for s in run]
            tss = [s.ts for s in run]
        else:
            _meta(run, ops, files, offsets, gtids, indexes, txids, tss)
        before = _images(layout, run, "before", k, k == len(run))
        after = _images(layout, run, "after", k, k == len(run))
        arrays = [
            pa.array(ops, pa.string()),
            pa.array(files, pa.string()),
            pa.array(offsets, pa.int64()),
            pa.array(gtids, pa.string()),
            pa.array(indexes, pa.int32()),
            pa.array(txids, pa.string()),
            pa.array(tss, pa.float64()),
            pa.array([now] * k, pa.float64()),
            before,
            after,
        ]
        schema = META_SCHEMA.append(pa.field("before", before.type)).append(pa.field("after", after.type))
        if any(s.absent for s in run):  # only with binlog_row_image MINIMAL/NOBLOB
            absent: list[dict[str, list[str]] | None] = []
            for s in run:
                absent += [s.absent] * s.n
            arrays.append(pa.array(absent, ABSENT_TYPE))
            schema = schema.append(pa.field("absent", ABSENT_TYPE))
        parts.append(
            TableRows(
                layout.db, layout.table, layout.key, pa.RecordBatch.from_arrays(arrays, schema=schema)
            )
        )
        start = end
    return parts

_FIRST = itemgetter(0)


def _images(layout: Any, run: list[Segment], which: str, k: int, single: bool) -> pa.StructArray:
    """The `before` or `after` struct column of a run of segments (`single`: one row each)."""
    images = [getattr(s, which) for s in run]
    if len(run) == 1:
        return layout.struct(images[0], k)
    if all(i is None for i in images):
        return layout.struct(None, k)
    if all(i is not None for i in images):  # each column's values of every segment, in one pass
        if single:  # one-row segments: the one value of each column's list
            return layout.struct([list(map(_FIRST, col)) for col in zip(*images)], k)
        return layout.struct([list(chain.from_iterable(col)) for col in zip(*images)], k)
    cols: list[list[Any]] = [[] for _ in layout.types]
    mask: list[bool] = []
    for s, image in zip(run, images):
        mask += [image is None] * s.n
    for s, image in zip(run, images):
        if image is None:
            nones = [None] * s.n
            for c in cols:
                c += nones
        else:
            for c, sc in zip(cols, image):
                c += sc
    return layout.struct(cols, k, mask)


def _meta(run: list[Segment], ops: list[str], files: list[str], offsets: list[int], gtids: list[str | None],
          indexes: list[int], txids: list[str], tss: list[float]) -> None:
    """Each row's op and position fields of a run of segments, appended to the lists."""
    for s in run:
        m = s.n
        if m == 1:
            ops.append(s.op)
            files.append(s.file)
            offsets.append(s.offset)
            gtids.append(s.gtid)
            indexes.append(s.index)
            txids.append(s.txid)
            tss.append(s.ts)
        else:
            ops += [s.op] * m
            files += [s.file] * m
            offsets += [s.offset] * m
            gtids += [s.gtid] * m
            indexes += range(s.index, s.index + m)
            txids += [s.txid] * m
            tss += [s.ts] * m


@dataclass(slots=True)
class Txn:
    """The transaction the stream is in: where it starts, its GTID, the rows seen and to skip."""

    file: str
    offset: int
    gtid: str | None
    began: bool  # inside BEGIN ... COMMIT (else ends after its one statement)
    skip: int = 0  # rows already emitted before a resume
    rows: int = 0  # rows of included tables seen so far
    before: str | None = None  # the GTID state before it (MariaDB)
    marks: Marks | None = None  # the XA transactions prepared before it
    xid: str | None = None  # an XA transaction's group (its rows are held until XA COMMIT)
    segs: list[Segment] | None = None  # the rows of that group held (None: not collected)
    raw: list[Any] | None = None  # its rows events for a decoder actor (`dbus_ray.mysql.decode_pool`), not decoded
    raw_bytes: int = 0

    @property
    def txid(self) -> str:
        return self.gtid or f"{self.file}:{self.offset}"
