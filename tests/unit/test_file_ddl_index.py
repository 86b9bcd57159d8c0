"""The DDL index of the `binlog_files` source (`DdlIndex.next_after`): a statement the index could not decode
counts as a possible DDL of every table, so names read from information_schema are never used for rows before
it (the stream stops at the statement itself when it reaches it)."""

from __future__ import annotations

from typing import Any

from dbus_ray.mysql import replica as rp
from dbus_ray.mysql.file_schema import DdlIndex


class NoFiles:
    def listing(self, need: bool = False) -> dict[str, Any]:
        return {}


def query_event(statement: bytes, status: bytes = b"") -> rp.RawEvent:
    """A QUERY event's packet (OK byte, 19-byte header, post-header, status variables, schema, statement)."""
    body = (b"\0" * 4 + b"\0" * 4 + bytes([1]) + b"\0\0" + len(status).to_bytes(2, "little") + status + b"d\0"
            + statement)
    header = (0).to_bytes(4, "little") + bytes([2]) + (1).to_bytes(4, "little") \
        + (19 + len(body)).to_bytes(4, "little") + (0).to_bytes(4, "little") + b"\0\0"
    return rp.RawEvent(None, b"\0" + header + body, checksum=False)


def test_a_statement_not_decoded_is_a_ddl_of_every_table() -> None:
    index = DdlIndex(NoFiles())  # type: ignore[arg-type]
    index._query(query_event(b"ALTER TABLE t ADD c INT"), "binlog.000001", 500)
    # not ASCII, and a client charset id the status variables name but nothing knows: not decoded
    index._query(query_event("ALTER TABLE u ADD é INT".encode(), b"\x04\xff\xff\xff\xff\xff\xff"), "binlog.000001",
                 900)
    assert index.next_after("d", "t", "binlog.000001", 100) == ("binlog.000001", 500)
    assert index.next_after("d", "t", "binlog.000001", 600) == ("binlog.000001", 900)  # the unread statement
    assert index.next_after("d", "other", "binlog.000001", 100) == ("binlog.000001", 900)
    assert index.next_after("d", "other", "binlog.000001", 900) is None
