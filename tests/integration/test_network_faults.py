"""Network faults between the reader and MariaDB, through a TCP proxy the test controls
(`tests.support.netfault.FaultProxy`): while a writer inserts, updates and deletes rows, the link gets latency,
then connection resets, then a short black hole (the connection survives it), then one longer than the
reader's read timeout (the reader drops the silent connection and reconnects), then a bandwidth cap. The
pipeline slows, reconnects (counted as binlog dump requests through the proxy), and in the end every row
change written is in the sink: none lost, no change nobody wrote, duplicates (at-least-once) counted and
printed.

Packet loss proper (`tc qdisc ... netem loss`) is not tested: it needs the kernel's netem qdisc."""

from __future__ import annotations

import contextlib
import json
import random
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dbus_ray.config import parse_config
from dbus_ray.devstack import MariaDB
from dbus_ray.pipeline import Pipeline
from tests.support.helpers import execute, position, table_name, wait_for
from tests.support.netfault import FaultProxy

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_session")]

DB = "dbus_test"
KEYS = 100


@pytest.fixture()
def proxy(mariadb: MariaDB) -> Iterator[FaultProxy]:
    with FaultProxy(mariadb.host, mariadb.port, seed=8) as p:
        yield p


class Writer(threading.Thread):
    """Transactions of 1-4 inserts, updates and deletes over KEYS keys, every value unique, so each row
    change is identified by (op, id, value); `expected` holds them in commit order."""

    def __init__(self, server: MariaDB, table: str) -> None:
        super().__init__(daemon=True)
        self.server, self.table = server, table
        self.expected: list[tuple[str, int, int]] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            conn = self.server.root_connect(DB)
            cur = conn.cursor()
            rng = random.Random(8)
            live: dict[int, int] = {}
            value = 0
            while not self.stop.is_set():
                cur.execute("BEGIN")
                done = []
                for _ in range(rng.randint(1, 4)):
                    value += 1
                    key = rng.randint(1, KEYS)
                    if key not in live:
                        cur.execute(f"INSERT INTO {self.table} VALUES (%s, %s)", (key, value))
                        done.append(("insert", key, value))
                        live[key] = value
                    elif rng.random() < 0.7:
                        cur.execute(f"UPDATE {self.table} SET v = %s WHERE id = %s", (value, key))
                        done.append(("update", key, value))
                        live[key] = value
                    else:
                        cur.execute(f"DELETE FROM {self.table} WHERE id = %s", (key,))
                        done.append(("delete", key, live.pop(key)))
                cur.execute("COMMIT")
                self.expected += done
                time.sleep(0.01)
            conn.close()
        except BaseException as exc:  # noqa: BLE001 - the test reports it
            self.error = exc


def read_jsonl(path: Path) -> list[tuple[str, int, int]]:
    got = []
    if path.exists():
        for line in path.read_text().splitlines():
            row = json.loads(line)
            image = row["after"] if row["op"] != "delete" else row["before"]
            got.append((row["op"], image["id"], image["v"]))
    return got


def test_latency_resets_black_hole_and_throttle_lose_nothing(
    mariadb: MariaDB, root: Any, proxy: FaultProxy, tmp_path: Path
) -> None:
    t = table_name("netfault")
    execute(root, f"CREATE TABLE {t} (id INT PRIMARY KEY, v BIGINT NOT NULL)")
    out = tmp_path / "out.jsonl"
    name = f"netfault-{uuid.uuid4().hex[:6]}"
    cfg = parse_config({
        "name": name,
        "data_dir": str(tmp_path / "data"),
        "source": {"type": "mysql", "dsn": proxy.dsn(mariadb.dsn), "start": position(root),
                   "include": [f"{DB}.{t}"]},
        "sinks": [{"name": "file", "type": "jsonl", "path": str(out), "fsync": False}],
    }, f"{name}.yaml", {})
    pipeline = Pipeline(cfg)
    pipeline.start()
    writer = Writer(mariadb, t)
    writer.start()
    report: list[str] = []
    max_lag = 0.0

    def status() -> dict[str, Any]:
        nonlocal max_lag
        s = pipeline.status()
        assert s["state"] == "running", s
        max_lag = max(max_lag, s["lag_seconds"])
        return s

    def delivered() -> int:
        return status()["rows_delivered"]

    def flows(seconds: float) -> int:
        """Rows delivered during `seconds` (status sampled every 0.2 s, which also records the lag)."""
        before = delivered()
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            status()
            time.sleep(0.2)
        return delivered() - before

    def dumps() -> int:
        return proxy.stats()["binlog_dumps"]

    try:
        wait_for(lambda: delivered() > 0, timeout=60, what="rows flowing through the proxy")
        assert dumps() == 1, proxy.stats()
        report.append(f"no fault, 2 s: {flows(2):>5} rows")

        proxy.set_latency(0.05, 0.2)
        n = flows(5)
        report.append(f"latency 50-200 ms/chunk, 5 s: {n:>5} rows, max lag {max_lag:.2f} s")
        assert n > 0
        proxy.clear()

        for i in range(3):
            before_dumps, before_rows = dumps(), delivered()
            started = time.monotonic()
            assert proxy.reset_all() >= 1
            wait_for(lambda b=before_dumps: dumps() > b, timeout=30, what=f"the reader to reconnect after reset {i}")
            wait_for(lambda b=before_rows: delivered() > b, timeout=30, what=f"rows after reset {i}")
            report.append(f"connection reset {i + 1}: reconnected and delivering in {time.monotonic() - started:.1f} s")
            time.sleep(0.5)

        before_dumps = dumps()
        proxy.blackhole()
        seen: list[tuple[int, int]] = []

        def drained() -> bool:  # every row read before the hole delivered, and no more read since the last look
            s = status()
            seen.append((s["rows_read"], s["rows_delivered"]))
            return len(seen) > 1 and seen[-1] == seen[-2] and seen[-1][0] == seen[-1][1]

        wait_for(drained, timeout=30, every=0.3, what="the rows read before the black hole delivered")
        stalled_at = delivered()
        time.sleep(3)  # the hole held open
        stalled = delivered() - stalled_at
        lag_in_hole = status()["lag_seconds"]
        proxy.blackhole(False)
        started = time.monotonic()
        wait_for(lambda: delivered() > stalled_at + stalled, timeout=30, what="rows after the black hole")
        report.append(f"black hole: {stalled} rows in its last 3 s, lag {lag_in_hole:.1f} s, flowing again "
                      f"{time.monotonic() - started:.1f} s after it lifted, reconnects {dumps() - before_dumps}")
        assert stalled == 0, f"{stalled} rows delivered through a black-holed link"
        assert lag_in_hole >= 2.5, f"lag {lag_in_hole:.1f} s after over 3 s without binlog"
        assert dumps() == before_dumps, "a black hole shorter than the read timeout needs no reconnect"

        # a black hole that outlasts the reader's read timeout (10 s; the server's heartbeat is 0.25 s): the
        # reader drops the silent connection and opens a new one, which completes once the hole closes
        before_dumps, before_connections = dumps(), proxy.stats()["connections"]
        proxy.blackhole()
        started = time.monotonic()
        wait_for(lambda: proxy.stats()["connections"] > before_connections, timeout=40,
                 what="the reader to drop the silent connection and open a new one")
        detected = time.monotonic() - started
        proxy.blackhole(False)
        stalled_at = delivered()
        wait_for(lambda: dumps() > before_dumps and delivered() > stalled_at, timeout=30,
                 what="rows through a new binlog connection after the long black hole")
        report.append(f"black hole until the read timeout: new connection after {detected:.1f} s, delivering "
                      f"{time.monotonic() - started:.1f} s after the hole began")

        proxy.set_bandwidth(20_000)
        time.sleep(0.5)  # a chunk already on its way when the cap was set
        moved = proxy.stats()["bytes_to_client"]
        n = flows(4)
        moved = proxy.stats()["bytes_to_client"] - moved
        lag_capped = status()["lag_seconds"]
        proxy.clear()
        report.append(f"bandwidth 20 kB/s, 4 s: {n:>5} rows, {moved / 4000:.1f} kB/s to the reader, "
                      f"lag {lag_capped:.1f} s")
        assert n > 0
        assert moved <= 4.5 * 20_000, f"{moved} bytes in 4 s through a 20 kB/s link"
    finally:
        writer.stop.set()
        writer.join(timeout=30)
        proxy.clear()
    assert writer.error is None, writer.error
    expected = writer.expected
    try:
        wait_for(lambda: (s := status())["caught_up"] and s["rows_in_flight"] == 0
                 and len(read_jsonl(out)) >= len(expected), timeout=60, what="the pipeline to catch up")
    finally:
        final = pipeline.stop()
    got = read_jsonl(out)
    missing = set(expected) - set(got)
    stats = proxy.stats()
    print(f"\nnetwork faults ({name}):\n  " + "\n  ".join(report))
    print(f"  row changes written {len(expected)}, in the sink {len(got)}, lost {len(missing)}, duplicated "
          f"{len(got) - len(set(got))}; proxy {stats}; final error {final['error']}")
    assert final["error"] is None, final["error"]
    assert not missing, f"{len(missing)} row changes lost, e.g. {sorted(missing)[:5]}"
    assert set(got) <= set(expected), "the sink holds row changes nobody wrote"
    assert stats["binlog_dumps"] >= 4 and stats["resets"] >= 3, stats


def test_proxy_latency_black_hole_fin_reset_and_refuse() -> None:
    """The proxy's own behaviour, against an echo server: latency keeps order, a black hole holds bytes and
    delivers them after, a server's FIN reaches the client, a reset is a RST to the client, refused
    connections are reset at once."""
    import socket

    server = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def echo() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            accepted.append(conn)

            def serve(c: socket.socket = conn) -> None:
                with contextlib.suppress(OSError):
                    while data := c.recv(65536):
                        c.sendall(data)

            threading.Thread(target=serve, daemon=True).start()

    threading.Thread(target=echo, daemon=True).start()

    def recv_exactly(sock: socket.socket, n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = sock.recv(n - len(out))
            assert chunk, f"connection closed after {len(out)} of {n} bytes"
            out += chunk
        return out

    try:
        with FaultProxy("127.0.0.1", server.getsockname()[1], seed=1) as proxy:
            client = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
            proxy.set_latency(0.1, 0.2)
            started = time.monotonic()
            for i in range(5):
                client.sendall(b"%d" % i)
            assert recv_exactly(client, 5) == b"01234"
            assert time.monotonic() - started >= 0.2  # both ways delayed
            proxy.clear()
            proxy.blackhole()
            client.sendall(b"held")
            client.settimeout(0.5)
            with pytest.raises(TimeoutError):
                client.recv(10)
            client.settimeout(5)
            proxy.blackhole(False)
            assert recv_exactly(client, 4) == b"held"
            wait_for(lambda: accepted, what="the echo server's connection")
            accepted[0].shutdown(socket.SHUT_RDWR)  # the server closes: the client sees the end of the stream
            assert client.recv(10) == b""
            client.close()
            client = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
            client.sendall(b"x")
            assert recv_exactly(client, 1) == b"x"
            assert proxy.reset_all() == 1
            with pytest.raises(ConnectionResetError):
                client.recv(10)
            proxy.refuse()
            with pytest.raises(ConnectionResetError):  # at connect or at the first read
                socket.create_connection(("127.0.0.1", proxy.port), timeout=5).recv(10)
            assert proxy.stats()["connections"] == 2 and proxy.stats()["refused"] == 1
    finally:
        server.close()
