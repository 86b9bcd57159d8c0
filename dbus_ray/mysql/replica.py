"""The binlog connection of the `mysql` source: python-mysql-replication's `BinLogStreamReader` does the
handshake (checksum, heartbeat, slave registration, dump command), but the hot events are not turned
into its event objects.

Profile of the stock reader on one-row transactions (GTID, TABLE_MAP, WRITE_ROWS, XID per row): ~75% of
the time goes into `TableMapEvent.__init__` (column objects, optional metadata, name sync) that is
re-parsed for every transaction although its bytes never change. Here a packet of a hot event type
(TABLE_MAP, ROWS v1/v2, XID, GTID, QUERY, heartbeat) comes back as a `RawEvent`: its header fields and
the packet bytes, parsed by the source with a few slices. The source keys TABLE_MAP events by their
bytes (everything but the table id), so a table definition is parsed once, by the stock
`TableMapEvent` (`table_map_event`), and decoded by a layout compiled for it. Every other event type
goes through the stock `BinLogPacketWrapper` as before.
"""

from __future__ import annotations

import struct
from typing import Any

import pymysql
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.binlogstream import MYSQL_EXPECTED_ERROR_CODES
from pymysqlreplication.packet import BinLogPacketWrapper
from pymysqlreplication.row_event import TableMapEvent

QUERY_EVENT = 2
ROTATE_EVENT = 4
FORMAT_DESCRIPTION_EVENT = 15
XID_EVENT = 16
TABLE_MAP_EVENT = 19
WRITE_ROWS_V1, UPDATE_ROWS_V1, DELETE_ROWS_V1 = 23, 24, 25
HEARTBEAT_EVENT = 27
WRITE_ROWS_V2, UPDATE_ROWS_V2, DELETE_ROWS_V2 = 30, 31, 32
GTID_EVENT = 33
MARIADB_GTID_EVENT = 162

ROWS_OP = {
    WRITE_ROWS_V1: "insert",
    WRITE_ROWS_V2: "insert",
    UPDATE_ROWS_V1: "update",
    UPDATE_ROWS_V2: "update",
    DELETE_ROWS_V1: "delete",
    DELETE_ROWS_V2: "delete",
}
ROWS_V2 = frozenset((WRITE_ROWS_V2, UPDATE_ROWS_V2, DELETE_ROWS_V2))
HOT = frozenset(
    (TABLE_MAP_EVENT, XID_EVENT, HEARTBEAT_EVENT, GTID_EVENT, MARIADB_GTID_EVENT, QUERY_EVENT, *ROWS_OP)
)
_HEADER_UNPACK = struct.Struct("<IBIII").unpack_from
HEADER = 20  # OK byte + 19-byte event header: the post-header starts here


class RawEvent:
    """A hot event, not parsed: `data` is the whole packet (OK byte, header, body, checksum); the
    body is data[HEADER:end]."""

    __slots__ = ("type", "timestamp", "server_id", "event_size", "log_pos", "data", "end", "pkt")

    def __init__(self, pkt: Any, data: bytes, checksum: bool) -> None:
        self.pkt = pkt
        self.data = data
        self.timestamp, self.type, self.server_id, self.event_size, self.log_pos = _HEADER_UNPACK(data, 1)
        self.end = len(data) - 4 if checksum else len(data)


def read_lenenc(data: bytes, pos: int) -> tuple[int, int]:
    """A length-encoded integer at `pos` -> (value, position after it)."""
    first = data[pos]
    if first < 251:
        return first, pos + 1
    size = {252: 2, 253: 3, 254: 8}[first]
    return int.from_bytes(data[pos + 1 : pos + 1 + size], "little"), pos + 1 + size


def table_map_names(ev: RawEvent) -> tuple[int, bytes, str, str]:
    """(table id, the definition's bytes after the table id, schema, table) of a TABLE_MAP event."""
    data = ev.data
    table_id = int.from_bytes(data[HEADER : HEADER + 6], "little")
    p = HEADER + 8
    n = data[p]
    schema = data[p + 1 : p + 1 + n].decode()
    p += n + 2
    m = data[p]
    table = data[p + 1 : p + 1 + m].decode()
    return table_id, data[HEADER + 6 : ev.end], schema, table


def query_parts(ev: RawEvent) -> tuple[str, str]:
    """(schema, statement) of a QUERY event, decoded as the stock QueryEvent does."""
    data = ev.data
    schema_len = data[HEADER + 8]
    status_len = int.from_bytes(data[HEADER + 11 : HEADER + 13], "little")
    p = HEADER + 13 + status_len
    schema = data[p : p + schema_len].decode("utf-8", "replace")
    query = data[p + schema_len + 1 : ev.end].decode("utf-8", errors="backslashreplace")
    return schema, query


def mysql_gtid(ev: RawEvent) -> str:
    data = ev.data
    h = data[HEADER + 1 : HEADER + 17].hex()
    gno = int.from_bytes(data[HEADER + 17 : HEADER + 25], "little")
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}:{gno}"


def mariadb_gtid(ev: RawEvent) -> tuple[str, int]:
    """(GTID `domain-server-seq`, flags) of a MariaDB GTID event."""
    data = ev.data
    seq = int.from_bytes(data[HEADER : HEADER + 8], "little")
    domain = int.from_bytes(data[HEADER + 8 : HEADER + 12], "little")
    return f"{domain}-{ev.server_id}-{seq}", data[HEADER + 12]


def rows_body(ev: RawEvent) -> tuple[int, int, int, bytes, bytes | None, int]:
    """(table id, flags, column count, present bitmap, second bitmap (updates) or None, position of the
    first row image) of a ROWS event."""
    data = ev.data
    table_id = int.from_bytes(data[HEADER : HEADER + 6], "little")
    flags = int.from_bytes(data[HEADER + 6 : HEADER + 8], "little")
    p = HEADER + 8
    if ev.type in ROWS_V2:
        extra = int.from_bytes(data[p : p + 2], "little")
        p += extra
    ncols, p = read_lenenc(data, p)
    nbytes = (ncols + 7) // 8
    bitmap = data[p : p + nbytes]
    p += nbytes
    bitmap2 = None
    if ev.type in (UPDATE_ROWS_V1, UPDATE_ROWS_V2):
        bitmap2 = data[p : p + nbytes]
        p += nbytes
    return table_id, flags, ncols, bitmap, bitmap2, p


_CONNECTED_STREAM = "_BinLogStreamReader__connected_stream"
_CONNECTED_CTL = "_BinLogStreamReader__connected_ctl"
_USE_CHECKSUM = "_BinLogStreamReader__use_checksum"


class FastBinLogStreamReader(BinLogStreamReader):
    """`fetchone` returns a `RawEvent` for hot event types, the stock event object otherwise."""

    def fetchone(self) -> Any:
        p = "_BinLogStreamReader__"
        d = self.__dict__
        while True:
            if self.end_log_pos and self.is_past_end_log_pos:
                return None
            if not d[_CONNECTED_STREAM]:
                getattr(self, p + "connect_to_stream")()
            if not d[_CONNECTED_CTL]:
                getattr(self, p + "connect_to_ctl")()
            try:
                pkt = self._stream_connection._read_packet()
            except pymysql.OperationalError as error:
                code = error.args[0] if error.args else None
                if code in MYSQL_EXPECTED_ERROR_CODES:
                    self._stream_connection.close()
                    setattr(self, p + "connected_stream", False)
                    continue
                raise
            data = pkt._data
            if pkt.is_eof_packet():
                self.close()
                return None
            if data[0] != 0 or len(data) < 7:
                continue
            if data[5] in HOT:
                ev = RawEvent(pkt, data, d[_USE_CHECKSUM])
                if ev.log_pos:
                    self.log_pos = ev.log_pos
                return ev
            event = self._stock_event(pkt)
            if event is not None:
                return event

    def _wrap(self, pkt: Any, allowed: Any) -> BinLogPacketWrapper:
        p = "_BinLogStreamReader__"
        g = self.__dict__
        return BinLogPacketWrapper(
            pkt,
            self.table_map,
            self._ctl_connection,
            self.mysql_version,
            g[p + "use_checksum"],
            allowed,
            g[p + "only_tables"],
            g[p + "ignored_tables"],
            g[p + "only_schemas"],
            g[p + "ignored_schemas"],
            g[p + "freeze_schema"],
            g[p + "ignore_decode_errors"],
            g[p + "verify_checksum"],
            g[p + "optional_meta_data"],
            g[p + "enable_logging"],
            g[p + "use_column_name_cache"],
            g[p + "post_header_lengths"],
        )

    def _stock_event(self, pkt: Any) -> Any:
        """What the stock `fetchone` does with one packet (positions, table map reset on rotate, format
        description), returning the event when it is one the caller asked for."""
        p = "_BinLogStreamReader__"
        wrapped = self._wrap(pkt, self.__dict__[p + "allowed_events_in_packet"])
        ev = wrapped.event
        if wrapped.event_type == ROTATE_EVENT:
            self.log_pos = ev.position
            self.log_file = ev.next_binlog
            if wrapped.timestamp != 0:
                self.table_map = {}
        elif wrapped.log_pos:
            self.log_pos = wrapped.log_pos
        if self.end_log_pos and self.log_pos >= self.end_log_pos:
            self.is_past_end_log_pos = True
        if wrapped.event_type == FORMAT_DESCRIPTION_EVENT and ev is not None:
            self.mysql_version = ev.mysql_version
            self.__dict__[p + "post_header_lengths"] = ev.post_header_len
        if ev is None or ev.__class__ not in self.__dict__[p + "allowed_events"]:
            return None
        return ev

    def table_map_event(self, raw: RawEvent) -> TableMapEvent:
        """The stock parse of a TABLE_MAP event (a definition not seen before)."""
        self.table_map = {}
        wrapped = self._wrap(raw.pkt, {TableMapEvent})
        return wrapped.event
