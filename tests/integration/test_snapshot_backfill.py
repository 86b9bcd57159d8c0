"""On-demand backfill (`dbus snapshot PIPELINE TABLE... --where SQL`) of a streaming pipeline the
controller runs against a real MariaDB: the CLI asks the controller, which asks the reader; the table's
rows arrive as `op: read` between start and end markers, interleaved with the stream, and each key's
read is followed by exactly the changes after it (writes race the backfill)."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import ray

from tests.support.changes import read_jsonl
from tests.support.helpers import execute, table_name, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_session")]

DB = "dbus_test"


def test_backfill_while_streaming(controller: Any, mariadb: Any, root: Any, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from dbus_ray.cli import app

    t, other = table_name("snap_bf"), table_name("snap_bf_other")
    execute(root, f"CREATE TABLE {t} (id INT PRIMARY KEY, v INT, s VARCHAR(20))",
            f"INSERT INTO {t} SELECT seq, 0, 'old' FROM seq_1_to_2000",
            f"CREATE TABLE {other} (id INT PRIMARY KEY)")
    out = tmp_path / "bf.jsonl"
    spec = {"name": "snap-bf", "data_dir": str(tmp_path / "data"),
            "source": {"type": "mysql", "dsn": f"mysql://{mariadb.user}:${{PW}}@127.0.0.1:{mariadb.port}",
                       "include": [f"{DB}.{t}"], "chunk_rows": 100, "max_rows_per_second": 1000},
            "sinks": [{"name": "file", "type": "jsonl", "path": str(out), "fsync": False}],
            "flow": {"read_batch_rows": 200, "max_rows_in_flight": 1000}}
    ray.get(controller.submit.remote(spec, {"PW": mariadb.password}))
    wait_for(lambda: ray.get(controller.get.remote("snap-bf"))["state"] == "running", what="running")
    execute(root, f"UPDATE {t} SET v = 1 WHERE id = 5")
    wait_for(lambda: len(read_jsonl(out)) == 1, what="the streamed update")
    runner = CliRunner()
    # mistakes: one line naming what is wrong
    for args, message in (
        ([f"{DB}.nope"], f"error: backfill: no table {DB}.nope"),
        ([f"{DB}.{other}"], f"error: backfill: table {DB}.{other} is not selected by the pipeline"),
        ([f"{DB}.{t}", "--where", "nope ="], f"error: backfill of {DB}.{t}: bad --where 'nope ='"),
    ):
        result = runner.invoke(app, ["snapshot", "snap-bf", *args])
        assert result.exit_code == 2 and result.output.startswith(message), result.output
        assert len(result.output.strip().splitlines()) == 1
    assert runner.invoke(app, ["snapshot", "nope", f"{DB}.{t}"]).output.startswith("error: no pipeline named")

    stop = threading.Event()
    commits: list[float] = []

    def writer() -> None:  # updates and deletes keys on both sides of the backfill's progress
        conn = mariadb.root_connect(DB, autocommit=True)
        rnd = random.Random(3)
        try:
            with conn.cursor() as cur:
                while not stop.is_set():
                    k = rnd.randrange(1, 2001)
                    if rnd.random() < 0.8:
                        cur.execute(f"UPDATE {t} SET v = v + 1, s = 'new' WHERE id = %s", (k,))
                    else:
                        cur.execute(f"DELETE FROM {t} WHERE id = %s", (k,))
                    commits.append(time.time())
                    time.sleep(0.005)
        finally:
            conn.close()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        result = runner.invoke(app, ["snapshot", "snap-bf", f"{DB}.{t}", "--where", "id <= 1500"])
        assert result.exit_code == 0, result.output
        assert result.output.startswith(f"pipeline snap-bf: backfill of {DB}.{t} asked for (where id <= 1500)")
        end = f'"snapshot":"end","table":"{DB}.{t}"'
        wait_for(lambda: end in out.read_text(), what="the backfill's end marker", timeout=60)
        written = len(commits)
        wait_for(lambda: len(commits) >= written + 50, what="writes after the backfill ended")
    finally:
        stop.set()
        thread.join()
    wait_for(lambda: (s := ray.get(controller.get.remote("snap-bf"))["status"]).get("caught_up")
             and s["rows_read"] == len(read_jsonl(out)), what="caught up", timeout=60)
    rows = read_jsonl(out)
    markers = [i for i, r in enumerate(rows) if r["op"] == "ddl"]
    assert [rows[i]["after"]["snapshot"] for i in markers] == ["start", "end"]
    start, stop_at = markers
    reads = [r for r in rows if r["op"] == "read"]
    assert all(start < rows.index(r) < stop_at for r in reads[:1] + reads[-1:])
    assert rows[stop_at]["after"]["rows"] == len(reads)
    ids = [r["key"]["id"] for r in reads]
    assert ids == sorted(set(ids)) and ids[-1] <= 1500 and len(ids) > 1000
    # interleaved: stream changes arrived between the markers too
    assert any(r["op"] in ("update", "delete") for r in rows[start:stop_at])
    # per key: its read, then exactly the changes after it (strictly: each before image is the current row)
    state: dict[int, dict[str, Any]] = {}
    for r in rows[start:]:
        k = r["key"].get("id")
        if r["op"] == "read":
            state[k] = r["after"]
        elif r["op"] in ("update", "delete") and k in state:
            assert r["before"] == state[k], (r, state[k])
            if r["op"] == "update":
                state[k] = r["after"]
            else:
                del state[k]
    with root.cursor() as cur:
        cur.execute(f"SELECT id, v, s FROM {t} WHERE id <= 1500 ORDER BY id")
        want = {i: {"id": i, "v": v, "s": s} for i, v, s in cur.fetchall()}
    assert state == want
    progress = ray.get(controller.get.remote("snap-bf"))["status"]["snapshot"]
    assert progress["kind"] == "backfill" and progress["state"] == "done" and progress["rows"] == len(reads)
