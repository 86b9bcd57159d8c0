"""The `mysql` snapshot stays exact (applying the output in order gives the table as SELECT returns it) after a
crash that leaves rows delivered past the saved checkpoint, and under updates that change the primary key
while a parallel snapshot reads the ranges of both keys at different positions."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import ray

from tests.support.changes import pipeline_config, read_jsonl
from tests.support.helpers import actor_pid, execute, live_actor_pid, table_name, wait_for
from tests.support.snapshot_exact import DB, Keyed, apply_keyed, diff, snapshot_rows

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_session")]


@pytest.mark.parametrize(("parallelism", "kind"), [(1, "int"), (2, "int"), (2, "text")])
def test_rows_delivered_past_the_checkpoint_are_deleted_after_a_resume(
    mariadb: Any, root: Any, tmp_path: Path, parallelism: int, kind: str
) -> None:
    """Without timing: run 2,000 rows, keep that checkpoint, run 1,000 rows more (delivered), put the kept
    checkpoint back (what a kill -9 before the next save leaves), delete a key of those rows, resume. A
    text key is split into ranges and checkpointed by its last emitted key as an integer key is."""
    from dbus_ray.checkpoints import FileCheckpointStore
    from dbus_ray.pipeline import run_pipeline

    t = table_name("snap_crash")
    key_type, key_of = ("INT", "seq") if kind == "int" else ("VARCHAR(12)", "LPAD(seq, 6, '0')")
    gone = 2099 if kind == "int" else "001099"  # delivered past the kept checkpoint
    execute(root, f"CREATE TABLE {t} (id {key_type} PRIMARY KEY, v INT)",
            f"INSERT INTO {t} SELECT {key_of}, seq FROM seq_1_to_5000")
    out = tmp_path / "out.jsonl"
    cfg = pipeline_config(mariadb, tmp_path, f"snap-crash{parallelism}{kind}", out, snapshot="initial",
                          snapshot_parallelism=parallelism, chunk_rows=700, include=[f"{DB}.{t}"],
                          flow={"read_batch_rows": 500, "max_rows_in_flight": 1000})
    store = FileCheckpointStore(cfg.pipeline_dir)
    assert run_pipeline(cfg, max_rows=2000, interval=0.05)["error"] is None
    kept = store.load()
    assert kept["source"]["snapshot"]["last_pk"] == ([1999] if kind == "int" else ["001999"])
    assert run_pipeline(cfg, max_rows=1000, interval=0.05)["error"] is None
    assert gone in [r["key"]["id"] for r in read_jsonl(out) if r["op"] == "read"]
    store.save(kept)
    execute(root, f"DELETE FROM {t} WHERE id = %s", args=(gone,))
    assert run_pipeline(cfg, until_caught_up=True, interval=0.05)["error"] is None

    rows = read_jsonl(out)
    of_gone = [r["op"] for r in rows if r["op"] != "ddl" and r["key"]["id"] == gone]
    assert of_gone[-1] == "delete", of_gone
    applied = apply_keyed(rows, t, ("id",), strict=False)
    table = Keyed(t, "int", 5000).rows(root)  # (keyed by id)
    assert diff(applied, table) == {"extra": 0, "missing": 0, "stale": 0}
    assert applied == table


@pytest.mark.parametrize(("parallelism", "kind"), [(1, "int"), (2, "int"), (2, "text")])
def test_rows_delivered_before_the_first_checkpoint_are_deleted_after_a_resume(
    mariadb: Any, root: Any, tmp_path: Path, parallelism: int, kind: str
) -> None:
    """A kill -9 before the first batch's checkpoint, without timing: run A stops before reading a row (the
    store then holds what the reader saved before handing on any batch), run B delivers 2,000 rows, the store
    is put back as A left it (B's checkpoints never saved), a key B delivered is deleted, resume: the key's
    `read` is followed by its `delete` (a snapshot started from scratch would read the table without it and
    stream from after the delete)."""
    from dbus_ray.checkpoints import FileCheckpointStore
    from dbus_ray.pipeline import run_pipeline

    t = table_name("snap_first")
    key_type, key_of = ("INT", "seq") if kind == "int" else ("VARCHAR(12)", "LPAD(seq, 6, '0')")
    gone = 1099 if kind == "int" else "001099"
    execute(root, f"CREATE TABLE {t} (id {key_type} PRIMARY KEY, v INT)",
            f"INSERT INTO {t} SELECT {key_of}, seq FROM seq_1_to_5000")
    out = tmp_path / "out.jsonl"
    cfg = pipeline_config(mariadb, tmp_path, f"snap-first{parallelism}{kind}", out, snapshot="initial",
                          snapshot_parallelism=parallelism, chunk_rows=700, include=[f"{DB}.{t}"],
                          flow={"read_batch_rows": 500, "max_rows_in_flight": 1000})
    store = FileCheckpointStore(cfg.pipeline_dir)
    assert run_pipeline(cfg, max_rows=0, interval=0.05)["error"] is None
    assert not out.exists() or not read_jsonl(out)
    kept = store.load()
    assert run_pipeline(cfg, max_rows=2000, interval=0.05)["error"] is None
    assert gone in [r["key"]["id"] for r in read_jsonl(out) if r["op"] == "read"]
    if kept is None:
        store.path.unlink()
    else:
        store.save(kept)
    execute(root, f"DELETE FROM {t} WHERE id = %s", args=(gone,))
    assert run_pipeline(cfg, until_caught_up=True, interval=0.05)["error"] is None

    rows = read_jsonl(out)
    of_gone = [r["op"] for r in rows if r["op"] != "ddl" and r["key"]["id"] == gone]
    assert of_gone[-1] == "delete", of_gone
    applied = apply_keyed(rows, t, ("id",), strict=False)
    table = Keyed(t, "int", 5000).rows(root)  # (keyed by id)
    assert diff(applied, table) == {"extra": 0, "missing": 0, "stale": 0}
    assert applied == table
    # what the store held: the snapshot begun, no row of it delivered
    snap = kept["source"]["snapshot"] if kept is not None else None
    assert snap is not None and kept["seq"] == 0 and snap["table"] is None and snap["tables_done"] == [], kept


def test_key_changes_across_ranges_read_on_either_side_of_them(mariadb: Any, root: Any, tmp_path: Path) -> None:
    """Rows moved from the first chunk's range (read before the move) to the last one's (read after it, by
    a worker started after both were killed: it opens a new consistent snapshot), and back the other way,
    each then updated: exactly once each, and the table as it is."""
    from dbus_ray.pipeline import NAMESPACE, actor_name, run_pipeline

    t = table_name("snap_move")
    n = 5000
    execute(root, f"CREATE TABLE {t} (id INT PRIMARY KEY, v INT)", f"INSERT INTO {t} SELECT seq, seq FROM seq_1_to_{n}")
    out = tmp_path / "out.jsonl"
    cfg = pipeline_config(mariadb, tmp_path, "snap-move", out, snapshot="initial", snapshot_parallelism=2,
                          chunk_rows=700, max_rows_per_second=700, include=[f"{DB}.{t}"],
                          flow={"read_batch_rows": 100, "max_rows_in_flight": 400})
    moves = {10: 6010, 20: 6020, 4960: -4960, 4970: -4970}  # low -> high, high -> low
    done: dict[str, Any] = {}
    errors: list[BaseException] = []

    def mover() -> None:
        # the first chunk (ids 1-700) is read and out; the last one (from 4901) is asked for only once the
        # fourth chunk is emitted (two per worker ahead), so after both workers were killed
        try:
            reader = wait_for(lambda: _actor(actor_name("snap-move", "reader"), NAMESPACE), what="the reader")
            workers = [wait_for(lambda i=i: _actor(actor_name("snap-move", "snapshot", str(i)), NAMESPACE),
                                what=f"worker {i}") for i in (0, 1)]
            pids = [ray.get(w.pid.remote(), timeout=30) for w in workers]
            wait_for(lambda: snapshot_rows(reader) >= 900, what="the first chunk out", every=0.02)
            conn = mariadb.root_connect(DB, autocommit=True)
            try:
                for old, new in moves.items():
                    execute(conn, f"UPDATE {t} SET id = {new} WHERE id = {old}",
                            f"UPDATE {t} SET v = v + 1000 WHERE id = {new}")
            finally:
                conn.close()
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
            done["rows"] = snapshot_rows(reader)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    thread = threading.Thread(target=mover)
    thread.start()
    try:
        final = run_pipeline(cfg, until_caught_up=True, interval=0.05)
    finally:
        thread.join()
    assert not errors, errors
    assert final["error"] is None, final["error"]
    assert done["rows"] < 2000, done  # the moves and the kills before the last range was asked for
    assert final["snapshot"]["worker_restarts"] >= 1, final["snapshot"]
    rows = read_jsonl(out)
    reads = {r["key"]["id"]: r for r in rows if r["op"] == "read"}
    # the moved rows were read at their old keys in the first range, at their new keys in the last one
    assert {10, 20, 6010, 6020} <= reads.keys() and not {4960, 4970, -4960, -4970} & reads.keys()
    applied = apply_keyed(rows, t, ("id",), strict=True)
    table = Keyed(t, "int", n).rows(root)
    assert diff(applied, table) == {"extra": 0, "missing": 0, "stale": 0}
    assert applied == table
    assert table[(-4960,)]["v"] == 5960 and table[(6010,)]["v"] == 1010  # (checked against the server itself)


def test_a_reader_killed_under_run_pipeline_is_one_line(mariadb: Any, root: Any, tmp_path: Path) -> None:
    from dbus_ray.errors import DbusError
    from dbus_ray.pipeline import actor_name, run_pipeline

    t = table_name("snap_dead")
    execute(root, f"CREATE TABLE {t} (id INT PRIMARY KEY, v INT)",
            f"INSERT INTO {t} SELECT seq, seq FROM seq_1_to_5000")
    out = tmp_path / "out.jsonl"
    cfg = pipeline_config(mariadb, tmp_path, "snap-dead", out, snapshot="initial",
                          max_rows_per_second=500, include=[f"{DB}.{t}"])
    errors: list[BaseException] = []

    def killer() -> None:  # once rows are delivered: the pipeline has started (a kill while it starts is
        try:               # "cannot start: its reader died: ...")
            wait_for(lambda: out.exists() and out.stat().st_size > 0, what="the first rows delivered")
            os.kill(actor_pid(actor_name("snap-dead", "reader")), signal.SIGKILL)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    thread = threading.Thread(target=killer)
    thread.start()
    try:
        with pytest.raises(DbusError) as err:
            run_pipeline(cfg, until_caught_up=True, interval=0.05)
    finally:
        thread.join()
    assert not errors, errors
    text = str(err.value)
    assert text.startswith("pipeline snap-dead stopped: its reader died (") and "\n" not in text, text
    assert live_actor_pid(actor_name("snap-dead", "writer", "file")) is None  # the rest was removed


def _actor(name: str, namespace: str) -> Any:
    try:
        return ray.get_actor(name, namespace=namespace)
    except ValueError:
        time.sleep(0.05)
        return None
