"""The fences of the `mysql` snapshots judge each half of a change by its own key: the removal of the before
key by the range (parallel) or the emitted keys (backfill) of the before key, the row of the after key by
those of the after key; an update with one half held goes out as the other half alone."""

from __future__ import annotations

from collections import deque
from typing import Any

import pyarrow as pa

from dbus_ray.model import META_SCHEMA, TableRows
from dbus_ray.mysql.snapshot.backfill import KeyFences
from dbus_ray.mysql.snapshot.parallel import Fences, ParallelSnapshot

IMAGE = pa.struct([pa.field("id", pa.int32()), pa.field("v", pa.int32())])
FILE = "binlog.000001"


def changes(*rows: tuple[str, int, dict[str, Any] | None, dict[str, Any] | None]) -> TableRows:
    """(op, offset, before, after) rows of table d.t."""
    n = len(rows)
    arrays = [pa.array([r[0] for r in rows]), pa.array([FILE] * n), pa.array([r[1] for r in rows], pa.int64()),
              pa.nulls(n, pa.string()), pa.array(range(n), pa.int32()), pa.array(["tx"] * n),
              pa.array([0.0] * n), pa.array([0.0] * n), pa.array([r[2] for r in rows], IMAGE),
              pa.array([r[3] for r in rows], IMAGE)]
    schema = META_SCHEMA.append(pa.field("before", IMAGE)).append(pa.field("after", IMAGE))
    return TableRows("d", "t", ("id",), pa.RecordBatch.from_arrays(arrays, schema=schema))


def out(part: TableRows | None) -> list[tuple[str, Any, Any]]:
    if part is None:
        return []
    d = part.data.to_pylist()
    return [(r["op"], r["before"] and r["before"]["id"], r["after"] and r["after"]["id"]) for r in d]


def row(i: int, v: int = 0) -> dict[str, int]:
    return {"id": i, "v": v}


# ranges (-inf, 100] read at offset 1000, (100, 200] at 3000, (200, +inf) at 2000
FENCES = Fences({"d.t": {"key": ["id"], "at": [[[100], FILE, 1000], [[200], FILE, 3000], [None, FILE, 2000]]}})


def test_a_change_is_dropped_where_its_range_holds_it_and_kept_after():
    part = changes(("update", 500, row(5), row(5, 1)), ("update", 1500, row(5), row(5, 2)),
                   ("delete", 2500, row(150), None), ("insert", 1500, None, row(250)),
                   ("insert", 2500, None, row(260)), ("update", 3500, row(150), row(150, 3)))
    assert out(FENCES.keep(part)) == [("update", 5, 5), ("insert", None, 260), ("update", 150, 150)]


def test_a_key_change_across_ranges_read_on_either_side_of_it_keeps_the_half_not_held():
    part = changes(
        ("update", 2500, row(5), row(150)),    # into a range read after it: the removal of 5 alone
        ("update", 2500, row(150), row(6)),    # out of a range read after it: the row of 6 alone
        ("update", 500, row(5), row(150)),     # both ranges read after it: dropped
        ("update", 3500, row(150), row(5)),    # both read before it: as it is
    )
    assert out(FENCES.keep(part)) == [("delete", 5, None), ("insert", None, 6), ("update", 150, 5)]


def test_backfill_key_fences_judge_both_keys_too():
    fences = KeyFences()
    fences.add("d.t", ["id"], {(1,), (2,)}, (FILE, 2000))
    part = changes(("update", 1000, row(9), row(1)), ("update", 1000, row(2), row(9)),
                   ("update", 1000, row(1), row(2)), ("update", 3000, row(1), row(9)),
                   ("delete", 1000, row(1), None), ("insert", 1000, None, row(8)))
    assert out(fences.keep(part)) == [("delete", 9, None), ("insert", None, 9), ("update", 1, 9),
                                      ("insert", None, 8)]


def test_the_floor_is_at_or_before_every_chunk_that_may_come_after_the_checkpoint():
    """The last chunk received (3000), a chunk asked for when the last one received was at 2500, and the
    snapshot worker 0 reads its next chunks in (1000, older: worker 1's replacement opened at 3000)."""
    snap = ParallelSnapshot.__new__(ParallelSnapshot)
    snap.state = {"table": "d.t", "last_pk": [5]}
    snap.last_at = (FILE, 3000)
    snap.asked = deque([[None, None, 1, None, ("binlog.000001", 2500)]])
    snap.worker_at = [(FILE, 1000), (FILE, 3000)]
    snap.refence = None  # (not resumed)
    snap._save()
    assert snap.safe == {"table": "d.t", "last_pk": [5], "floor": [FILE, 1000]}
    snap.worker_at = [None, (FILE, 3000)]  # worker 0 replaced: its snapshot opens after now
    snap._save()
    assert snap.safe["floor"] == [FILE, 2500]
    snap.refence = (FILE, 400)  # resumed from a floor at 400: rows of the run before may follow this state too
    snap._save()
    assert snap.safe["floor"] == [FILE, 400]
