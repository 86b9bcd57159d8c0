"""Parallel snapshot (`snapshot_parallelism: 2`) against a real MariaDB through Ray: chunks read by worker
actors each in its own consistent snapshot, while a writer updates, deletes and inserts; the stream
drops the changes a chunk already holds, so applying the output strictly in order (a read of a present
key or an update whose before image is not the current row fails) gives the table; a kill -9 of a
worker is survived (its chunks are read again); a stop mid-snapshot resumes after the last emitted key
(the keys read again then also get the changes since the checkpoint again: at least once)."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import ray

from tests.support.changes import (
    apply_strict,
    apply_upserts,
    assert_tables_match,
    pipeline_config,
    read_jsonl,
    snapshot_markers,
    snapshot_window,
)
from tests.support.helpers import execute, table_name, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_session")]

DB = "dbus_test"


def writer_thread(mariadb: Any, t: str, n: int, stop: threading.Event, commits: list[float],
                  errors: list[BaseException]) -> threading.Thread:
    def run() -> None:
        conn = mariadb.root_connect(DB, autocommit=True)
        rnd = random.Random(11)
        next_id = n + 1
        try:
            with conn.cursor() as cur:
                while not stop.is_set():
                    k = rnd.randrange(1, n + 1)
                    what = rnd.random()
                    if what < 0.6:
                        cur.execute(f"UPDATE {t} SET v = v + 1, s = 'upd' WHERE id = %s", (k,))
                    elif what < 0.85:
                        cur.execute(f"DELETE FROM {t} WHERE id = %s", (k,))
                    elif what < 0.95:
                        cur.execute(f"INSERT INTO {t} VALUES (%s, 1, 'new')", (next_id,))
                        next_id += 1
                    else:  # one transaction over keys that several chunks hold
                        cur.execute("BEGIN")
                        for j in range(5):
                            cur.execute(f"UPDATE {t} SET s = 'tx' WHERE id = %s", ((k + j * 7919) % n + 1,))
                        cur.execute("COMMIT")
                    commits.append(time.time())
                    time.sleep(0.002)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)
        finally:
            conn.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_parallel_snapshot_with_racing_writes_survives_a_worker_kill(
    mariadb: Any, root: Any, tmp_path: Path
) -> None:
    from dbus_ray.pipeline import NAMESPACE, actor_name, run_pipeline

    n = 200_000
    t = table_name("snap_par")
    execute(root, f"CREATE TABLE {t} (id INT PRIMARY KEY, v INT, s VARCHAR(40))",
            f"INSERT INTO {t} SELECT seq, seq % 97, CONCAT('row-', seq) FROM seq_1_to_{n}")
    out = tmp_path / "out.jsonl"
    cfg = pipeline_config(mariadb, tmp_path, "snap-par", out, snapshot="initial", chunk_rows=5000,
                               snapshot_parallelism=2, max_rows_per_second=50_000, include=[f"{DB}.{t}"],
                               flow={"read_batch_rows": 5000, "max_rows_in_flight": 20_000})
    stop = threading.Event()
    commits: list[float] = []
    errors: list[BaseException] = []
    killed: dict[str, Any] = {}

    def killer() -> None:  # kill -9 of worker 0 once a tenth of the table is out
        try:
            reader = wait_for(lambda: _actor(actor_name("snap-par", "reader"), NAMESPACE), what="reader")
            worker = wait_for(lambda: _actor(actor_name("snap-par", "snapshot", "0"), NAMESPACE), what="worker")
            killed["pid"] = ray.get(worker.pid.remote(), timeout=30)
            wait_for(lambda: (ray.get(reader.status.remote()).get("snapshot") or {}).get("rows", 0) >= n // 10,
                     what="a tenth of the snapshot", every=0.05)
            os.kill(killed["pid"], signal.SIGKILL)
            killed["at"] = time.time()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    thread = writer_thread(mariadb, t, n, stop, commits, errors)
    kill_thread = threading.Thread(target=killer)
    try:
        wait_for(lambda: errors or len(commits) >= 20, every=0.01, what="the writer's first writes")
        kill_thread.start()
        began = time.monotonic()
        final = run_pipeline(cfg, until_caught_up=True, interval=0.1)
        took = time.monotonic() - began
    finally:
        stop.set()
        thread.join()
        kill_thread.join()
    assert not errors, errors
    assert final["error"] is None, final["error"]
    progress = final["snapshot"]
    assert progress["state"] == "done" and progress["rows"] >= n * 0.9
    assert progress["parallelism"] == 2 and progress["worker_restarts"] >= 1, progress
    final = run_pipeline(cfg, until_caught_up=True, interval=0.1)  # the changes after the first run caught up
    assert final["error"] is None
    # fences lifted
    assert set(final["checkpoint"]["source"]) - {"selected"} == {"file", "offset", "skip", "gtid", "gtid_pos", "server"}

    rows = read_jsonl(out)
    reads = [r for r in rows if r["op"] == "read"]
    markers = snapshot_markers(rows)
    assert markers == [(t, "start"), (t, "end")]
    # the chunks were read at several positions: one consistent snapshot per worker (the two may meet at one
    # position), and a later one, after the kill, in its replacement
    positions = {(r["pos"]["file"], r["pos"]["offset"]) for r in reads}
    assert len(positions) >= 2, positions
    # reads in key order, and writes raced them, the kill happened while they were read
    ids = [r["key"]["id"] for r in reads]
    assert ids == sorted(ids)
    first_read, last_read = snapshot_window(rows)
    assert sum(first_read < c < last_read for c in commits) > 100
    assert first_read < killed["at"] < last_read
    # each key read once, then exactly the changes after its read: applied strictly, the table as it is
    state = apply_strict(rows)
    assert_tables_match(state, root, t)
    print(f"\nparallel snapshot: {len(reads)} rows, {len(rows) - len(reads)} changes, {len(commits)} writes, "
          f"{progress['worker_restarts']} worker restart(s), {took:.1f}s")


def _actor(name: str, namespace: str) -> Any:
    try:
        return ray.get_actor(name, namespace=namespace)
    except ValueError:
        return None


def test_parallel_snapshot_resumes_after_the_last_emitted_key(mariadb: Any, root: Any, tmp_path: Path) -> None:
    from dbus_ray.checkpoints import FileCheckpointStore
    from dbus_ray.pipeline import run_pipeline

    a, b = table_name("snap_pra"), table_name("snap_prb")
    for t in (a, b):
        execute(root, f"CREATE TABLE {t} (id INT PRIMARY KEY, v INT, s VARCHAR(40))",
                f"INSERT INTO {t} SELECT seq, seq % 97, 'x' FROM seq_1_to_5000")
    out = tmp_path / "out.jsonl"
    cfg = pipeline_config(mariadb, tmp_path, "snap-pres", out, snapshot="initial", chunk_rows=700,
                               snapshot_parallelism=2, include=[f"{DB}.{a}", f"{DB}.{b}"],
                               flow={"read_batch_rows": 500, "max_rows_in_flight": 1000})
    final = run_pipeline(cfg, max_rows=7000, interval=0.05)
    assert final["error"] is None
    saved = FileCheckpointStore(cfg.pipeline_dir).load()["source"]["snapshot"]
    assert saved["tables_done"] == [f"{DB}.{a}"] and saved["table"] == f"{DB}.{b}"
    last = saved["last_pk"][0]
    assert 0 < last < 5000 and saved["rows"] == last
    assert saved["fences"][f"{DB}.{b}"]["at"][-1][0] == [last]
    first_rows = len(read_jsonl(out))
    # changes while stopped: to the table done, and to the unfinished one on both sides of where it stopped
    execute(
        root,
        f"UPDATE {a} SET v = -1 WHERE id <= 10",
        f"DELETE FROM {a} WHERE id BETWEEN 100 AND 104",
        f"UPDATE {b} SET v = -2 WHERE id IN ({last - 1}, {last + 1}, 4998)",
        f"DELETE FROM {b} WHERE id IN ({last - 2}, {last + 2})",
        f"INSERT INTO {b} VALUES (20000, 1, 'late')",
        f"INSERT INTO {a} VALUES (20000, 1, 'late')",
    )
    final = run_pipeline(cfg, until_caught_up=True, interval=0.05)
    assert final["error"] is None
    rows = read_jsonl(out)
    second = rows[first_rows:]
    resumed_reads = [r["key"]["id"] for r in second if r["op"] == "read"]
    assert resumed_reads and min(resumed_reads) == last + 1 and 20000 in resumed_reads
    markers = snapshot_markers(rows)
    assert markers == [(a, "start"), (a, "end"), (b, "start"), (b, "end")]
    # the changes to keys read before the stop exactly once; those to the keys read again after it too
    # (a stop cannot be told from a kill -9 that left rows delivered past the checkpoint: the changes
    # since the checkpoint's floor are brought again for the ranges a resume reads, see
    # dbus_ray.mysql.snapshot.parallel)
    changed = [r for r in second if r["op"] in ("insert", "update", "delete")]
    assert sorted((r["table"], r["op"], r["key"]["id"]) for r in changed) == sorted(
        [(a, "update", i) for i in range(1, 11)] + [(a, "delete", i) for i in range(100, 105)]
        + [(a, "insert", 20000), (b, "update", last - 1), (b, "delete", last - 2)]
        + [(b, "update", last + 1), (b, "update", 4998), (b, "delete", last + 2), (b, "insert", 20000)]
    )
    state = apply_upserts(rows)
    assert_tables_match(state, root, a, b)


def test_snapshot_parallelism_below_one_is_refused(mariadb: Any, tmp_path: Path) -> None:
    from dbus_ray.config import ConfigError

    with pytest.raises(ConfigError) as err:
        pipeline_config(mariadb, tmp_path, "snap-bad", tmp_path / "o.jsonl", snapshot="initial",
                             snapshot_parallelism=0)
    assert str(err.value) == "snap-bad.yaml: source.snapshot_parallelism: must be at least 1"
