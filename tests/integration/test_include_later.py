"""Tables added to a running pipeline's `include` (the spec re-submitted to the controller, which restarts
the pipeline from its checkpoint) are snapshotted while the stream goes on from the checkpoint: their
pre-existing rows arrive as `op: read` between markers, the other tables keep streaming with no row lost or
repeated, and the checkpoints record the include/exclude they were taken under."""

from __future__ import annotations

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


def test_table_added_to_include_is_snapshotted_while_streaming(
    controller: Any, mariadb: Any, root: Any, tmp_path: Path
) -> None:
    a, b = table_name("incl_a"), table_name("incl_b")
    execute(root, f"CREATE TABLE {a} (id INT PRIMARY KEY, v VARCHAR(10))",
            f"INSERT INTO {a} VALUES (1, 'a1'), (2, 'a2'), (3, 'a3')",
            f"CREATE TABLE {b} (id INT PRIMARY KEY, v VARCHAR(10))",
            f"INSERT INTO {b} SELECT seq, 'old' FROM seq_1_to_50")
    out = tmp_path / "out.jsonl"
    spec: dict[str, Any] = {
        "name": "incl-later", "data_dir": str(tmp_path / "data"),
        "source": {"type": "mysql", "dsn": f"mysql://{mariadb.user}:${{PW}}@127.0.0.1:{mariadb.port}",
                   "include": [f"{DB}.{a}"], "snapshot": "initial", "chunk_rows": 10, "max_rows_per_second": 100},
        "sinks": [{"name": "file", "type": "jsonl", "path": str(out), "fsync": False}],
        "flow": {"read_batch_rows": 100},
    }
    secrets = {"PW": mariadb.password}
    stop = threading.Event()
    written: list[int] = []

    def wait(check: Any, what: str) -> None:
        try:
            wait_for(check, timeout=120, what=what)
        except AssertionError as exc:  # say where the pipeline is
            got = {r["key"].get("id") for r in read_jsonl(out) if r["op"] == "insert"}
            record = ray.get(controller.get.remote("incl-later"))
            raise AssertionError(f"{exc}: pipeline {record.get('state')} ({record.get('error')}), {len(written)} rows "
                                 f"written to A, missing {sorted(set(written) - got)[:10]}") from None

    ray.get(controller.submit.remote(spec, secrets))
    end_a = f'"snapshot":"end","table":"{DB}.{a}"'
    wait(lambda: end_a in (out.read_text() if out.exists() else ""), "table A's initial snapshot")

    def writer() -> None:  # A keeps changing before, during and after the update
        conn = mariadb.root_connect(DB, autocommit=True)
        try:
            with conn.cursor() as cur:
                k = 100
                while not stop.is_set():
                    cur.execute(f"INSERT INTO {a} VALUES (%s, 'new')", (k,))
                    written.append(k)
                    k += 1
                    time.sleep(0.01)
        finally:
            conn.close()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        wait(lambda: sum(r["op"] == "insert" for r in read_jsonl(out)) >= 20, "A streaming")
        checkpoint = ray.get(controller.checkpoint.remote("incl-later"))
        assert checkpoint["source"]["selected"] == {"include": [f"{DB}.{a}"], "exclude": []}
        spec["source"]["include"] = [f"{DB}.{a}", f"{DB}.{b}"]
        ray.get(controller.submit.remote(spec, secrets))  # a new version: restarts from the checkpoint
        end_b = f'"snapshot":"end","table":"{DB}.{b}"'
        wait(lambda: end_b in out.read_text(), "table B's snapshot")
        after_b = len(written) + 20
        wait(lambda: sum(r["op"] == "insert" for r in read_jsonl(out)) >= after_b, "A streaming after B's")
    finally:
        stop.set()
        thread.join()
    wait(lambda: {r["key"]["id"] for r in read_jsonl(out) if r["op"] == "insert"} >= set(written),
         "every row written to A")
    ray.get(controller.pause.remote("incl-later"))  # stops it with a final checkpoint
    wait(lambda: ray.get(controller.get.remote("incl-later"))["state"] == "paused", "paused")
    checkpoint = ray.get(controller.checkpoint.remote("incl-later"))
    assert checkpoint["source"]["selected"] == {"include": [f"{DB}.{a}", f"{DB}.{b}"], "exclude": []}

    rows = read_jsonl(out)
    inserts = [r["key"]["id"] for r in rows if r["op"] == "insert"]
    assert sorted(inserts) == written  # A: no row lost or repeated across the update
    assert sorted(r["key"]["id"] for r in rows if r["op"] == "read" and r["table"] == a) == [1, 2, 3]  # not again
    markers = [(r["table"], r["after"]["snapshot"], i) for i, r in enumerate(rows) if r["op"] == "ddl"]
    assert [m[:2] for m in markers] == [(a, "start"), (a, "end"), (b, "start"), (b, "end")]
    start, end = markers[2][2], markers[3][2]
    reads = [r for r in rows if r["op"] == "read" and r["table"] == b]
    assert [r["key"]["id"] for r in reads] == list(range(1, 51))
    assert all(start < rows.index(r) < end for r in reads) and rows[end]["after"]["rows"] == 50
    assert any(r["table"] == a and r["op"] == "insert" for r in rows[start:end])  # A streamed meanwhile


def test_checkpoints_keep_the_old_include_until_the_new_tables_are_read(mariadb: Any, root: Any) -> None:
    """In the source: a checkpoint taken before the new table's snapshot ended still names the old include,
    so a restart from it reads the table again; `snapshot: never` records and reads nothing."""
    from dbus_ray.mysql.source import MysqlOptions, MysqlSource
    from tests.support.helpers import drain, position

    a, b = table_name("incl_src_a"), table_name("incl_src_b")
    execute(root, f"CREATE TABLE {a} (id INT PRIMARY KEY)", f"CREATE TABLE {b} (id INT PRIMARY KEY)",
            f"INSERT INTO {b} SELECT seq FROM seq_1_to_30")
    file, offset = position(root).split(":")
    old = {"include": [f"{DB}.{a}"], "exclude": []}
    new = {"include": [f"{DB}.{a}", f"{DB}.{b}"], "exclude": []}
    checkpoint = {"file": file, "offset": int(offset), "skip": 0, "gtid": None, "selected": old}

    def source(snapshot: str) -> MysqlSource:
        return MysqlSource("incl-src", MysqlOptions(dsn=mariadb.dsn, server_id=7403, include=new["include"],
                                                    snapshot=snapshot, chunk_rows=10))

    def reads(batches: list[Any]) -> list[int]:
        return [c.key["id"] for bt in batches for c in bt.changes() if c.op == "read"]

    src = source("when_needed")
    src.open(checkpoint)
    try:
        first = src.poll(5, 1)
        assert first is not None and [c.after["snapshot"] for c in first.changes()] == ["start"]
        assert first.checkpoint["selected"] == old  # B not read yet
        batches = drain(src, max_rows=5)
        assert reads(batches) == list(range(1, 31))
        assert src.checkpoint()["selected"] == new
    finally:
        src.close()
    src = source("when_needed")  # restarted from the checkpoint taken after B's start marker
    src.open(first.checkpoint)
    try:
        assert reads(drain(src)) == list(range(1, 31))
    finally:
        src.close()
    src = source("never")
    src.open(checkpoint)
    try:
        assert reads(drain(src)) == [] and "selected" not in src.checkpoint()
    finally:
        src.close()
