"""The parallel snapshot of the `mysql` source (`snapshot_parallelism` >= 2): `ParallelSnapshot` reads
key-range chunks with worker actors (`dbus_ray.actors.snapshot_worker`), each in its own consistent
snapshot, and `Fences` make the stream that follows drop the changes a chunk already holds (`Fenced`
stands in for the snapshot while they apply).

Exactness (applying the output in order gives the table):
- A change has up to two halves: the removal of its before key (delete, update) and the row of its after
  key (insert, update). Each half is judged by its own key's range: it is dropped when that range was
  read at or after the change's position (the read holds it), kept otherwise. An update whose two keys
  fall in ranges read on either side of it (a key change across ranges) keeps one half: it goes out as
  a `delete` of the before key or an `insert` of the after row, so a row moved into a range read earlier
  is neither lost nor set back to an older value by a move out of a range read later.
- A crash (kill -9) leaves rows delivered past the last saved checkpoint, read from chunks whose
  positions the checkpoint does not hold. A resume reads those ranges again under newer snapshots; were
  they fenced at the new positions, the change that removed such a key in between would be dropped and
  the old `read` would stay. So the snapshot state carries `floor`, a binlog position at or before every
  chunk that may be delivered after that state: the oldest of the chunk being emitted, of each worker's
  snapshot (a worker reads all its chunks in one) and of the chunks asked for (each noted at the
  position of the last chunk received when it was asked: a snapshot it is read in opens later). A
  resumed snapshot fences every range it reads at that floor instead of the range's read position: the
  stream then brings again every change to those keys since the floor (repeats, at least once), and the
  last one decides, as after a serial snapshot. Ranges fenced in the checkpoint keep their positions; a
  snapshot that never stopped keeps the exact "each key read once, followed by exactly its later
  changes".
"""

from __future__ import annotations

import logging
import time
from bisect import bisect_left
from collections import deque
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from dbus_ray.errors import DbusError
from dbus_ray.model import TableRows
from dbus_ray.mysql import connection as pf
from dbus_ray.mysql.offset import position_key
from dbus_ray.mysql.snapshot.catalog import SnapTable, chunk_bounds, pk_from_json, pk_to_json
from dbus_ray.mysql.snapshot.key_order import KeyOrder, Weigher
from dbus_ray.mysql.snapshot.serial import RECONNECT_ATTEMPTS, Snapshot

log = logging.getLogger("dbus.mysql")

class WorkerLost(Exception):
    """A snapshot worker died (its chunks are read again by its replacement)."""


class Fences:
    """Which stream rows a parallel snapshot already holds. Chunk (lo, hi] of table T was read in a
    consistent snapshot at binlog position P, so its rows hold every change of a key in (lo, hi] written
    before P: the stream (which starts at the first snapshot's position, before every P) drops those
    and keeps the changes at P or after. Each key is then read once with its value at P and followed by
    exactly the changes after P. `raw` (JSON, in the checkpoint): {table: {"key": [page columns], "order":
    [kinds] (`key_order`), "at": [[hi, file, offset], ...]}}, the ranges in key order, each from the previous
    hi, the last hi None. Keys compare as the server orders them (`KeyOrder`; `weigher` asks the server for
    the weights of text keys)."""

    def __init__(self, raw: dict[str, Any], weigher: Weigher | None = None) -> None:
        self.raw = raw
        self.weigher = weigher
        self.tables: dict[str, tuple[list[str], list[tuple[Any, ...]], list[tuple[int, int]], KeyOrder]] = {}
        self.until = (0, 0)
        for name, f in raw.items():
            order = KeyOrder(f.get("order"), weigher)
            his = order.sort_keys([tuple(pk_from_json(h)) for h, _, _ in f["at"] if h is not None])
            ats = [position_key(file, offset) for _, file, offset in f["at"]]
            self.tables[name] = (list(f["key"]), [h for h in his if h is not None], ats, order)
            self.until = max([self.until, *ats])

    def close(self) -> None:
        if self.weigher is not None:
            self.weigher.close()

    def passed(self, file: str, offset: int) -> bool:
        """The stream is at or after every chunk's position: no row to drop any more."""
        return bool(file) and position_key(file, offset) >= self.until

    def _holds(self, his: list[tuple[Any, ...]], ats: list[tuple[int, int]], key: tuple[Any, ...] | None,
               at: tuple[int, int]) -> bool:
        """The range of `key` was read at or after `at` (so its read holds a change there)."""
        if key is None:
            return False
        j = bisect_left(his, key)
        return j < len(ats) and at < ats[j]

    def keep(self, part: TableRows) -> TableRows | None:
        """`part` without the halves of its changes the reads hold (see the module docstring)."""
        fence = self.tables.get(f"{part.db}.{part.table}")
        if fence is None:
            return part
        cols, his, ats, order = fence
        data = part.data
        ops = data.column("op").to_pylist()
        files = data.column("file").to_pylist()
        offsets = data.column("offset").to_pylist()
        keys: dict[str, list[tuple[Any, ...]]] = {}
        for side in ("before", "after"):
            image = data.column(side)
            names = {image.type.field(i).name for i in range(image.type.num_fields)}
            if all(c in names for c in cols):
                keys[side] = order.sort_keys(list(zip(*(image.field(c).to_pylist() for c in cols))))
        before, after = [], []
        for i, op in enumerate(ops):
            if op not in ("insert", "update", "delete"):
                before.append(False)
                after.append(False)
                continue
            at = position_key(files[i], offsets[i])
            key = {side: keys[side][i] if side in keys else None for side in ("before", "after")}
            if op == "update" and key["after"] is None:
                key["after"] = key["before"]  # a MINIMAL after image without the (unchanged) key
            before.append(self._holds(his, ats, key["before"], at))
            after.append(self._holds(his, ats, key["after"], at))
        return keep_halves(part, ops, before, after)


def keep_halves(part: TableRows, ops: list[str], before: list[bool], after: list[bool]) -> TableRows | None:
    """`part` without the halves of its changes a read holds (`before[i]`: the removal of row i's before
    key, `after[i]`: its after row): a change with every half it has held goes, an update with one held
    goes out as its other half (an `insert` of its after row, a `delete` of its before key)."""
    mask, new_ops = [], list(ops)
    for i, op in enumerate(ops):
        if op == "insert":
            mask.append(not after[i])
        elif op == "delete":
            mask.append(not before[i])
        elif op != "update" or not (before[i] or after[i]):
            mask.append(True)
        elif before[i] and after[i]:
            mask.append(False)
        else:
            mask.append(True)
            new_ops[i] = "insert" if before[i] else "delete"
    data = part.data if new_ops == ops else _as_ops(part.data, ops, new_ops)
    if all(mask):
        return part if data is part.data else TableRows(part.db, part.table, part.key, data)
    if not any(mask):
        return None
    return TableRows(part.db, part.table, part.key, data.filter(pa.array(mask, pa.bool_())))


def _as_ops(data: pa.RecordBatch, ops: list[str], new_ops: list[str]) -> pa.RecordBatch:
    """`data` with the updates `new_ops` turns into inserts (no before image) or deletes (no after image)."""
    columns = dict(zip(data.schema.names, data.columns))
    columns["op"] = pa.array(new_ops, data.schema.field("op").type)
    for side, op in (("before", "insert"), ("after", "delete")):
        drop = pa.array([new != old and new == op for new, old in zip(new_ops, ops)], pa.bool_())
        image = columns[side]
        columns[side] = pc.if_else(drop, pa.nulls(len(image), image.type), image)
    return pa.RecordBatch.from_arrays([columns[n] for n in data.schema.names], schema=data.schema)


class Fenced:
    """The stream after a parallel snapshot while its fences apply (stands in for the snapshot)."""

    done = True
    finished = True

    def __init__(self, fences: Fences, ts: float, progress: dict[str, Any] | None = None) -> None:
        self.fences = fences
        self.state = {"ts": ts}
        self.ts = ts
        self._progress = progress

    def progress(self) -> dict[str, Any] | None:
        return self._progress

    def close(self) -> None:
        self.fences.close()


class ParallelSnapshot(Snapshot):
    """`snapshot_parallelism` >= 2: the tables are read in key-range chunks by a pool of worker actors
    (`pool`: `read(i, table, lo, hi)` -> a reference, `result(ref)` -> (image, file, offset) or WorkerLost,
    `replace(i)`, `close()`), each inside its own consistent snapshot; the stream that follows drops the
    changes the chunks already hold (see Fences). Chunks are emitted in key order, one table after the
    other, with the same markers as the serial snapshot. The state adds `fences`; `last_pk` is the key
    the emitted rows end at (a chunk's upper key once it is done), so a resumed snapshot re-splits the
    table after it. Tables whose key's order is not known here (`key_order`: a FLOAT, ENUM, TIMESTAMP...
    key) are read as one chunk and checkpointed only at their end."""

    def __init__(self, ep: pf.Endpoint, pipeline: str, matcher: Any, pool: Any, parallelism: int,
                 chunk_rows: int = 10_000, max_rows_per_second: int | None = None,
                 state: dict[str, Any] | None = None) -> None:
        super().__init__(ep, pipeline, matcher, chunk_rows, max_rows_per_second, state)
        self.pool = pool
        self.parallelism = parallelism
        self.state.setdefault("fences", {})
        self.safe: dict[str, Any] = dict(self.state)  # the state as of the last row a resume can follow
        self.todo: deque[tuple[Any, Any]] = deque()  # chunks (lo, hi) of the current table not yet asked for
        self.asked: deque[list[Any]] = deque()  # [lo, hi, worker, ref, floor] in key order
        self.last_at: tuple[str, int] = ("", 0)  # the position of the last chunk received (or of `begin`)
        self.worker_at: list[tuple[str, int] | None] = [None] * parallelism  # of each worker's last chunk
        self.refence: tuple[str, int] | None = None  # resumed: where every range read now is fenced
        self.cur: tuple[pa.StructArray, tuple[str, int], Any] | None = None  # image, position, hi
        self.taken = 0
        self.restarts = 0
        self.load = [0] * parallelism

    def begin(self) -> None:
        super().begin()  # the first consistent snapshot gives where the stream starts
        self.close_transaction()
        self.last_at = (self.file, self.offset)
        if self.resumed:  # rows past the checkpoint may have been delivered: fence what is read again at the floor
            file, offset = self.state.get("floor") or (self.state["file"], self.state["offset"])
            self.refence = (str(file), int(offset))
        self.conn = pf.connect(self.ep)  # for chunk boundaries
        current = self.state["table"]
        if current is not None:
            t = self.queue[0]
            self._plan(t, None if self.state["last_pk"] is None else pk_from_json(self.state["last_pk"]))
        self._save()  # the state a resume finds when this run stops before its first row: its floor is here

    def close_transaction(self) -> None:
        super().close()

    def close(self) -> None:
        super().close()
        self.pool.close()

    def checkpoint_state(self) -> dict[str, Any]:
        return dict(self.safe)

    def _plan(self, t: SnapTable, after: tuple[Any, ...] | None) -> None:
        assert self.conn is not None
        bounds: list[Any] = chunk_bounds(self.conn, t, after, self.chunk_rows)
        edges = [after, *bounds, None]
        self.todo = deque(zip(edges[:-1], edges[1:]))
        self.asked.clear()
        self.cur, self.taken = None, 0

    def _ask(self, t: SnapTable) -> None:
        """Keep two chunks per worker asked for."""
        while self.todo and len(self.asked) < 2 * self.parallelism:
            lo, hi = self.todo.popleft()
            i = self.load.index(min(self.load))
            self.load[i] += 1
            self.asked.append([lo, hi, i, self.pool.read(i, t, lo, hi), self.last_at])

    def _next_chunk(self, t: SnapTable) -> bool:
        """The next chunk of `t` in key order into `self.cur`; False when the table is read."""
        self._ask(t)
        if not self.asked:
            return False
        for attempt in range(RECONNECT_ATTEMPTS + 1):
            lo, hi, i, ref, _ = self.asked[0]
            try:
                image, file, offset = self.pool.result(ref)
                break
            except WorkerLost as exc:
                if attempt == RECONNECT_ATTEMPTS:
                    raise DbusError(f"snapshot of {t.name}: worker {i} lost {attempt + 1} times ({exc})") from None
                self.restarts += 1
                log.warning("[%s] snapshot worker %d lost (%s): reading its chunks again", self.pipeline, i, exc)
                self.pool.replace(i)
                self.worker_at[i] = None  # (its replacement's snapshot opens now)
                for entry in self.asked:
                    if entry[2] == i:
                        entry[3] = self.pool.read(i, t, entry[0], entry[1])
        self.asked.popleft()
        self.load[i] -= 1
        self.chunks += 1
        self.last_at = self.worker_at[i] = (file, offset)
        self.cur, self.taken = (image, (file, offset), hi), 0
        self._ask(t)
        return True

    def _fence(self, t: SnapTable, hi: Any, at: tuple[str, int]) -> None:
        """The emitted rows of `t` now reach `hi` (JSON key, None: the end), read at `at`."""
        if self.refence is not None:
            at = self.refence
        fences = dict(self.state["fences"])
        f = fences.get(t.name) or {"key": list(t.page), "order": t.kinds, "at": []}
        entries = list(f["at"])
        if entries and (entries[-1][1], entries[-1][2]) == at:
            entries[-1] = [hi, *at]
        else:
            entries.append([hi, *at])
        fences[t.name] = {**f, "at": entries}
        self.state["fences"] = fences

    def _save(self) -> None:
        """The state so far is one a resume can follow; its `floor` is at or before every chunk that may be
        delivered after it: the one being emitted, those asked for, and those asked later, read either in
        the snapshot a worker already has (it keeps one for all its chunks) or in one opened later. A resumed
        snapshot keeps its floor: rows of the run before may have been delivered past this state too."""
        self.safe = dict(self.state)
        known = [self.last_at, *(tuple(e[4]) for e in self.asked), *(a for a in self.worker_at if a is not None)]
        if self.refence is not None:
            known.append(self.refence)
        floor = min(known, key=lambda p: position_key(*p))
        self.safe["floor"] = list(floor)

    def read(self, max_rows: int) -> list[TableRows]:
        parts: list[TableRows] = []
        got = 0
        while got < max_rows and not self.done:
            if self.state["table"] is None:
                t = self._start_table(parts)
                if t is None:
                    break
                self._plan(t, None)
                got += 1
                self._save()
                continue
            t = self.queue[0]
            if self.cur is None and not self._next_chunk(t):  # not reached: the last chunk ends the table
                raise DbusError(f"snapshot of {t.name}: no chunk left before the table's end")
            assert self.cur is not None
            image, at, hi = self.cur
            k = min(max_rows - got, len(image) - self.taken)
            if self.rate and k > 0:
                k = min(k, self._budget())
                if k <= 0:
                    if not got:
                        time.sleep(min(0.05, 1.0 / self.rate))
                    break
            if k > 0:
                first = self.state["rows"]
                parts.append(self._run(t, "read", t.key, t.no_image(k), image.slice(self.taken, k), k, first, at))
                self.taken += k
                got += k
                self.rows_read += k
                self.state["rows"] += k
            if self.taken >= len(image):  # the chunk is done: its range is covered up to its upper key
                self.cur = None
                if hi is None:  # the last one: the table is read (its end marker goes with its last rows)
                    self._fence(t, None, at)
                    self._end_table(t, parts)
                    got += 1
                else:
                    self.state["last_pk"] = pk_to_json(hi)
                    self._fence(t, self.state["last_pk"], at)
                if t.splittable or hi is None:
                    self._save()
            elif t.splittable:
                row = image.slice(self.taken - 1, 1)
                key = tuple(row.field(c)[0].as_py() for c in t.page)
                self.state["last_pk"] = pk_to_json(key)
                self._fence(t, self.state["last_pk"], at)
                self._save()
        return parts

    def progress(self) -> dict[str, Any]:
        out = super().progress()
        out.update(parallelism=self.parallelism, worker_restarts=self.restarts)
        return out
