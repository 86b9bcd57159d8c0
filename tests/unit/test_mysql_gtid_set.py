"""MySQL GTID sets (`dbus_ray.mysql.gtid_set`), no MySQL server: the examples of MySQL's reference manual
("GTID Sets" in "GTID Format and Storage", and GTID_SUBSET / GTID_SUBTRACT in "Functions Used with Global
Transaction Identifiers"), worked by hand; the executed-set bookkeeping transaction by transaction; the
binary form and the COM_BINLOG_DUMP_GTID packet checked field by field against MySQL's documented layout and
byte for byte against stock python-mysql-replication (a second implementation: `GtidSet.encoded()` and the
packet its `BinLogStreamReader(auto_position=...)` writes)."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.gtid import GtidSet as StockGtidSet

from dbus_ray.mysql.gtid_set import GtidSet, dump_gtid_packet

U = "3e11fa47-71ca-11e1-9e33-c80aa9429562"  # the manual's source UUID
V = "2174b383-5441-11e8-b90a-c80aa9429562"


def test_the_manuals_forms_parse_and_print_as_mysql_prints_them() -> None:
    # "A range of GTIDs originating from the same server can be collapsed into a single expression"
    assert str(GtidSet.parse("3E11FA47-71CA-11E1-9E33-C80AA9429562:1-5")) == f"{U}:1-5"
    # "...single GTIDs or ranges ... separated by colons"
    assert str(GtidSet.parse("3E11FA47-71CA-11E1-9E33-C80AA9429562:1-3:11:47-49")) == f"{U}:1-3:11:47-49"
    # several sources, as SELECT @@gtid_executed shows them (comma, newline), printed in UUID order
    assert str(GtidSet.parse(f"{U}:1-3,\n{V}:1-19")) == f"{V}:1-19,{U}:1-3"
    # the same transactions written differently are the same set
    assert GtidSet.parse(f"{U}:1-2:3,{U}:4-5") == GtidSet.parse(f"{U}:1-5")
    assert str(GtidSet.parse("")) == ""


@pytest.mark.parametrize(("text", "why"), [
    ("3e11fa47:1-5", "is not UUID:INTERVALS"),
    (f"{U}", "is not UUID:INTERVALS"),
    (f"{U}:5-1", "is empty or starts at 0"),
    (f"{U}:0", "is empty or starts at 0"),
    (f"{U}:x-1", "is not N or N-M"),
    (f"{U}:mytag:1-5", "tagged GTIDs are not supported"),
])
def test_a_bad_set_is_one_line_naming_the_part(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why) as err:
        GtidSet.parse(text)
    assert "\n" not in str(err.value) and repr(text) in str(err.value)


def test_each_transaction_joins_the_executed_set_and_intervals_merge() -> None:
    executed = GtidSet.parse(f"{U}:1-3:11:47-49")
    for gno in (4, 5, 6, 7, 8, 9, 10):  # fills the gap: 1-3 and 11 become one interval
        executed.add(f"{U}:{gno}")
    assert str(executed) == f"{U}:1-11:47-49"
    executed.add(f"{U}:50")
    executed.add(f"{U}:46")
    assert str(executed) == f"{U}:1-11:46-50"
    executed.add(f"{U}:30")  # a hole stays a hole
    executed.add(f"{U}:5")  # a transaction already in the set changes nothing
    assert str(executed) == f"{U}:1-11:30:46-50"
    executed.add(f"{V.upper()}:1")  # a new source (a GTID event names it in lower case; any case is the same)
    assert str(executed) == f"{V}:1,{U}:1-11:30:46-50"
    merged = GtidSet.parse(f"{U}:1-2:4-5:7-8")
    merged.add_interval(U, 2, 7)  # one interval spanning several merges them all
    assert str(merged) == f"{U}:1-8"


@pytest.mark.parametrize(("set1", "set2", "subset"), [
    # the manual's GTID_SUBSET examples
    (f"{U}:23", f"{U}:21-57", True),
    (f"{U}:23-25", f"{U}:21-57", True),
    (f"{U}:20-25", f"{U}:21-57", False),
    (f"{U}:1-5,{V}:1", f"{U}:1-57", False),
    ("", f"{U}:1", True),
])
def test_subset_as_gtid_subset(set1: str, set2: str, subset: bool) -> None:
    assert GtidSet.parse(set1).subset_of(GtidSet.parse(set2)) is subset


@pytest.mark.parametrize(("set1", "set2", "difference"), [
    # the manual's GTID_SUBTRACT examples
    (f"{U}:21-57", f"{U}:21", f"{U}:22-57"),
    (f"{U}:21-57", f"{U}:20-25", f"{U}:26-57"),
    (f"{U}:21-57", f"{U}:23-24", f"{U}:21-22:25-57"),
    (f"{U}:1-10,{V}:1-3", f"{U}:1-10", f"{V}:1-3"),
])
def test_missing_from_as_gtid_subtract(set1: str, set2: str, difference: str) -> None:
    assert str(GtidSet.parse(set1).missing_from(GtidSet.parse(set2))) == difference


def test_the_encoded_form_follows_mysqls_layout() -> None:
    data = GtidSet.parse(f"{U}:1-5:7").encode()
    # n_sids 8, SID 16, n_intervals 8, then start and end (exclusive) 8 bytes each, little-endian
    assert data == (struct.pack("<Q", 1) + bytes.fromhex(U.replace("-", "")) + struct.pack("<Q", 2)
                    + struct.pack("<QQ", 1, 6) + struct.pack("<QQ", 7, 8))
    assert GtidSet.decode(data) == GtidSet.parse(f"{U}:1-5:7")
    assert GtidSet.decode(GtidSet().encode()) == GtidSet()
    with pytest.raises(ValueError, match="bad encoded GTID set"):
        GtidSet.decode(data[:-3])


@pytest.mark.parametrize("text", [
    f"{U}:1-5",
    f"{U}:1-3:11:47-49",
    f"{V}:1-19,{U}:1-3",
    f"{V}:1:3:5:7:9,{U}:1-18446744073709551614",
    "",
])
def test_the_encoded_form_equals_python_mysql_replications(text: str) -> None:
    ours = GtidSet.parse(text)
    assert ours.encode() == StockGtidSet(text or None).encoded()
    assert str(StockGtidSet.decode(__import__("io").BytesIO(ours.encode()))) == str(ours)


def test_sources_are_encoded_in_uuid_order() -> None:
    """MySQL sorts the sources (Sid_map's sorted sidnos) in both forms; a text in another order gives the
    same bytes as the sorted text."""
    assert GtidSet.parse(f"{U}:1-3,{V}:1-19").encode() == StockGtidSet(f"{V}:1-19,{U}:1-3").encoded()


class _Cursor:
    def execute(self, sql: str, args: Any = None) -> None:
        pass

    def fetchone(self) -> tuple[str, str]:
        return ("binlog_checksum", "NONE")

    def close(self) -> None:
        pass


class _Connection:
    """What BinLogStreamReader needs of its stream connection; keeps the packets it writes."""

    written: list[bytes] = []

    def __init__(self, **settings: Any) -> None:
        pass

    def cursor(self) -> _Cursor:
        return _Cursor()

    def _write_bytes(self, data: bytes) -> None:
        _Connection.written.append(data)

    def _read_packet(self) -> None:
        return None


def stock_dump_packet(text: str, server_id: int) -> bytes:
    _Connection.written = []
    reader = BinLogStreamReader(connection_settings={}, server_id=server_id, auto_position=text, blocking=True,
                                pymysql_wrapper=_Connection, report_slave=None)
    reader._BinLogStreamReader__connect_to_stream()  # type: ignore[attr-defined]
    return _Connection.written[-1]


@pytest.mark.parametrize("text", [f"{U}:1-5:7", f"{V}:1-19,{U}:1-3:11:47-49"])
def test_the_dump_packet_equals_python_mysql_replications(text: str) -> None:
    assert dump_gtid_packet(GtidSet.parse(text), 4242) == stock_dump_packet(text, 4242)


def test_the_dump_packet_follows_mysqls_documented_layout() -> None:
    gtids = GtidSet.parse(f"{U}:1-5:7")
    packet = dump_gtid_packet(gtids, 4242)
    length, seq = int.from_bytes(packet[:3], "little"), packet[3]
    body = packet[4:]
    assert (length, seq) == (len(body), 0)
    assert body[0] == 0x1E  # COM_BINLOG_DUMP_GTID
    flags, server_id, name_len = struct.unpack_from("<HII", body, 1)
    assert flags == 0x04 and server_id == 4242  # BINLOG_THROUGH_GTID
    p = 11 + name_len
    assert body[11:p] == b"\0" * name_len
    pos, size = struct.unpack_from("<QI", body, p)
    assert pos == 4 and body[p + 12 :] == gtids.encode() and size == len(gtids.encode())
