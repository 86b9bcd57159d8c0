"""Property: a snapshot of the `mysql` source killed at a random point stays exact. Each case: a table keyed
by an integer, by two integer columns, or by a text column in a case-insensitive collation and a DATETIME;
a writer updating, deleting, inserting and moving rows to new keys below and above every key (into ranges
read earlier and later) from before the snapshot until the resumed one is done; and either a kill -9 of the
reader once a random share of the snapshot is out (rows after the last checkpoint stay delivered;
`reader-early`: within its first 1,000 rows, mostly before the first batch's checkpoint, when the store
holds only the snapshot's start) then a resume until caught up, or a kill -9 of both snapshot workers
(their replacements read in newer snapshots than the chunks before); a last run reads the writes up to the
writer's last one. Then the output applied in order (an update removes its before key and sets its after
key; repeats allowed after a reader kill: at least once; none when only workers are killed: the reader
never stopped) must equal `SELECT *` of the table, with
neither an extra, a missing nor a stale row.

Short form in `make test`: seven cases (reader killed: parallelism 2 with each key kind, parallelism 1 with
the composite key; reader killed early: parallelism 2, an integer key; workers killed: an integer key and
a text key);
`make chaos` (DBUS_CHAOS_ROUNDS=5) runs every combination of parallelism 1/2, key kind and what is killed,
each round with other seeds (other crash points and writes).
"""

from __future__ import annotations

import os
import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.changes import pipeline_config, read_jsonl
from tests.support.helpers import table_name
from tests.support.snapshot_exact import (
    DB,
    Keyed,
    apply_keyed,
    diff,
    kill_workers_when,
    run_until_reader_killed,
    writer_thread,
)

pytestmark = pytest.mark.usefixtures("ray_session")

ROUNDS = int(os.environ.get("DBUS_CHAOS_ROUNDS", "1"))
SHORT = [(2, "int", "reader"), (2, "composite", "reader"), (1, "composite", "reader"), (2, "int", "reader-early"),
         (2, "int", "workers"), (2, "text", "reader"), (2, "text", "workers")]
KINDS = ("int", "composite", "text")
ALL = [(p, kind, crash) for p in (1, 2) for kind in KINDS for crash in ("reader", "reader-early")] + [
    (2, kind, "workers") for kind in KINDS]
CASES = [(p, kind, crash, 1000 + r) for r in range(ROUNDS) for p, kind, crash in (SHORT if ROUNDS == 1 else ALL)]
N = 20_000


@pytest.mark.parametrize(("parallelism", "kind", "crash", "seed"), CASES)
def test_snapshot_killed_at_a_random_point_gives_the_table(
    mariadb: Any, root: Any, tmp_path: Path, parallelism: int, kind: str, crash: str, seed: int
) -> None:
    from dbus_ray.pipeline import run_pipeline

    rnd = random.Random(seed * 10 + parallelism + (kind == "int"))
    t = Keyed(table_name("snap_prop"), kind, N)
    t.create(root)
    out = tmp_path / "out.jsonl"
    name = f"snap-prop-{parallelism}-{kind}-{crash}-{seed}"
    cfg = pipeline_config(mariadb, tmp_path, name, out, snapshot="initial", snapshot_parallelism=parallelism,
                          chunk_rows=1500, max_rows_per_second=8000, include=[f"{DB}.{t.name}"],
                          flow={"read_batch_rows": 500, "max_rows_in_flight": 2000})
    stop = threading.Event()
    ops: list[str] = []
    errors: list[BaseException] = []
    # (workers: while chunks are still to be read, four chunks of 1,500 rows being asked for ahead)
    crash_at = rnd.randrange(1, 1000) if crash == "reader-early" else \
        rnd.randrange(N // 20, N * 19 // 20 if crash == "reader" else N // 2)
    thread = writer_thread(mariadb, t, seed, stop, ops, errors)
    began = time.monotonic()
    killer = None

    def writes_end(status: dict[str, Any]) -> None:  # the writer stops once the (resumed) snapshot is read
        if (status.get("snapshot") or {}).get("state") == "done":
            stop.set()

    try:
        if crash.startswith("reader"):
            killed_at = run_until_reader_killed(cfg, crash_at)
        else:  # both workers: their replacements read the chunks left in newer snapshots
            killer, killed_at = kill_workers_when(name, parallelism, crash_at, errors), crash_at
        written = len(ops)
        final = run_pipeline(cfg, until_caught_up=True, on_progress=writes_end, interval=0.05)
    finally:
        stop.set()
        thread.join()
        if killer is not None:
            killer.join()
    assert not errors, errors
    assert final["error"] is None, final["error"]
    # caught up is judged from where the server was when the snapshot ended: the writes after that (until the
    # writer saw the snapshot done) may be after where the run stopped; a second run, from the clean stop's
    # checkpoint (no repeats), reads up to the writer's last one
    last = run_pipeline(cfg, until_caught_up=True, interval=0.05)
    assert last["error"] is None, last["error"]
    took = time.monotonic() - began
    if crash.startswith("reader"):
        assert written > 50 and len(ops) > written, (written, len(ops))  # writes raced both runs
    else:
        assert final["snapshot"]["worker_restarts"] >= parallelism, final["snapshot"]

    rows = read_jsonl(out)
    # the reader never stopped when workers are killed: each key read once, then exactly its later changes
    applied = apply_keyed(rows, t.name, t.cols, strict=crash == "workers")
    table = t.rows(root)
    found = diff(applied, table)
    print(f"\nparallelism {parallelism}, {kind} key, seed {seed}: {crash} killed at {killed_at} of {N} snapshot rows, "
          f"{len(ops)} writes ({ops.count('move')} key moves), {len(rows)} rows out, {found}, {took:.1f}s")
    assert found == {"extra": 0, "missing": 0, "stale": 0}
    assert applied == table
