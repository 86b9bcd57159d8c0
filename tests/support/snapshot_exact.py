"""Helpers of the snapshot exactness tests (a crash mid-snapshot, key changes): a table keyed by an integer
or by two integer columns, a writer that updates, deletes, inserts and moves rows to new keys (below the
lowest and above the highest, so into ranges read earlier and later), the output applied in order by key
(strictly or at least once), the table as SELECT returns it, and a pipeline run ended by a kill -9 of its
reader."""

from __future__ import annotations

import datetime as dt
import os
import random
import signal
import threading
import time
from pathlib import Path
from typing import Any

from tests.support.changes import select_json
from tests.support.helpers import actor_pid, execute, wait_for

DB = "dbus_test"


class Keyed:
    """A table of `n` rows keyed by `id` (kind "int"), by (a, b) (kind "composite") or by (a VARCHAR in
    utf8mb4_general_ci, b DATETIME(6)) (kind "text": the server's order of the text is not Python's, `K...`
    and `k...` alternate, and the decoder writes a DATETIME without a zero fraction); row number s is key
    s, (s // 10, s % 10), or (`k`/`K` + s // 10, 2020-01-01 + s % 10 seconds + (s % 3) * 7 us)."""

    def __init__(self, name: str, kind: str, n: int) -> None:
        self.name, self.kind, self.n = name, kind, n
        self.cols = ("id",) if kind == "int" else ("a", "b")

    def key(self, s: int) -> tuple[Any, ...]:
        if self.kind == "int":
            return (s,)
        if self.kind == "composite":
            return (s // 10, s % 10)
        at = dt.datetime(2020, 1, 1) + dt.timedelta(seconds=s % 10, microseconds=s % 3 * 7)
        return (f"{'Kk'[s % 2]}{s // 10:08d}", at)

    @property
    def where(self) -> str:
        return " AND ".join(f"{c} = %s" for c in self.cols)

    def create(self, conn: Any) -> None:
        cols = ", ".join(f"{c} INT NOT NULL" for c in self.cols)
        keys = "seq" if self.kind == "int" else "seq DIV 10, seq MOD 10"
        if self.kind == "text":
            cols = "a VARCHAR(12) COLLATE utf8mb4_general_ci NOT NULL, b DATETIME(6) NOT NULL"
            keys = ("CONCAT(IF(seq % 2, 'k', 'K'), LPAD(seq DIV 10, 8, '0')), "
                    "TIMESTAMP('2020-01-01') + INTERVAL seq % 10 SECOND + INTERVAL seq % 3 * 7 MICROSECOND")
        execute(conn, f"CREATE TABLE {self.name} ({cols}, v INT, s VARCHAR(40), PRIMARY KEY ({', '.join(self.cols)}))",
                f"INSERT INTO {self.name} SELECT {keys}, seq % 97, CONCAT('row-', seq) FROM seq_1_to_{self.n}")

    def rows(self, conn: Any) -> dict[tuple[Any, ...], dict[str, Any]]:
        """The table as SELECT returns it, by key."""
        return {tuple(r[c] for c in self.cols): r for r in select_json(conn, self.name, ", ".join(self.cols))}


def apply_keyed(rows: list[dict[str, Any]], table: str, cols: tuple[str, ...], strict: bool) -> dict[tuple, dict]:
    """Key -> row after applying the changes of `table` in order: a read or insert sets its key's row, an update
    removes its before key and sets its after key, a delete removes its key. `strict` fails on a duplicate or
    lost change (a read or insert of a present key, an update or delete whose before image is not the row)."""
    state: dict[tuple, dict] = {}
    for r in rows:
        if r["table"] != table or r["op"] == "ddl":
            continue
        if r["op"] in ("update", "delete"):
            kb = tuple(r["before"][c] for c in cols)
            if strict:
                assert state.get(kb) == r["before"], f"{r['op']} of {kb} at {r['pos']}: before image != {state.get(kb)}"
            state.pop(kb, None)
        if r["op"] in ("read", "insert", "update"):
            ka = tuple(r["after"][c] for c in cols)
            if strict:
                assert ka not in state, f"{r['op']} of {ka} at {r['pos']}: the key is already there, {state[ka]}"
            state[ka] = r["after"]
    return state


def diff(applied: dict[tuple, dict], table: dict[tuple, dict]) -> dict[str, int]:
    """Rows the applied output has that the table has not (extra), lacks (missing), or has otherwise (stale)."""
    return {"extra": len(applied.keys() - table.keys()), "missing": len(table.keys() - applied.keys()),
            "stale": sum(applied[k] != table[k] for k in applied.keys() & table.keys())}


def writer_thread(mariadb: Any, t: Keyed, seed: int, stop: threading.Event, ops: list[str],
                  errors: list[BaseException], pause: float = 0.002) -> threading.Thread:
    """Until `stop`: updates (60%), deletes (15%), inserts of new keys (10%), moves of a row to a new key
    below every key or above every key (15%), on random rows."""

    def run() -> None:
        conn = mariadb.root_connect(DB, autocommit=True)
        rnd = random.Random(seed)
        fresh = 0
        try:
            with conn.cursor() as cur:
                while not stop.is_set():
                    k = t.key(rnd.randrange(1, t.n + 1))
                    what = rnd.random()
                    fresh += 1
                    new = t.key(-fresh if rnd.random() < 0.5 else t.n + fresh)
                    if what < 0.6:
                        cur.execute(f"UPDATE {t.name} SET v = v + 1, s = 'upd' WHERE {t.where}", k)
                        ops.append("update")
                    elif what < 0.75:
                        cur.execute(f"DELETE FROM {t.name} WHERE {t.where}", k)
                        ops.append("delete")
                    elif what < 0.85:
                        cur.execute(f"INSERT INTO {t.name} ({', '.join(t.cols)}, v, s) VALUES "
                                    f"({', '.join(['%s'] * len(new))}, 1, 'new')", new)
                        ops.append("insert")
                    else:
                        sets = ", ".join(f"{c} = %s" for c in t.cols)
                        cur.execute(f"UPDATE {t.name} SET {sets}, s = 'moved' WHERE {t.where}", new + k)
                        ops.append("move")
                    time.sleep(pause)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)
        finally:
            conn.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def snapshot_rows(reader: Any) -> int:
    import ray

    return int((ray.get(reader.status.remote(), timeout=30).get("snapshot") or {}).get("rows", 0))


def run_until_reader_killed(cfg: Any, rows: int) -> int:
    """Start the pipeline, kill -9 its reader once its snapshot has emitted `rows` rows (the store holds at
    least the snapshot's start, saved before its first row), then remove its other actors (what they
    delivered meanwhile stays delivered); the rows emitted when it was killed."""
    from dbus_ray.pipeline import Pipeline, actor_name

    saved = Path(cfg.pipeline_dir) / "checkpoint.json"
    pipeline = Pipeline(cfg, None)
    pipeline.start()
    try:
        pid = actor_pid(actor_name(cfg.name, "reader"))
        got = wait_for(lambda: (n := snapshot_rows(pipeline.reader)) >= rows and n, timeout=120,
                       what=f"{rows} snapshot rows", every=0.01)
        assert saved.exists(), "no checkpoint saved before the snapshot's first row"
        os.kill(pid, signal.SIGKILL)
    finally:
        pipeline.kill()
    return got


def kill_workers_when(pipeline: str, n: int, rows: int, errors: list[BaseException]) -> threading.Thread:
    """A thread that kill -9s the `n` snapshot workers of `pipeline` once its snapshot has emitted `rows`
    rows (the reader replaces them: their replacements read in newer snapshots)."""
    import ray

    from dbus_ray.pipeline import NAMESPACE, actor_name

    def actor(name: str) -> Any:
        try:
            return ray.get_actor(name, namespace=NAMESPACE)
        except ValueError:
            return None

    def run() -> None:
        try:
            reader = wait_for(lambda: actor(actor_name(pipeline, "reader")), what="the reader", every=0.02)
            workers = [wait_for(lambda i=i: actor(actor_name(pipeline, "snapshot", str(i))), what=f"worker {i}",
                                every=0.02) for i in range(n)]
            pids = [ray.get(w.pid.remote(), timeout=30) for w in workers]
            wait_for(lambda: snapshot_rows(reader) >= rows, timeout=120, what=f"{rows} snapshot rows", every=0.01)
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread
