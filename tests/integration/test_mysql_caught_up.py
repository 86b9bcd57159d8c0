"""`dbus run --until-caught-up` (`run_pipeline(until_caught_up=True)`) against a real MariaDB with a writer
that never pauses: it ends once every row committed before the call is delivered (the source reached the
server's binlog position seen when it opened), not at a moment with nothing in flight, which steady writes
may never give."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from dbus_ray.config import parse_config
from tests.support.changes import read_jsonl
from tests.support.helpers import execute, position, table_name, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_session")]

DB = "dbus_test"


@pytest.mark.parametrize("mode", ["stream", "parallel_snapshot"])
def test_until_caught_up_ends_under_steady_writes(mariadb: Any, root: Any, tmp_path: Path, mode: str) -> None:
    """From a binlog position behind the writes, or through a parallel snapshot of 20,000 rows (the stream
    that follows drops what the chunks hold until it passed every chunk's position, mid-transaction too)."""
    from dbus_ray.pipeline import run_pipeline

    t = table_name("steady")
    execute(root, f"CREATE TABLE {t} (id INT AUTO_INCREMENT PRIMARY KEY, v INT)")
    if mode == "stream":
        options: dict[str, Any] = {"start": position(root)}
    else:
        execute(root, f"INSERT INTO {t} SELECT seq, seq FROM seq_1_to_20000")
        options = {"snapshot": "initial", "snapshot_parallelism": 2, "chunk_rows": 2000}
    committed: list[int] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def writer() -> None:
        try:
            conn = mariadb.root_connect(DB, autocommit=True)
            try:
                with conn.cursor() as cur:
                    while not stop.is_set():
                        cur.execute("BEGIN")  # five-row transactions, about 200 rows a second
                        for _ in range(5):
                            cur.execute(f"INSERT INTO {t} (v) VALUES (%s)", (len(committed),))
                            committed.append(int(cur.lastrowid))
                        cur.execute("COMMIT")
                        time.sleep(0.025)
            finally:
                conn.close()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    out = tmp_path / "out.jsonl"
    raw = {
        "name": f"steady-{mode}".replace("_", "-"),
        "source": {"type": "mysql", "dsn": "mysql://dbus:${PW}@127.0.0.1:" + str(mariadb.port),
                   "include": [f"{DB}.{t}"], **options},
        "sinks": [{"name": "file", "type": "jsonl", "path": str(out)}],
        # the batcher holds rows up to a second: with rows coming every 5 ms, some are nearly always in flight
        "flow": {"read_batch_rows": 64, "max_rows_in_flight": 100_000, "linger_ms": 1000},
        "data_dir": str(tmp_path / "data"),
    }
    cfg = parse_config(raw, "steady.yaml", {"PW": mariadb.password})
    thread = threading.Thread(target=writer)
    thread.start()
    try:
        wait_for(lambda: len(committed) >= 300 or errors, what="300 rows written")
        with root.cursor() as cur:
            cur.execute(f"SELECT id FROM {t}")
            before = {int(r[0]) for r in cur.fetchall()}
        written_before = len(committed)
        t0 = time.monotonic()
        final = run_pipeline(cfg, until_caught_up=True, interval=0.05)
        elapsed = time.monotonic() - t0
        still_writing = thread.is_alive() and not errors
        written_during = len(committed) - written_before
    finally:
        stop.set()
        thread.join()
    assert not errors, errors
    assert final["error"] is None and final["state"] == "stopped", final
    assert still_writing and written_during > 100, written_during  # the writes went on all along
    assert elapsed < 60, elapsed
    rows = read_jsonl(out)
    inserted = [r["after"]["id"] for r in rows if r["op"] == "insert"]
    ids = [r["after"]["id"] for r in rows if r["op"] in ("read", "insert")]
    assert len(ids) == len(set(ids)) and inserted == sorted(inserted)
    assert before <= set(ids), sorted(before - set(ids))[:10]
    print(f"until-caught-up under steady writes ({mode}): {len(before)} rows before the call, {len(ids)} "
          f"delivered, {written_during} written meanwhile, {elapsed:.1f} s")
