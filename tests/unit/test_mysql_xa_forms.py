"""The XA forms of `dbus_ray.mysql.xa`: XA statements as MariaDB/MySQL log them (`XA COMMIT X'61',X'',1`,
text from SHOW BINLOG EVENTS of MariaDB 10.11), the xid of a MariaDB GTID event (layout of
`Gtid_log_event::write`, sql/log_event_server.cc: seq_no 8, domain_id 4, flags2 1, [commit_id 8],
formatID 4, gtrid_length 1, bqual_length 1, data; MariaDB's replication-protocol page GTID_EVENT), the
checkpoint's `xa` form and the row bound."""

from __future__ import annotations

import struct

import pytest

from dbus_ray.errors import DbusError
from dbus_ray.mysql import xa


@pytest.mark.parametrize(("sql", "expected"), [
    ("XA COMMIT X'61',X'',1", ("COMMIT", "X'61',X'',1", False)),
    ("XA ROLLBACK X'0102',X'03',7", ("ROLLBACK", "X'0102',X'03',7", False)),
    ("XA COMMIT X'6f6e65',X'',1 ONE PHASE", ("COMMIT", "X'6f6e65',X'',1", True)),
    ("XA END X'62',X'',1", ("END", "X'62',X'',1", False)),
    ("XA START X'6D7973716C',X'',1", ("START", "X'6d7973716c',X'',1", False)),
    ("xa begin X'61',X'',-1", ("START", "X'61',X'',-1", False)),
])
def test_xa_statements_as_logged(sql: str, expected: tuple[str, str, bool]) -> None:
    assert xa.xa_statement(sql) == expected


def test_other_statements_are_not_xa() -> None:
    assert xa.xa_statement("INSERT INTO xa.t VALUES (1)") is None
    assert xa.xa_statement("XAVIER") is None


@pytest.mark.parametrize("group_commit", [False, True])
def test_xid_of_a_mariadb_gtid_event(group_commit: bool) -> None:
    flags = xa.FL_PREPARED_XA | (xa.FL_GROUP_COMMIT_ID if group_commit else 0)
    body = struct.pack("<QIB", 3, 0, flags) + (struct.pack("<Q", 99) if group_commit else b"")
    body += struct.pack("<iBB", 7, 2, 1) + b"\x01\x02\x03" + b"\x00"  # flags_extra after the xid
    assert xa.gtid_xid(body, flags) == "X'0102',X'03',7"
    assert xa.gtid_xid(struct.pack("<QIB", 3, 0, 0), 0) is None
    with pytest.raises(ValueError, match="cut short"):
        xa.gtid_xid(body[: len(body) - 3], flags)


def test_marks_round_trip_through_the_checkpoint_form() -> None:
    marks = {"X'61',X'',1": xa.Mark("binlog.000002", 379, "0-1-3", "0-1-2"),
             "X'62',X'',1": xa.Mark("binlog.000001", 929, "0-1-5", "0-1-4")}
    raw = xa.marks_to_json(marks)
    assert raw == {"X'61',X'',1": ["binlog.000002", 379, "0-1-3", "0-1-2"],
                   "X'62',X'',1": ["binlog.000001", 929, "0-1-5", "0-1-4"]}
    assert xa.marks_from_json(raw) == marks
    assert xa.earliest(marks) == marks["X'62',X'',1"]
    with pytest.raises(ValueError, match=r"checkpoint key xa\.x: expected \[file, offset, gtid, gtid_pos\]"):
        xa.marks_from_json({"x": ["binlog.000001"]})


def test_rows_held_over_the_limit_fail_with_one_line() -> None:
    held = xa.Prepared(limit=3)
    held.count(3, "binlog.000001:100")
    with pytest.raises(DbusError) as err:
        held.count(1, "binlog.000001:200")
    assert str(err.value).startswith("binlog binlog.000001:200: prepared XA transactions hold more than 3 rows")
    assert "\n" not in str(err.value)
