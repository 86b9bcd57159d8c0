"""The parallel snapshot of the `mysql` source (`snapshot_parallelism` >= 2): `ParallelSnapshot` reads
key-range chunks with worker actors (`dbus_ray.actors.snapshot_worker`), each in its own consistent
snapshot, and `Fences` make the stream that follows drop the changes a chunk already holds (`Fenced`
stands in for the snapshot while they apply).
"""

from __future__ import annotations

import logging
import time
from bisect import bisect_left
from collections import deque
from typing import Any

import pyarrow as pa

from dbus_ray.errors import DbusError
from dbus_ray.model import TableRows
from dbus_ray.mysql import connection as pf
from dbus_ray.mysql.offset import position_key
from dbus_ray.mysql.snapshot.catalog import SnapTable, chunk_bounds, pk_from_json, pk_to_json
from dbus_ray.mysql.snapshot.serial import RECONNECT_ATTEMPTS, Snapshot

log = logging.getLogger("dbus.mysql")

class WorkerLost(Exception):
    """A snapshot worker died (its chunks are read again by its replacement)."""


class Fences:
    """Which stream rows a parallel snapshot already holds. Chunk (lo, hi] of table T was read in a
    consistent snapshot at binlog position P, so its rows hold every change of a key in (lo, hi] written
    before P: the stream (which starts at the first snapshot's position, before every P) drops those
    and keeps the changes at P or after. Each key is then read once with its value at P and followed by
    exactly the changes after P. `raw` (JSON, in the checkpoint): {table: {"key": [page columns], "at":
    [[hi, file, offset], ...]}}, the ranges in key order, each from the previous hi, the last hi None."""

    def __init__(self, raw: dict[str, Any]) -> None:
        self.raw = raw
        self.tables: dict[str, tuple[list[str], list[tuple[Any, ...]], list[tuple[int, int]]]] = {}
        self.until = (0, 0)
        for name, f in raw.items():
            his = [tuple(pk_from_json(h)) for h, _, _ in f["at"] if h is not None]
            ats = [position_key(file, offset) for _, file, offset in f["at"]]
            self.tables[name] = (list(f["key"]), his, ats)
            self.until = max([self.until, *ats])

    def passed(self, file: str, offset: int) -> bool:
        """The stream is at or after every chunk's position: no row to drop any more."""
        return bool(file) and position_key(file, offset) >= self.until

    def keep(self, part: TableRows) -> TableRows | None:
        fence = self.tables.get(f"{part.db}.{part.table}")
        if fence is None:
            return part
        cols, his, ats = fence
        data = part.data
        ops = data.column("op").to_pylist()
        files = data.column("file").to_pylist()
        offsets = data.column("offset").to_pylist()
        keys: dict[str, list[tuple[Any, ...]]] = {}
        for side in ("before", "after"):
            image = data.column(side)
            names = {image.type.field(i).name for i in range(image.type.num_fields)}
            if all(c in names for c in cols):
                keys[side] = list(zip(*(image.field(c).to_pylist() for c in cols)))
        mask = []
        for i, op in enumerate(ops):
            side = "after" if op == "insert" else "before"  # an update is placed by the key it changes
            if op not in ("insert", "update", "delete") or side not in keys or None in keys[side][i]:
                mask.append(True)
                continue
            j = bisect_left(his, keys[side][i])
            mask.append(j >= len(ats) or position_key(files[i], offsets[i]) >= ats[j])
        if all(mask):
            return part
        if not any(mask):
            return None
        return TableRows(part.db, part.table, part.key, data.filter(pa.array(mask, pa.bool_())))


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
        pass


class ParallelSnapshot(Snapshot):
    """`snapshot_parallelism` >= 2: the tables are read in key-range chunks by a pool of worker actors
    (`pool`: `read(i, table, lo, hi)` -> a reference, `result(ref)` -> (image, file, offset) or WorkerLost,
    `replace(i)`, `close()`), each inside its own consistent snapshot; the stream that follows drops the
    changes the chunks already hold (see Fences). Chunks are emitted in key order, one table after the
    other, with the same markers as the serial snapshot. The state adds `fences`; `last_pk` is the key
    the emitted rows end at (a chunk's upper key once it is done), so a resumed snapshot re-splits the
    table after it. Tables whose key is not all integers are read as one chunk and checkpointed only
    at their end."""

    def __init__(self, ep: pf.Endpoint, pipeline: str, matcher: Any, pool: Any, parallelism: int,
                 chunk_rows: int = 10_000, max_rows_per_second: int | None = None,
                 state: dict[str, Any] | None = None) -> None:
        super().__init__(ep, pipeline, matcher, chunk_rows, max_rows_per_second, state)
        self.pool = pool
        self.parallelism = parallelism
        self.state.setdefault("fences", {})
        self.safe: dict[str, Any] = dict(self.state)  # the state as of the last row a resume can follow
        self.todo: deque[tuple[Any, Any]] = deque()  # chunks (lo, hi) of the current table not yet asked for
        self.asked: deque[list[Any]] = deque()  # [lo, hi, worker, ref] in key order
        self.cur: tuple[pa.StructArray, tuple[str, int], Any] | None = None  # image, position, hi
        self.taken = 0
        self.restarts = 0
        self.load = [0] * parallelism

    def begin(self) -> None:
        super().begin()  # the first consistent snapshot gives where the stream starts
        self.close_transaction()
        self.conn = pf.connect(self.ep)  # for chunk boundaries
        current = self.state["table"]
        if current is not None:
            t = self.queue[0]
            self._plan(t, None if self.state["last_pk"] is None else pk_from_json(self.state["last_pk"]))

    def close_transaction(self) -> None:
        super().close()

    def close(self) -> None:
        super().close()
        self.pool.close()

    def checkpoint_state(self) -> dict[str, Any]:
        return dict(self.safe)

    def fences(self) -> Fences:
        return Fences(self.state["fences"])

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
            self.asked.append([lo, hi, i, self.pool.read(i, t, lo, hi)])

    def _next_chunk(self, t: SnapTable) -> bool:
        """The next chunk of `t` in key order into `self.cur`; False when the table is read."""
        self._ask(t)
        if not self.asked:
            return False
        for attempt in range(RECONNECT_ATTEMPTS + 1):
            lo, hi, i, ref = self.asked[0]
            try:
                image, file, offset = self.pool.result(ref)
                break
            except WorkerLost as exc:
                if attempt == RECONNECT_ATTEMPTS:
                    raise DbusError(f"snapshot of {t.name}: worker {i} lost {attempt + 1} times ({exc})") from None
                self.restarts += 1
                log.warning("[%s] snapshot worker %d lost (%s): reading its chunks again", self.pipeline, i, exc)
                self.pool.replace(i)
                for entry in self.asked:
                    if entry[2] == i:
                        entry[3] = self.pool.read(i, t, entry[0], entry[1])
        self.asked.popleft()
        self.load[i] -= 1
        self.chunks += 1
        self.cur, self.taken = (image, (file, offset), hi), 0
        self._ask(t)
        return True

    def _fence(self, t: SnapTable, hi: Any, at: tuple[str, int]) -> None:
        """The emitted rows of `t` now reach `hi` (JSON key, None: the end), read at `at`."""
        fences = dict(self.state["fences"])
        f = fences.get(t.name) or {"key": list(t.page), "at": []}
        entries = list(f["at"])
        if entries and (entries[-1][1], entries[-1][2]) == at:
            entries[-1] = [hi, *at]
        else:
            entries.append([hi, *at])
        fences[t.name] = {"key": f["key"], "at": entries}
        self.state["fences"] = fences

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
                self.safe = dict(self.state)
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
                    self.safe = dict(self.state)
            elif t.splittable:
                row = image.slice(self.taken - 1, 1)
                key = tuple(row.field(c)[0].as_py() for c in t.page)
                self.state["last_pk"] = pk_to_json(key)
                self._fence(t, self.state["last_pk"], at)
                self.safe = dict(self.state)
        return parts

    def progress(self) -> dict[str, Any]:
        out = super().progress()
        out.update(parallelism=self.parallelism, worker_restarts=self.restarts)
        return out
