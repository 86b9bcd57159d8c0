"""`dbus_ray.debug.history` over archived binlog files (`files=`, read as the `binlog_files` source reads them):
the story of `test_debug_history` (inserts, a two-table transaction, a delete) copied out of the session's
MariaDB after FLUSH BINARY LOGS gives the same history and transactions as the server's binlog, row for row."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from dbus_ray.debug.history import history, transaction
from dbus_ray.errors import DbusError
from tests.integration.test_debug_history import story  # noqa: F401 - the fixture
from tests.support.helpers import execute


@pytest.fixture(scope="module")
def archive(mariadb: Any, story: dict[str, Any], tmp_path_factory: Any) -> str:  # noqa: F811
    """The binlog files from the story's first one to the last closed one, copied to a directory."""
    conn = mariadb.root_connect()
    execute(conn, "FLUSH BINARY LOGS")
    with conn.cursor() as cur:
        cur.execute("SHOW MASTER STATUS")
        now = cur.fetchone()[0]
    conn.close()
    base, first = story["since"].split(":")[0].rsplit(".", 1)
    to = tmp_path_factory.mktemp("history-files")
    for i in range(int(first), int(now.rsplit(".", 1)[1])):
        name = f"{base}.{i:06d}"
        shutil.copy(os.path.join(mariadb.datadir, name), to / name)
    return str(to)


def test_history_from_files_equals_the_servers(story: dict[str, Any], archive: str) -> None:  # noqa: F811
    dsn, orders = story["dsn"], story["orders"]
    server = history(dsn, orders, key={"id": 3}, since=story["since"]).to_pylist()
    files = history(None, orders, key={"id": 3}, since=story["since"], files=archive).to_pylist()
    assert [r["op"] for r in files] == ["insert", "update", "delete"]
    assert files == server  # values, gtid, txid, times, commit times, positions
    assert history(None, orders, key={"id": 3}, files=archive).to_pylist() == server  # from the first file
    gtid = story["update"][1]
    assert history(None, orders, key={"id": 3}, since=gtid, until=gtid, files=archive).to_pylist() == [server[1]]
    before = history(None, orders, key={"id": 3}, since=story["since"], until=story["txn_start"], files=archive)
    assert before.to_pylist() == [server[0]]
    every = history(None, orders, since=story["since"], until=story["until"], files=archive).to_pylist()
    assert every == history(dsn, orders, since=story["since"], until=story["until"]).to_pylist()
    assert len(every) == 5 + 1 + 1  # five inserts, the update, the delete
    later = history(None, orders, key={"id": 3}, since=server[2]["ts"], files=archive).to_pylist()
    assert [r["op"] for r in later] == ["delete"]


def test_transaction_from_files(story: dict[str, Any], archive: str) -> None:  # noqa: F811
    gtid = story["update"][1]
    server = transaction(story["dsn"], gtid).to_pylist()
    assert len(server) == 2
    assert transaction(None, gtid, files=archive).to_pylist() == server
    assert transaction(None, story["txn_start"], files=archive).to_pylist() == server


def test_bad_input_from_files_is_one_line(story: dict[str, Any], archive: str, tmp_path: Path) -> None:  # noqa: F811
    with pytest.raises(DbusError, match=r"^since nope.000001:4: binlog file nope.000001 is not among the files"):
        history(None, story["orders"], since="nope.000001:4", files=archive)
    with pytest.raises(DbusError, match=r"no binlog file matches"):
        history(None, story["orders"], files=str(tmp_path))
    with pytest.raises(DbusError, match=r"give a mysql:// DSN of the server, or files="):
        history(None, story["orders"])


def test_bus_history_and_transaction_take_files(story: dict[str, Any], archive: str) -> None:  # noqa: F811
    """`bus.history(..., files=)` and `bus.transaction(..., files=)` need no controller nor server (`source` a
    DSN: only for files without column names)."""
    from dbus_ray.client import Bus

    bus = Bus(None)  # any call to the controller would fail
    gtid = story["update"][1]
    expected = history(None, story["orders"], key={"id": 3}, files=archive).to_pylist()
    assert bus.history(story["orders"], key={"id": 3}, files=archive).to_pylist() == expected
    assert bus.history(story["orders"], key={"id": 3}, files=archive, source=story["dsn"]).to_pylist() == expected
    assert bus.transaction(gtid, files=archive).to_pylist() == transaction(story["dsn"], gtid).to_pylist()

