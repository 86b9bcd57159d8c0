"""The binlog event type table of the `mysql` source (`dbus_ray.mysql.events`): every type is decoded,
ignored with a reason, or refused with a one-line error; and MariaDB's compressed record format
(`log_bin_compress`, built here from its documented layout: header byte `0x80 | algorithm << 4 | n`,
`n` big-endian bytes of the uncompressed length, a zlib stream)."""

from __future__ import annotations

import zlib

import pytest

from dbus_ray.mysql import events as et
from dbus_ray.mysql.replica import uncompress

# Log_event_type of MySQL 9.x (libbinlogevents) and MariaDB 11.x (sql/log_event.h) with the names they give.
SERVER_TYPES = {
    0: "UNKNOWN_EVENT", 1: "START_EVENT_V3", 2: "QUERY_EVENT", 3: "STOP_EVENT", 4: "ROTATE_EVENT",
    5: "INTVAR_EVENT", 6: "LOAD_EVENT", 7: "SLAVE_EVENT", 8: "CREATE_FILE_EVENT", 9: "APPEND_BLOCK_EVENT",
    10: "EXEC_LOAD_EVENT", 11: "DELETE_FILE_EVENT", 12: "NEW_LOAD_EVENT", 13: "RAND_EVENT", 14: "USER_VAR_EVENT",
    15: "FORMAT_DESCRIPTION_EVENT", 16: "XID_EVENT", 17: "BEGIN_LOAD_QUERY_EVENT", 18: "EXECUTE_LOAD_QUERY_EVENT",
    19: "TABLE_MAP_EVENT", 20: "PRE_GA_WRITE_ROWS_EVENT", 21: "PRE_GA_UPDATE_ROWS_EVENT",
    22: "PRE_GA_DELETE_ROWS_EVENT", 23: "WRITE_ROWS_EVENT_V1", 24: "UPDATE_ROWS_EVENT_V1", 25: "DELETE_ROWS_EVENT_V1",
    26: "INCIDENT_EVENT", 27: "HEARTBEAT_LOG_EVENT", 28: "IGNORABLE_LOG_EVENT", 29: "ROWS_QUERY_LOG_EVENT",
    30: "WRITE_ROWS_EVENT", 31: "UPDATE_ROWS_EVENT", 32: "DELETE_ROWS_EVENT", 33: "GTID_LOG_EVENT",
    34: "ANONYMOUS_GTID_LOG_EVENT", 35: "PREVIOUS_GTIDS_LOG_EVENT", 36: "TRANSACTION_CONTEXT_EVENT",
    37: "VIEW_CHANGE_EVENT", 38: "XA_PREPARE_LOG_EVENT", 39: "PARTIAL_UPDATE_ROWS_EVENT",
    40: "TRANSACTION_PAYLOAD_EVENT", 41: "HEARTBEAT_LOG_EVENT_V2", 42: "GTID_TAGGED_LOG_EVENT",
    160: "ANNOTATE_ROWS_EVENT", 161: "BINLOG_CHECKPOINT_EVENT", 162: "GTID_EVENT", 163: "GTID_LIST_EVENT",
    164: "START_ENCRYPTION_EVENT", 165: "QUERY_COMPRESSED_EVENT", 166: "WRITE_ROWS_COMPRESSED_EVENT_V1",
    167: "UPDATE_ROWS_COMPRESSED_EVENT_V1", 168: "DELETE_ROWS_COMPRESSED_EVENT_V1", 169: "WRITE_ROWS_COMPRESSED_EVENT",
    170: "UPDATE_ROWS_COMPRESSED_EVENT", 171: "DELETE_ROWS_COMPRESSED_EVENT",
}


def test_every_server_event_type_is_classified_under_its_name() -> None:
    assert {code: e.name for code, e in et.EVENT_TYPES.items()} == SERVER_TYPES
    assert all(e.kind in (et.DECODED, et.IGNORED, et.REFUSED) and e.why for e in et.EVENT_TYPES.values())


def test_the_decoded_types_are_the_ones_the_stream_dispatches() -> None:
    dispatched = {*et.ROWS_OP, *et.QUERIES, *et.HEARTBEATS, et.ROTATE_EVENT, et.XID_EVENT, et.TABLE_MAP_EVENT,
                  et.GTID_EVENT, et.MARIADB_GTID_EVENT, et.TRANSACTION_PAYLOAD_EVENT, et.XA_PREPARE_EVENT,
                  et.PREVIOUS_GTIDS_EVENT}
    assert dispatched == et.DECODED_TYPES
    assert not et.DECODED_TYPES & et.IGNORED_TYPES


def test_row_changing_and_lossy_types_are_never_ignored() -> None:
    for code in (6, 17, 18, 20, 26):  # LOAD DATA, pre-GA rows, incident
        assert et.EVENT_TYPES[code].kind == et.REFUSED


@pytest.mark.parametrize(("code", "expected"), [
    (26, "binlog binlog.000007:1234: event type 26 INCIDENT_EVENT cannot be read: the server lost changes here "
         "(an incident: the binlog is incomplete); the pipeline stops before it"),
    (200, "binlog binlog.000007:1234: event type 200 (unknown to this version of dbus) cannot be read: a server "
          "newer than the source, or a corrupt binlog; the pipeline stops before it"),
])
def test_refusal_is_one_line_naming_position_type_and_setting(code: int, expected: str) -> None:
    assert str(et.refused(code, "binlog.000007", 1234)) == expected


def test_every_unlisted_type_is_refused_not_skipped() -> None:
    for code in range(256):
        if code not in et.EVENT_TYPES:
            assert code not in et.DECODED_TYPES | et.IGNORED_TYPES
            assert "unknown" in str(et.refused(code, "f.000001", 4))


def _record(payload: bytes, lenlen: int) -> bytes:
    return bytes([0x80 | lenlen]) + len(payload).to_bytes(lenlen, "big") + zlib.compress(payload)


@pytest.mark.parametrize("lenlen", [1, 2, 3, 4])
def test_uncompress_reads_mariadb_compressed_records(lenlen: int) -> None:
    payload = bytes(range(200)) if lenlen == 1 else b"INSERT rows " * 500
    assert uncompress(_record(payload, lenlen)) == payload


@pytest.mark.parametrize(("record", "match"), [
    (b"", "empty"),
    (b"\x01" + zlib.compress(b"x"), "not a zlib-compressed record"),
    (bytes([0x80 | 0x10 | 1]) + b"\x01" + zlib.compress(b"x"), "not a zlib-compressed record"),
    (bytes([0x81, 5]) + zlib.compress(b"abc"), "holds 3 bytes, its header says 5"),
    (bytes([0x81, 3]) + zlib.compress(b"abc")[:-3], "corrupt compressed record"),
])
def test_uncompress_refuses_what_is_not_a_whole_record(record: bytes, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        uncompress(record)
