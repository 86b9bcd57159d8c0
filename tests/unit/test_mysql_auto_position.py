"""MySQL auto-position without a MySQL server: where a checkpoint resumes on a MySQL server
(`history.resume_point`: same `server_uuid` at file:offset, another server by its executed GTID set, or one
line), and the stream's executed-set bookkeeping fed MySQL events built by hand after MySQL's documented
layouts (GTID_LOG_EVENT: flags 1, SID 16, GNO 8; QUERY_EVENT post-header thread id 4, exec time 4, schema
length 1, error code 2, status length 2; XID_EVENT: xid 8; PREVIOUS_GTIDS_LOG_EVENT: the encoded set;
ROTATE_EVENT: position 8, file name): each transaction's GTID joins the set of the checkpoint that follows it."""

from __future__ import annotations

import logging
import struct
import uuid
from typing import Any

import pytest

from dbus_ray.errors import DbusError
from dbus_ray.mysql import connection as cn
from dbus_ray.mysql import events as et
from dbus_ray.mysql import replica as rp
from dbus_ray.mysql.gtid_set import GtidSet
from dbus_ray.mysql.history import resume_point
from dbus_ray.mysql.offset import BinlogOffset
from dbus_ray.mysql.streaming import BinlogStream

OLD = "11111111-1111-1111-1111-111111111111"  # the old primary's server_uuid
NEW = "22222222-2222-2222-2222-222222222222"  # the promoted replica's
EP = cn.Endpoint("db2", 3306, "dbus", "secret")


def mysql(server_uuid: str, executed: str, gtid_mode: str = "ON") -> cn.ServerInfo:
    return cn.ServerInfo("8.0.36", False, "binlog.000009", 4, executed,
                         {"server_uuid": server_uuid, "gtid_mode": gtid_mode})


def checkpoint(**changes: Any) -> BinlogOffset:
    base = BinlogOffset("binlog.000003", 1234, 0, f"{OLD}:5", gtid_pos=f"{OLD}:1-5", server=OLD)
    return base.with_(**changes)


def test_same_server_resumes_at_the_position() -> None:
    start, gtid = resume_point(EP, mysql(OLD, f"{OLD}:1-9"), checkpoint(), [], "p")
    assert (start.file, start.offset, gtid) == ("binlog.000003", 1234, None)


def test_another_server_holding_the_set_resumes_by_auto_position(caplog: pytest.LogCaptureFixture) -> None:
    cp = checkpoint(skip=2, gtid=f"{OLD}:6", gtid_pos=f"{OLD}:1-5,{NEW}:1-2")
    with caplog.at_level(logging.WARNING, logger="dbus.mysql"):
        start, gtid = resume_point(EP, mysql(NEW, f"{NEW}:1-3,\n{OLD}:1-7"), cp, [], "p")
    assert gtid == f"{OLD}:1-5,{NEW}:1-2" and start.skip == 2 and start.gtid == f"{OLD}:6"
    assert [r.getMessage() for r in caplog.records] == [
        f"[p] db2:3306 (server {NEW}) is not the server the checkpoint's position binlog.000003:1234 is from "
        f"(server {OLD}): resuming by GTID (auto-position) after {OLD}:1-5,{NEW}:1-2, skipping the first 2 rows "
        f"of {OLD}:6"]


@pytest.mark.parametrize(("info", "cp", "expected"), [
    (mysql(NEW, f"{OLD}:1-3,{NEW}:1-9"), checkpoint(),
     f"db2:3306 (server {NEW}) is not the server the checkpoint was taken on (server {OLD}) and its gtid_executed "
     f"{OLD}:1-3,{NEW}:1-9 does not hold the checkpoint's {OLD}:4-5: an unrelated server or a reset binlog"),
    (mysql(NEW, f"{OLD}:1-9", gtid_mode="OFF"), checkpoint(),
     f"the checkpoint's position binlog.000003:1234 is in the binlog of server {OLD}, not of db2:3306 (server "
     f"{NEW}), and gtid_mode is OFF there, not ON"),
    (mysql(NEW, f"{OLD}:1-9"), checkpoint(gtid_pos=None),
     f"the checkpoint's position binlog.000003:1234 is in the binlog of server {OLD}, not of db2:3306 (server "
     f"{NEW}), and the checkpoint holds no executed GTID set to resume from"),
    (mysql(NEW, f"{OLD}:1-9"), checkpoint(xa={"X'61',X'',1": ["binlog.000003", 900, f"{OLD}:4", f"{OLD}:1-3"]}),
     "the checkpoint holds prepared XA transactions (X'61',X'',1)"),
])
def test_what_cannot_resume_is_one_line(info: cn.ServerInfo, cp: BinlogOffset, expected: str) -> None:
    with pytest.raises(DbusError) as err:
        resume_point(EP, info, cp, [], "p")
    assert expected in str(err.value) and "\n" not in str(err.value)
    assert "dbus checkpoint set" in str(err.value)


# ---------------------------------------------------------------------- the stream's executed set
def event(kind: int, body: bytes, log_pos: int) -> rp.RawEvent:
    header = struct.pack("<IBIIIH", 1767225600, kind, 1, 19 + len(body), log_pos, 0)
    return rp.RawEvent(None, b"\0" + header + body, checksum=False)


class Feed:
    """A MySQL binlog written event by event, each at the end of the one before."""

    def __init__(self, stream: BinlogStream, at: int) -> None:
        self.stream, self.at = stream, at

    def __call__(self, kind: int, body: bytes) -> None:
        self.at += 19 + len(body)
        self.stream._handle(event(kind, body, self.at))

    def rotate(self, file: str) -> None:
        self.stream._handle(event(et.ROTATE_EVENT, struct.pack("<Q", 4) + file.encode(), 0))
        self.at = 4

    def transaction(self, gtid: str) -> None:
        sid, gno = gtid.split(":")
        self(et.GTID_EVENT, b"\x01" + uuid.UUID(sid).bytes + struct.pack("<Q", int(gno)) + bytes(17))
        self(et.QUERY_EVENT, struct.pack("<IIBHH", 1, 0, 0, 0, 0) + b"\0" + b"BEGIN")
        self(et.XID_EVENT, struct.pack("<Q", 77))


class _Schema:
    by_table_id: dict[int, Any] = {}


def stream_at(start: BinlogOffset, executed: str = "") -> BinlogStream:
    return BinlogStream("p", EP, mysql(OLD, executed), 9, "dbus-p", _Schema(), start, (0, 0))  # type: ignore[arg-type]


def test_each_transaction_joins_the_checkpoints_executed_set() -> None:
    stream = stream_at(BinlogOffset("binlog.000003", 1234, gtid_pos=f"{OLD}:1-5,{NEW}:1-2", server=OLD))
    feed = Feed(stream, 1234)
    assert stream.offset().gtid_pos == f"{OLD}:1-5,{NEW}:1-2"
    feed.transaction(f"{OLD}:6")
    feed.transaction(f"{NEW}:4")  # NEW:3 is not in this binlog: a hole
    assert stream.offset() == BinlogOffset("binlog.000003", feed.at, 0, f"{NEW}:4",
                                           gtid_pos=f"{OLD}:1-6,{NEW}:1-2:4", server=OLD)
    feed.transaction(f"{NEW}:3")  # fills it
    assert stream.offset().gtid_pos == f"{OLD}:1-6,{NEW}:1-4"


def test_the_set_is_learned_at_a_files_previous_gtids_event() -> None:
    """A stream started in the middle of a file without a set (`start: FILE:OFFSET`) has none until the next
    file's PREVIOUS_GTIDS_LOG_EVENT, which names every transaction before that file."""
    stream = stream_at(BinlogOffset("binlog.000003", 1234, server=OLD))
    feed = Feed(stream, 1234)
    feed(et.PREVIOUS_GTIDS_EVENT, GtidSet.parse(f"{OLD}:1-2").encode())  # mid-file (an artificial one): ignored
    feed.transaction(f"{OLD}:6")
    assert stream.offset().gtid_pos is None
    feed.rotate("binlog.000004")
    feed(15, bytes(95))  # FORMAT_DESCRIPTION_EVENT (ignored)
    feed(et.PREVIOUS_GTIDS_EVENT, GtidSet.parse(f"{OLD}:1-6").encode())
    assert stream.offset().gtid_pos == f"{OLD}:1-6"
    feed.transaction(f"{OLD}:7")
    assert stream.offset().gtid_pos == f"{OLD}:1-7"
    assert stream.offset().file == "binlog.000004"


def test_without_gtid_mode_on_no_set_is_kept() -> None:
    stream = BinlogStream("p", EP, mysql(OLD, "", gtid_mode="OFF_PERMISSIVE"), 9, "dbus-p", _Schema(),  # type: ignore[arg-type]
                          BinlogOffset("binlog.000003", 4, gtid_pos=f"{OLD}:1-5", server=OLD), (0, 0))
    Feed(stream, 4).transaction(f"{OLD}:6")
    assert stream.offset().gtid_pos is None


@pytest.mark.parametrize("executed", ["", f"{OLD}:1-2"])
def test_a_reset_binlog_on_the_same_server_is_one_line(executed: str) -> None:
    """RESET MASTER empties gtid_executed (or a re-initialized server with the same server_uuid holds less): the
    checkpoint's file:offset would point into another binlog, so the source stops naming what is missing."""
    with pytest.raises(DbusError) as err:
        resume_point(EP, mysql(OLD, executed), checkpoint(), [], "p")
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"the binlog of db2:3306 (server {OLD}) is not the one the checkpoint was taken on: its "
                          f"gtid_executed {executed or '(empty)'} no longer holds the checkpoint's {OLD}:")
    assert "RESET MASTER" in msg


def test_the_same_server_without_gtid_mode_resumes_at_the_position() -> None:
    start, gtid = resume_point(EP, mysql(OLD, "", gtid_mode="OFF"), checkpoint(gtid_pos=None), [], "p")
    assert (start.file, start.offset, gtid) == ("binlog.000003", 1234, None)
