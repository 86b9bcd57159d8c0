"""The read loop's short way through a MariaDB transaction of one rows event (`dbus_ray/mysql/quick_txn.py`),
against a real MariaDB: the transactions it takes and the ones it leaves to the long way, every row's
position, GTID and index as the server's own `SHOW BINLOG EVENTS` lists them, the values as written, the
final checkpoint as `SHOW MASTER STATUS` and `@@gtid_binlog_pos` say, and a resume at every row."""

from __future__ import annotations

import json
from typing import Any

import pytest

from dbus_ray.mysql import replica as rp
from dbus_ray.mysql.source import MysqlOptions, MysqlSource
from dbus_ray.mysql.streaming import BinlogStream
from tests.support.helpers import drain, execute, poll_once, position, scalar, table_name

pytestmark = pytest.mark.integration

DB = "dbus_test"


def source(mariadb: Any, start: str, *tables: str) -> MysqlSource:
    return MysqlSource("quick-test", MysqlOptions(dsn=mariadb.dsn, server_id=7031, start=start,
                                                  include=[f"{DB}.{t}" for t in tables]))


def server_events(root: Any, start: str, tables: set[str]) -> tuple[list[str], list[tuple[int, str]]]:
    """From the server's SHOW BINLOG EVENTS after `start`: the GTID of every transaction, and (position, GTID
    of its transaction) of every rows event of `tables`."""
    file, pos = start.split(":")
    with root.cursor() as cur:
        cur.execute(f"SHOW BINLOG EVENTS IN '{file}' FROM {pos}")
        events = cur.fetchall()
    gtids, rows_events, table_of = [], [], {}
    for _log, at, kind, _server, _end, info in events:
        if kind == "Gtid":  # "BEGIN GTID 0-1-12" or "GTID 0-1-13" (a DDL)
            gtids.append(info.split("GTID ")[1].split()[0])
        elif kind == "Table_map":  # "table_id: 31 (dbus_test.t)"
            table_of[info.split()[1]] = info.split("(")[1].rstrip(")").split(".")[1]
        elif kind.split("_rows")[0] in ("Write", "Update", "Delete") and table_of[info.split()[1]] in tables:
            rows_events.append((at, gtids[-1]))
    return gtids, rows_events


def test_one_event_transactions_take_the_short_way_with_the_servers_positions(mariadb: Any, root: Any,
                                                                             monkeypatch: Any) -> None:
    t, aria, other = table_name("quick"), table_name("quick_aria"), table_name("quick_other")
    execute(root, f"CREATE TABLE {t} (id INT PRIMARY KEY, v VARCHAR(20), n INT)",
            f"CREATE TABLE {aria} (id INT PRIMARY KEY) ENGINE=Aria", f"CREATE TABLE {other} (id INT PRIMARY KEY)")
    start = position(root)
    execute(root,
            f"INSERT INTO {t} VALUES (1, 'one', 10)",  # long: its table map is new
            f"INSERT INTO {t} VALUES (2, 'two', NULL), (3, 'three', 3), (4, 'four', 4)",  # short: one event
            f"UPDATE {t} SET v = 'uno' WHERE id = 1",  # short
            f"DELETE FROM {t} WHERE id = 2",  # short
            f"INSERT INTO {other} VALUES (1)",  # long: an excluded table
            "BEGIN", f"INSERT INTO {t} VALUES (5, 'five', 5)", f"INSERT INTO {t} VALUES (6, 'six', 6)", "COMMIT",
            f"INSERT INTO {aria} VALUES (1)",  # long: not transactional, a COMMIT query instead of an XID
            f"ALTER TABLE {t} ADD COLUMN z INT",  # long: a DDL
            f"INSERT INTO {t} VALUES (7, 'seven', 7, 70)",  # long: the table map after the DDL is new
            f"INSERT INTO {t} VALUES (8, 'eight', 8, 80)")  # short
    short = [False, True, True, True, False, False, False, False, False, True]  # per transaction, as above
    taken: dict[str, bool] = {}  # GTID -> taken the short way, for the calls with the three events after it framed
    quick = BinlogStream._quick_txn

    def counted(self: BinlogStream, ev: Any, ahead: Any) -> bool:
        framed = len(ahead) >= 3  # (how the socket's reads cut the stream: not up to the test)
        took = quick(self, ev, ahead)
        if framed:
            taken[rp.mariadb_gtid(ev)[0]] = took
        return took

    monkeypatch.setattr(BinlogStream, "_quick_txn", counted)
    src = source(mariadb, start, t, aria)
    src.open(None)
    try:
        batches = drain(src)
    finally:
        src.close()
    rows = [json.loads(c.to_json()) for b in batches for c in b.changes()]
    rows = [r for r in rows if r["op"] != "ddl"]
    gtids, events = server_events(root, start, {t, aria})
    assert len(gtids) == len(short)
    assert taken and all(took == short[gtids.index(gtid)] for gtid, took in taken.items()), (taken, gtids)
    assert any(taken.values())
    assert [(r["op"], r["table"], r["before"], r["after"]) for r in rows] == [
        ("insert", t, None, {"id": 1, "v": "one", "n": 10}),
        ("insert", t, None, {"id": 2, "v": "two", "n": None}),
        ("insert", t, None, {"id": 3, "v": "three", "n": 3}),
        ("insert", t, None, {"id": 4, "v": "four", "n": 4}),
        ("update", t, {"id": 1, "v": "one", "n": 10}, {"id": 1, "v": "uno", "n": 10}),
        ("delete", t, {"id": 2, "v": "two", "n": None}, None),
        ("insert", t, None, {"id": 5, "v": "five", "n": 5}),
        ("insert", t, None, {"id": 6, "v": "six", "n": 6}),
        ("insert", aria, None, {"id": 1}),
        ("insert", t, None, {"id": 7, "v": "seven", "n": 7, "z": 70}),
        ("insert", t, None, {"id": 8, "v": "eight", "n": 8, "z": 80}),
    ]
    # every row at its rows event, in its transaction (the multi-row event's rows share the event)
    expected = [events[0], *[events[1]] * 3, *events[2:]]
    assert [(r["pos"]["offset"], r["pos"]["gtid"], r["txid"]) for r in rows] == \
        [(at, gtid, gtid) for at, gtid in expected]
    assert [r["pos"]["index"] for r in rows] == [0, 0, 1, 2, 0, 0, 0, 1, 0, 0, 0]
    # the checkpoint after the last row: where the server is, with its GTID state
    file, pos = position(root).split(":")
    last = batches[-1].checkpoint
    assert (last["file"], last["offset"], last["skip"]) == (file, int(pos), 0)
    assert last["gtid_pos"] == scalar(root, "SELECT @@gtid_binlog_pos")


def test_resume_at_every_row_of_short_transactions(mariadb: Any, root: Any) -> None:
    t = table_name("quick_resume")
    execute(root, f"CREATE TABLE {t} (id INT PRIMARY KEY, v INT)")
    start = position(root)
    execute(root, f"INSERT INTO {t} VALUES (1, 1)", f"INSERT INTO {t} VALUES (2, 2), (3, 3), (4, 4)",
            f"UPDATE {t} SET v = v + 10", f"INSERT INTO {t} VALUES (5, 5)", f"DELETE FROM {t} WHERE id < 3")
    src = source(mariadb, start, t)
    src.open(None)
    try:
        full = [json.loads(c.to_json()) for b in drain(src) for c in b.changes()]
    finally:
        src.close()
    assert [(r["op"], r["before"], r["after"]) for r in full] == [  # as the statements wrote them
        ("insert", None, {"id": 1, "v": 1}),
        *(("insert", None, {"id": i, "v": i}) for i in (2, 3, 4)),
        *(("update", {"id": i, "v": i}, {"id": i, "v": i + 10}) for i in (1, 2, 3, 4)),
        ("insert", None, {"id": 5, "v": 5}),
        *(("delete", {"id": i, "v": i + 10}, None) for i in (1, 2)),
    ]
    got: list[dict[str, Any]] = []
    checkpoint = None
    for _ in range(50):
        batch = poll_once(source(mariadb, start, t), checkpoint, 1)
        if batch is None:
            break
        got += [json.loads(c.to_json()) for c in batch.changes()]
        checkpoint = batch.checkpoint
    assert [(r["pos"], r["op"], r["before"], r["after"]) for r in got] == \
        [(r["pos"], r["op"], r["before"], r["after"]) for r in full]
