"""Helpers the tests share: waiting for a state, live actor pids and killing an actor at a chosen moment,
unique table names, SQL (and one value's query) on a pymysql connection, the binlog position, draining a
source in process, a spy on the binlog decoder, the pipeline metrics at Ray's Prometheus endpoint and a
small tmpfs that fills up."""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


def live_actor_pid(name: str) -> int | None:
    """The process id of the live actor named `name` (any namespace, from the GCS), None when none is."""
    from ray._private import state

    for info in state.actors().values():
        if info.get("Name") == name and info.get("State") == "ALIVE" and info.get("Pid"):
            return int(info["Pid"])
    return None


def actor_pid(name: str, timeout: float = 30.0) -> int:
    """The process id of the live actor named `name`, waiting up to `timeout` seconds for one."""
    return wait_for(lambda: live_actor_pid(name), timeout=timeout, what=f"a live actor {name}")


def wait_for(check: Callable[[], Any], timeout: float = 60.0, what: str = "condition", every: float = 0.2) -> Any:
    """Call `check` until it returns something true (returned), or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def table_name(prefix: str) -> str:
    """A table name no other test uses."""
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def execute(conn: Any, *statements: str, args: Any = None) -> None:
    """Run statements on a pymysql connection."""
    with conn.cursor() as cur:
        for sql in statements:
            cur.execute(sql, args)


def position(conn: Any) -> str:
    """The server's current binlog position as `file:offset` (a `start:` value)."""
    with conn.cursor() as cur:
        cur.execute("SHOW MASTER STATUS")
        file, pos = cur.fetchone()[:2]
    return f"{file}:{pos}"


def scalar(conn: Any, sql: str, args: Any = None) -> Any:
    """The first column of the first row of one query on a pymysql connection."""
    with conn.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchone()[0]


def poll_once(source: Any, checkpoint: dict[str, Any] | None, max_rows: int) -> Any:
    """Open a new source at `checkpoint`, poll it until a batch comes or it is caught up, close it: the batch
    (None when caught up without one). Called once per batch, it resumes at every checkpoint."""
    source.open(checkpoint)
    try:
        for _ in range(20):
            batch = source.poll(max_rows, 1)
            if batch is not None or source.caught_up():
                return batch
        return None
    finally:
        source.close()


def drain(source: Any, max_rows: int = 1000, limit: int = 5000) -> list[Any]:
    """Poll a source (in process, no Ray) until it is caught up; the batches it returned."""
    batches: list[Any] = []
    for _ in range(limit):
        batch = source.poll(max_rows, len(batches) + 1)
        if batch is None:
            if source.caught_up():
                return batches
            continue
        batches.append(batch)
    raise AssertionError("source never caught up")


def kill_when(actor: str | int, check: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    """SIGKILL the process of `actor` (an actor name or a pid) at a moment `check()` is true: freeze it
    (SIGSTOP), call `check`, kill it if so, else let it go on (SIGCONT) and look again a moment later.
    Returns what `check` said."""
    pid = actor if isinstance(actor, int) else actor_pid(actor)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        os.kill(pid, signal.SIGSTOP)
        try:
            found = check()
        except BaseException:
            os.kill(pid, signal.SIGCONT)
            raise
        if found:
            os.kill(pid, signal.SIGKILL)  # a stopped process dies at once
            return found
        os.kill(pid, signal.SIGCONT)
        time.sleep(0.005)
    raise AssertionError(f"{actor}: no moment with {what} within {timeout} s")


def metric_samples(prefix: str, pipeline: str) -> list[tuple[str, dict[str, str], float]]:
    """(name, labels, value) of each sample named `prefix...` of `pipeline` at the local Ray node's Prometheus
    endpoint (the metrics the pipeline's actors export)."""
    import urllib.request

    import ray

    port = ray._private.worker.global_worker.node.metrics_export_port
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    samples = []
    for line in text.splitlines():
        if line.startswith(prefix) and f'pipeline="{pipeline}"' in line:
            name, rest = line.split("{", 1)
            labels = dict(part.split("=", 1) for part in rest.split("}", 1)[0].split(","))
            samples.append((name, {k: v.strip('"') for k, v in labels.items()}, float(line.rsplit(" ", 1)[1])))
    return samples


def decoded_tables(monkeypatch: Any) -> list[str]:
    """The tables whose rows events the binlog decoder decodes from now on (a spy on `Layout.read_rows`),
    filled in as they are decoded."""
    from dbus_ray.mysql.decoder import Layout

    decoded: list[str] = []
    original = Layout.read_rows

    def spy(self: Any, *args: Any) -> Any:
        decoded.append(self.table)
        return original(self, *args)

    monkeypatch.setattr(Layout, "read_rows", spy)
    return decoded


@contextlib.contextmanager
def small_tmpfs(mount: Path, size: int | str) -> Iterator[Path]:
    """A tmpfs of `size` bytes (or "128k") mounted at the directory `mount` for the block: a disk that fills
    up. Mounting needs root (the tests' sandbox runs as root); a failure to mount fails the test."""
    import subprocess

    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    assert done.returncode == 0, f"cannot mount a tmpfs at {mount} (needs root): {done.stderr.strip()}"
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def own_mariadb() -> tuple[Any, Any]:
    """`mariadb` and `root` fixtures of a module's own MariaDB, shadowing the session's (`mariadb, root =
    own_mariadb()` in the module): for tests that leave in the binlog what would stop another test's source
    reading the shared server from its start (statement-logged rows, bytes without a character)."""
    import pytest

    from dbus_ray.devstack import MariaDB

    @pytest.fixture(scope="module", name="mariadb")
    def server() -> Iterator[Any]:
        s = MariaDB().start()
        try:
            yield s
        finally:
            s.stop()

    @pytest.fixture(name="root")
    def connection(mariadb: Any) -> Iterator[Any]:
        conn = mariadb.root_connect("dbus_test")
        with conn.cursor() as cur:
            cur.execute("SET time_zone = '+00:00'")
        yield conn
        conn.close()

    return server, connection
