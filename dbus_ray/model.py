"""Row-change model: one row change (`RowChange`), the columnar form actors exchange (`TableRows`,
`RowBatch`) and the documented JSON form.

Actors never pass single rows: a `RowBatch` holds, in source order, runs of rows of one table each
(`TableRows`), every run an Arrow record batch. Routing and batching look only at the run's
`db`/`table`, never at a row, and Ray moves Arrow buffers without copying them row by row.

This module imports nothing of the project's.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pyarrow as pa

#: Arrow columns every `TableRows.data` starts with; `before` and `after` (struct columns of the
#: table's columns, null where the image does not exist) follow.
META_SCHEMA = pa.schema(
    [
        ("op", pa.string()),
        ("file", pa.string()),
        ("offset", pa.int64()),
        ("gtid", pa.string()),
        ("index", pa.int32()),
        ("txid", pa.string()),
        ("ts", pa.float64()),
        ("read_ts", pa.float64()),
    ]
)
META_COLUMNS = tuple(META_SCHEMA.names)
#: Optional last column of `TableRows.data`, only when the source's images leave columns out
#: (binlog_row_image MINIMAL/NOBLOB): per row, the names of the columns absent from each image.
ABSENT_TYPE = pa.struct([("before", pa.list_(pa.string())), ("after", pa.list_(pa.string()))])


@dataclass(frozen=True, slots=True)
class Position:
    """Where a row change sits in its source: binlog file and offset of its event, the GTID of its
    transaction where the server has one, and the index of the row inside its transaction."""

    file: str = ""
    offset: int = 0
    gtid: str | None = None
    index: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "offset": self.offset, "gtid": self.gtid, "index": self.index}


@dataclass(slots=True)
class RowChange:
    """One row change. `key` maps primary-key column -> value, in the key's order; `before`/`after` map column -> value
    (None where the image does not exist: no `before` for an insert, no `after` for a delete)."""

    pipeline: str
    db: str
    table: str
    op: str
    key: dict[str, Any]
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    position: Position
    txid: str
    ts: float  # source commit time, seconds since the epoch
    read_ts: float  # when the bus read it
    absent: dict[str, list[str]] | None = None  # image -> columns not in it (null there, but not SQL NULL)

    def to_dict(self) -> dict[str, Any]:
        """The documented JSON form (see README, "Row change JSON"); `absent` only when columns are."""
        out = {
            "pipeline": self.pipeline,
            "db": self.db,
            "table": self.table,
            "op": self.op,
            "key": self.key,
            "before": self.before,
            "after": self.after,
            "pos": self.position.to_dict(),
            "txid": self.txid,
            "ts": self.ts,
            "read_ts": self.read_ts,
        }
        if self.absent:
            out["absent"] = self.absent
        return out

    def to_json(self) -> str:
        return dumps(self.to_dict())


def json_default(value: Any) -> Any:
    """JSON form of the non-JSON values a row can hold: DECIMAL as a string in positional notation with
    the column's scale (`-0.000000000000000000000000000001`, `0.0000000000`, as MySQL shows it; never
    `1E-30`), bytes as base64, dates and times in ISO 8601, Python sets as sorted lists (no mysql row holds one:
    a SET column is the string of its members joined by `,`, as SELECT shows it)."""
    if isinstance(value, decimal.Decimal):
        return format(value, "f")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return _timedelta_iso(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def _timedelta_iso(value: dt.timedelta) -> str:
    """MySQL TIME as `[-]HH:MM:SS[.ffffff]` (hours may exceed 24)."""
    micros = value.days * 86_400_000_000 + value.seconds * 1_000_000 + value.microseconds
    sign = "-" if micros < 0 else ""
    micros = abs(micros)
    secs, frac = divmod(micros, 1_000_000)
    hours, rest = divmod(secs, 3600)
    text = f"{sign}{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"
    return f"{text}.{frac:06d}" if frac else text


def dumpb(obj: Any) -> bytes:
    """Compact UTF-8 JSON (orjson; the same bytes as `json.dumps(obj, default=json_default,
    ensure_ascii=False, separators=(",", ":"))`, several times faster)."""
    return orjson.dumps(obj, default=json_default)


def dumps(obj: Any) -> str:
    return dumpb(obj).decode()


@dataclass(slots=True)
class TableRows:
    """A run of row changes of one table, in source order, as one Arrow record batch with the
    columns of `META_SCHEMA` followed by `before` and `after` struct columns."""

    db: str
    table: str
    key: tuple[str, ...]
    data: pa.RecordBatch

    @property
    def num_rows(self) -> int:
        return self.data.num_rows

    @property
    def name(self) -> str:
        return f"{self.db}.{self.table}"

    def records(self, pipeline: str) -> Iterator[dict[str, Any]]:
        """The row changes in their JSON form (what `RowChange.to_dict()` gives), built straight from the
        columns: the sinks' and serializers' per-row path, without a RowChange object per row."""
        cols = self.data.to_pydict()
        befores, afters = cols["before"], cols["after"]
        _shortest_float32(befores, self.data.schema.field("before").type)
        _shortest_float32(afters, self.data.schema.field("after").type)
        ops, files, offsets, gtids, indexes = cols["op"], cols["file"], cols["offset"], cols["gtid"], cols["index"]
        txids, tss, read_tss = cols["txid"], cols["ts"], cols["read_ts"]
        key, db, table = self.key, self.db, self.table
        one = key[0] if len(key) == 1 else None  # a one-column key: its dict without a comprehension per row
        absent = cols.get("absent")
        for i in range(self.data.num_rows):
            before, after = befores[i], afters[i]
            image = after if after is not None else before or {}
            gone = None
            if absent is not None and absent[i]:
                gone = {k: v for k, v in absent[i].items() if v}
                missing = [k for k in key if k in gone.get("after", ())] if after is not None and before else ()
                if missing:  # MINIMAL: an update's after image lacks the unchanged key, `before` has it
                    image = {**image, **{k: before.get(k) for k in missing}}
            record = {
                "pipeline": pipeline,
                "db": db,
                "table": table,
                "op": ops[i],
                "key": {one: image.get(one)} if one is not None else {k: image.get(k) for k in key},
                "before": before,
                "after": after,
                "pos": {"file": files[i], "offset": offsets[i], "gtid": gtids[i], "index": indexes[i]},
                "txid": txids[i],
                "ts": tss[i],
                "read_ts": read_tss[i],
            }
            if gone:
                record["absent"] = gone
            yield record

    def changes(self, pipeline: str) -> Iterator[RowChange]:
        for r in self.records(pipeline):
            yield RowChange(r["pipeline"], r["db"], r["table"], r["op"], r["key"], r["before"], r["after"],
                            Position(**r["pos"]), r["txid"], r["ts"], r["read_ts"], r.get("absent"))

    @classmethod
    def from_changes(cls, changes: list[RowChange], image_type: pa.StructType | None = None) -> TableRows:
        """Build a run from row changes of one table. `image_type` fixes the Arrow type of the
        images (needed for types Arrow cannot infer exactly, e.g. unsigned BIGINT)."""
        if not changes:
            raise ValueError("from_changes needs at least one row change")
        first = changes[0]
        arrays = [
            pa.array([c.op for c in changes], pa.string()),
            pa.array([c.position.file for c in changes], pa.string()),
            pa.array([c.position.offset for c in changes], pa.int64()),
            pa.array([c.position.gtid for c in changes], pa.string()),
            pa.array([c.position.index for c in changes], pa.int32()),
            pa.array([c.txid for c in changes], pa.string()),
            pa.array([c.ts for c in changes], pa.float64()),
            pa.array([c.read_ts for c in changes], pa.float64()),
        ]
        before = pa.array([c.before for c in changes], image_type)
        after = pa.array([c.after for c in changes], image_type or before.type)
        if image_type is None and pa.types.is_null(before.type):
            before = pa.nulls(len(changes), after.type)
        schema = META_SCHEMA.append(pa.field("before", before.type)).append(pa.field("after", after.type))
        data = pa.RecordBatch.from_arrays([*arrays, before, after], schema=schema)
        return cls(first.db, first.table, tuple(first.key), data)


def shortest_float32(value: float) -> float:
    """A FLOAT column's value as the shortest decimal that is the same float32 (0.1, as SELECT shows it, not
    the float64 0.10000000149011612)."""
    import numpy as np

    return float(str(np.float32(value)))


def _shortest_float32(images: list[dict[str, Any] | None], image_type: pa.DataType) -> None:
    """The FLOAT columns of row images as `shortest_float32` gives them."""
    if not pa.types.is_struct(image_type):
        return
    names = [f.name for f in image_type if pa.types.is_float32(f.type)]
    if not names:
        return
    for image in images:
        if image is None:
            continue
        for name in names:
            value = image.get(name)
            if value is not None:
                image[name] = shortest_float32(value)


@dataclass(slots=True)
class RowBatch:
    """What actors exchange: runs of rows in source order, plus what the source needs to resume
    after every row of this batch (and of all batches before it) is delivered."""

    pipeline: str
    seq: int
    parts: list[TableRows] = field(default_factory=list)
    checkpoint: dict[str, Any] | None = None
    ts: float = 0.0  # newest source commit time in the batch (0 when empty)

    @property
    def num_rows(self) -> int:
        return sum(p.data.num_rows for p in self.parts)

    def changes(self) -> Iterator[RowChange]:
        for part in self.parts:
            yield from part.changes(self.pipeline)

    def records(self) -> Iterator[dict[str, Any]]:
        """Every row change in its JSON form (see `TableRows.records`)."""
        for part in self.parts:
            yield from part.records(self.pipeline)
