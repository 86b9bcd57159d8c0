"""`dbus_ray.debug.history` against the session's MariaDB: the history of one row and the rows of one
transaction, read from the binlog. Expected values come from MariaDB itself: the row as `SELECT` returns it
after each statement, `@@last_gtid` after each commit, SHOW MASTER STATUS before a transaction and
UNIX_TIMESTAMP() before its COMMIT."""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any

import pytest

from dbus_ray.debug.history import history, transaction
from dbus_ray.errors import DbusError
from dbus_ray.mysql.offset import position_key
from tests.support.helpers import execute, position, table_name


def _select(conn: Any, table: str, key: int) -> dict[str, Any] | None:
    with conn.cursor() as cur:
        cur.execute(f"SELECT id, status, amount FROM {table} WHERE id = %s", (key,))
        row = cur.fetchone()
    return None if row is None else {"id": row[0], "status": row[1], "amount": str(row[2])}


def _scalar(conn: Any, sql: str) -> Any:
    with conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchone()[0]


@pytest.fixture(scope="module")
def story(mariadb: Any) -> dict[str, Any]:
    """Inserts, an update in a transaction that also writes another table, a delete; what MariaDB said."""
    conn = mariadb.root_connect("dbus_test")
    orders, audit = table_name("hist_orders"), table_name("hist_audit")
    execute(conn, f"CREATE TABLE {orders} (id INT PRIMARY KEY, status VARCHAR(16), amount DECIMAL(10,2))",
            f"CREATE TABLE {audit} (id INT AUTO_INCREMENT PRIMARY KEY, note VARCHAR(64))")
    s: dict[str, Any] = {"orders": f"dbus_test.{orders}", "audit": f"dbus_test.{audit}", "since": position(conn)}
    for i in range(1, 6):
        execute(conn, f"INSERT INTO {orders} VALUES ({i}, 'NEW', {i}.25)")
        if i == 3:
            s["insert"] = (_select(conn, orders, 3), _scalar(conn, "SELECT @@last_gtid"))
    time.sleep(1.1)  # the update's statement and commit in later seconds than the inserts
    s["txn_start"] = position(conn)
    execute(conn, "BEGIN", f"UPDATE {orders} SET status = 'PAID', amount = 99.90 WHERE id = 3",
            f"INSERT INTO {audit} (note) VALUES ('order 3 paid')")
    s["update_statement_time"] = _scalar(conn, "SELECT UNIX_TIMESTAMP()")
    time.sleep(1.1)
    s["before_commit"] = _scalar(conn, "SELECT UNIX_TIMESTAMP()")
    execute(conn, "COMMIT")
    s["update"] = (_select(conn, orders, 3), _scalar(conn, "SELECT @@last_gtid"))
    with conn.cursor() as cur:
        cur.execute(f"SELECT id, note FROM {audit}")
        s["audit_row"] = dict(zip(("id", "note"), cur.fetchone()))
    time.sleep(1.1)
    s["before_delete"] = position(conn)
    s["delete_time"] = _scalar(conn, "SELECT UNIX_TIMESTAMP()")
    execute(conn, f"DELETE FROM {orders} WHERE id = 3")
    s["delete"] = (None, _scalar(conn, "SELECT @@last_gtid"))
    s["until"] = position(conn)
    execute(conn, f"UPDATE {orders} SET status = 'LATER' WHERE id = 4")  # after `until`
    conn.close()
    s["dsn"] = mariadb.dsn
    return s


def test_history_of_one_row(story: dict[str, Any]) -> None:
    got = history(story["dsn"], story["orders"], key={"id": 3}, since=story["since"]).to_pylist()
    assert [r["op"] for r in got] == ["insert", "update", "delete"]
    ins, upd, dele = got
    inserted, updated = story["insert"][0], story["update"][0]
    assert json.loads(ins["after"]) == inserted and ins["before"] is None
    assert json.loads(upd["before"]) == inserted and json.loads(upd["after"]) == updated
    assert json.loads(dele["before"]) == updated and dele["after"] is None
    assert [r["gtid"] for r in got] == [story["insert"][1], story["update"][1], story["delete"][1]]
    assert [r["txid"] for r in got] == [r["gtid"] for r in got]
    assert all(json.loads(r["key"]) == {"id": 3} for r in got)
    # the update's statement ran a second before its COMMIT: two different times
    assert upd["ts"].timestamp() <= story["update_statement_time"]
    assert upd["commit_ts"].timestamp() >= story["before_commit"] > upd["ts"].timestamp()
    start, end = (position_key(p.split(":")[0], int(p.split(":")[1]))
                  for p in (story["txn_start"], story["before_delete"]))
    assert start < position_key(upd["file"], int(upd["offset"])) < end
    # the default window (earliest binlog to now) holds the same changes, and `.to_pandas()` works
    frame = history(story["dsn"], story["orders"], key={"id": 3}).to_pandas()
    assert list(frame.op) == ["insert", "update", "delete"]


def test_history_windows(story: dict[str, Any]) -> None:
    dsn, orders = story["dsn"], story["orders"]
    gtid = story["update"][1]
    only = history(dsn, orders, key={"id": 3}, since=gtid, until=gtid).to_pylist()
    assert [(r["op"], r["gtid"]) for r in only] == [("update", gtid)]
    assert history(dsn, orders, key={"id": 3}, since=only[0], until=only[0]).to_pylist() == only  # a row as bound
    after = history(dsn, orders, key={"id": 3}, since=story["before_delete"]).to_pylist()
    assert [r["op"] for r in after] == ["delete"]
    before = history(dsn, orders, key={"id": 3}, since=story["since"], until=story["txn_start"]).to_pylist()
    assert [r["op"] for r in before] == ["insert"]
    later = history(dsn, orders, key={"id": 3}, since=dt.datetime.fromtimestamp(story["delete_time"],
                                                                                 dt.UTC))
    assert [r["op"] for r in later.to_pylist()] == ["delete"]
    every = history(dsn, orders, since=story["since"], until=story["until"]).to_pylist()
    assert sorted(json.loads(r["key"])["id"] for r in every if r["op"] == "insert") == [1, 2, 3, 4, 5]
    assert not [r for r in every if r["after"] and json.loads(r["after"])["status"] == "LATER"]


def test_transaction_by_gtid_and_by_position(story: dict[str, Any]) -> None:
    gtid = story["update"][1]
    by_gtid = transaction(story["dsn"], gtid).to_pylist()
    assert [(r["db"] + "." + r["table"], r["op"]) for r in by_gtid] == [(story["orders"], "update"),
                                                                        (story["audit"], "insert")]
    assert json.loads(by_gtid[0]["after"]) == story["update"][0]
    assert json.loads(by_gtid[1]["after"]) == story["audit_row"]
    assert {r["txid"] for r in by_gtid} == {gtid}
    by_position = transaction(story["dsn"], story["txn_start"]).to_pylist()
    assert by_position == by_gtid


def test_bad_input_is_one_line(story: dict[str, Any]) -> None:
    with pytest.raises(DbusError, match=r"has no column 'idd'"):
        history(story["dsn"], story["orders"], key={"idd": 3}, since=story["since"])
    with pytest.raises(DbusError, match=r"since: bad binlog bound 'yesterday'"):
        history(story["dsn"], story["orders"], key={"id": 3}, since="yesterday")
    with pytest.raises(DbusError, match=r"expected db.table"):
        history(story["dsn"], "orders", key={"id": 3})
    with pytest.raises(DbusError, match=r"binlog file nope.000001 is not on"):
        history(story["dsn"], story["orders"], since="nope.000001:4")


def test_rows_read_one_at_a_time_still_get_their_commit_time(story: dict[str, Any], monkeypatch: Any) -> None:
    """The stream hands out one row per read: the transaction's rows come before its COMMIT event is read, and
    keep waiting for it (the bounded-memory path); the progress bar does not change the answer."""
    import dbus_ray.debug.history as history_module

    whole = transaction(story["dsn"], story["update"][1]).to_pylist()
    monkeypatch.setattr(history_module, "READ_ROWS", 1)
    split = transaction(story["dsn"], story["update"][1], progress=True).to_pylist()
    assert split == whole and len(split) == 2
    assert all(r["commit_ts"].timestamp() >= story["before_commit"] for r in split)
