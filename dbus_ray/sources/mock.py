"""Source `mock`: a synthetic table `<db>.<table>` (id, seq, name, amount) with inserts, updates and
deletes over `keys` primary keys, `rows` rows in all (or without end), at `rate` rows/s (0: as fast
as possible). Row `seq` is fully determined by its number, so a resumed run continues exactly where
the checkpoint says.

Row `seq` touches key `seq % keys`; its round `seq // keys` decides the change: round 0 inserts,
then update, delete, insert again, update, delete ... so every change is valid for its key.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dbus_ray.model import META_SCHEMA, RowBatch, TableRows
from dbus_ray.registry import Source, source
from dbus_ray.validation import Invalid

IMAGE_TYPE = pa.struct(
    [("id", pa.int64()), ("seq", pa.int64()), ("name", pa.string()), ("amount", pa.int64())]
)
OP_NAMES = pa.array(["insert", "update", "delete"], pa.string())
SCHEMA = META_SCHEMA.append(pa.field("before", IMAGE_TYPE)).append(pa.field("after", IMAGE_TYPE))


@dataclass
class MockOptions:
    rows: int | None = 100_000  # rows in all; null: without end
    rate: float = 0.0  # rows per second; 0: as fast as possible
    keys: int = 1000
    db: str = "mock"
    table: str = "items"
    tables: int = 1  # more than 1: key k lives in table `<table>_<k % tables>`

    def __post_init__(self) -> None:
        if self.rows is not None and self.rows < 0:
            raise Invalid("rows", "must not be negative")
        if self.rate < 0:
            raise Invalid("rate", "must not be negative")
        if self.keys < 1:
            raise Invalid("keys", "must be at least 1")
        if self.tables < 1:
            raise Invalid("tables", "must be at least 1")


def op_codes(seq: np.ndarray, keys: int) -> np.ndarray:
    """0 insert, 1 update, 2 delete for each row number."""
    rounds = seq // keys
    return np.where(rounds == 0, 0, np.array([0, 1, 2], dtype=np.int8)[rounds % 3])


def images(seq: np.ndarray, keys: int) -> pa.StructArray:
    key = seq % keys
    key_arr = pa.array(key)
    seq_arr = pa.array(seq)
    name = pc.binary_join_element_wise("item-", pc.cast(key_arr, pa.string()), "-",
                                       pc.cast(seq_arr, pa.string()), "")
    amount = pa.array((seq * 7919) % 100_000)
    return pa.StructArray.from_arrays([key_arr, seq_arr, name, amount], fields=list(IMAGE_TYPE))


@source("mock")
class MockSource(Source):
    Options = MockOptions

    @classmethod
    def parse_position(cls, text: str) -> dict[str, Any]:
        if not text.isdigit():
            raise ValueError(f"bad mock position {text!r}: expected the number of the next row, e.g. 1000")
        return {"next": int(text)}

    def open(self, checkpoint: dict[str, Any] | None) -> None:
        self.next = int(checkpoint["next"]) if checkpoint else 0
        self.started = time.monotonic()
        self.started_at = self.next

    def _allowed(self, max_rows: int) -> int:
        n = max_rows
        o = self.options
        if o.rows is not None:
            n = min(n, o.rows - self.next)
        if o.rate > 0:
            due = int((time.monotonic() - self.started) * o.rate) - (self.next - self.started_at)
            n = min(n, due)
        return max(n, 0)

    def poll(self, max_rows: int, seq: int) -> RowBatch | None:
        n = self._allowed(max_rows)
        if n == 0:
            if self.options.rate > 0 and not self.caught_up():
                time.sleep(min(0.05, 1.0 / self.options.rate))
            return None
        o = self.options
        rows = np.arange(self.next, self.next + n, dtype=np.int64)
        codes = op_codes(rows, o.keys)
        now = time.time()
        seq_str = pc.cast(pa.array(rows), pa.string())
        op = pa.DictionaryArray.from_arrays(pa.array(codes), OP_NAMES).cast(pa.string())
        prev = images(rows - o.keys, o.keys)
        cur = images(rows, o.keys)
        before = pa.StructArray.from_arrays(
            prev.flatten(), fields=list(IMAGE_TYPE), mask=pa.array(codes == 0)
        )
        after = pa.StructArray.from_arrays(
            cur.flatten(), fields=list(IMAGE_TYPE), mask=pa.array(codes == 2)
        )
        data = pa.RecordBatch.from_arrays(
            [
                op,
                pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int8)), ["mock"]).cast(pa.string()),
                pa.array(rows),
                pa.nulls(n, pa.string()),
                pa.array(np.zeros(n, np.int32)),
                pc.binary_join_element_wise("mock:", seq_str, ""),
                pa.array(np.full(n, now)),
                pa.array(np.full(n, now)),
                before,
                after,
            ],
            schema=SCHEMA,
        )
        self.next += n
        if o.tables == 1:
            parts = [TableRows(o.db, o.table, ("id",), data)]
        else:
            which = (rows % o.keys) % o.tables
            parts = []
            for t in range(o.tables):
                index = np.flatnonzero(which == t)
                if len(index):
                    parts.append(TableRows(o.db, f"{o.table}_{t}", ("id",), data.take(pa.array(index))))
        return RowBatch(self.pipeline, seq, parts, {"next": self.next}, now)

    def caught_up(self) -> bool:
        return self.options.rows is not None and self.next >= self.options.rows
