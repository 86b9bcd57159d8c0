"""A poll of the `mysql` source hands committed rows on as soon as the server has sent nothing more, instead of
reading on until its time budget or the next heartbeat (commit -> Kafka latency under steady writes)."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from dbus_ray.mysql import streaming
from dbus_ray.mysql.source import MysqlOptions, MysqlSource
from tests.support.helpers import execute, position, table_name

pytestmark = pytest.mark.integration

DB = "dbus_test"


def test_poll_returns_a_commit_without_waiting_for_more(mariadb: Any, root: Any, monkeypatch: Any) -> None:
    # a poll holding rows would otherwise wait an hour for more events (budget, heartbeat, read timeout)
    monkeypatch.setattr(streaming, "POLL_BUDGET_SECONDS", 3600.0)
    monkeypatch.setattr(streaming, "HEARTBEAT_SECONDS", 3600.0)
    monkeypatch.setattr(streaming, "READ_TIMEOUT_SECONDS", 7200)
    table = table_name("poll_latency")
    execute(root, f"CREATE TABLE {DB}.{table} (id INT PRIMARY KEY, v VARCHAR(10))")
    start = position(root)
    execute(root, f"INSERT INTO {DB}.{table} VALUES (1, 'a'), (2, 'b')")
    execute(root, "COMMIT")
    src = MysqlSource("mysql-poll-latency", MysqlOptions(dsn=mariadb.dsn, server_id=7011, start=start,
                                                         include=[f"{DB}.{table}"]))
    src.open(None)
    got: list[Any] = []
    poll = threading.Thread(target=lambda: got.append(src.poll(1000, 1)), daemon=True)
    try:
        poll.start()
        poll.join(timeout=120)  # without the fix: blocked in the socket read for an hour
        assert got, "the poll did not return its committed rows while the server had nothing more to send"
        batch = got[0]
        assert batch is not None
        assert [(c.table, json.loads(c.to_json())["after"]["id"]) for c in batch.changes()] == [(table, 1), (table, 2)]
    finally:
        src.close()  # also ends a poll still blocked in the read
