"""Helpers to read binlog bytes of the MySQL 8 writer (`tests.support.mysql8_binlog`) two ways: with our
`BinlogStream` (over a replica that serves the bytes of a file from a position, as COM_BINLOG_DUMP does, without
a server) and with stock python-mysql-replication's event classes (each event over a fake packet; a
TRANSACTION_PAYLOAD_EVENT is opened here with zstandard, independently of our payload code)."""

from __future__ import annotations

import struct
import zlib
from typing import Any

import pymysql.protocol
import zstandard
from pymysqlreplication import event as stock_event
from pymysqlreplication import row_event as stock_rows
from pymysqlreplication.packet import BinLogPacketWrapper

from dbus_ray.mysql import replica as rp
from dbus_ray.mysql import streaming
from dbus_ray.mysql.connection import Endpoint, ServerInfo
from dbus_ray.mysql.offset import BinlogOffset
from dbus_ray.mysql.schema import TableSchema
from tests.support.mysql8_binlog import TRANSACTION_PAYLOAD_EVENT

SERVER_UUID = "3e11fa47-71ca-11e1-9e33-c80aa9429562"


class FileReplica(rp.Replica):
    """A replica connection that serves the events of `files[name]` from its offset (no server)."""

    files: dict[str, bytes] = {}

    def connect(self) -> None:
        data = self.files[self.file]
        fde_size = struct.unpack_from("<I", data, 4 + 9)[0]
        self.checksum = data[4 + fde_size - 5] == 1  # the FORMAT_DESCRIPTION_EVENT's checksum algorithm
        self.connection = object()  # type: ignore[assignment]
        self._pos = self.offset

    def fetch(self) -> rp.RawEvent | None:
        if self.ahead:  # an event peeked at open
            return self.ahead.popleft()
        if self.connection is None:
            self.connect()
        data = self.files[self.file]
        if self._pos >= len(data):
            return None
        size = struct.unpack_from("<I", data, self._pos + 9)[0]
        raw = b"\0" + data[self._pos : self._pos + size]
        self._pos += size
        return rp.RawEvent(pymysql.protocol.MysqlPacket(raw, "utf8"), raw, self.checksum)

    def ready(self) -> bool:
        """Whether more events wait (the file is not at its end)."""
        return self.connection is None or self._pos < len(self.files[self.file])

    def close(self) -> None:
        self.connection = None


def open_stream(monkeypatch: Any, files: dict[str, bytes], start: BinlogOffset) -> streaming.BinlogStream:
    """Our stream over the in-memory binlog files, from `start`."""
    FileReplica.files = files
    monkeypatch.setattr(streaming.rp, "Replica", FileReplica)
    ep = Endpoint("127.0.0.1", 1, "nobody", "")
    info = ServerInfo("8.0.35", False, start.file, 4, None,
                      {"binlog_row_metadata": "FULL", "server_uuid": SERVER_UUID})
    schema = TableSchema(ep, lambda db, table: True, False, None, history_on=False)
    return streaming.BinlogStream("mysql8", ep, info, 1234, "test", schema, start, (1, 1 << 40))


def read_all(stream: streaming.BinlogStream, max_rows: int = 1000) -> list[dict[str, Any]]:
    """Every row the stream hands out until the file ends (`max_rows` a poll)."""
    rows: list[dict[str, Any]] = []
    while True:
        got = stream.read(max_rows)
        if got is None:
            return rows
        for part in got[0]:
            rows += part.data.to_pylist()


class _Control:
    charset = "utf8"

    def _get_dbms(self) -> str:
        return "mysql"


STOCK_EVENTS = frozenset((stock_rows.TableMapEvent, stock_rows.WriteRowsEvent, stock_rows.UpdateRowsEvent,
                          stock_rows.DeleteRowsEvent, stock_rows.PartialUpdateRowsEvent, stock_event.GtidEvent,
                          stock_event.PreviousGtidsEvent, stock_event.QueryEvent, stock_event.XidEvent,
                          stock_event.FormatDescriptionEvent, stock_event.RotateEvent))


def stock_parse(event_bytes: bytes, table_map: dict[int, Any]) -> Any:
    """Stock's event object of one event (with its 4-byte checksum trailer)."""
    pkt = pymysql.protocol.MysqlPacket(b"\0" + event_bytes, "utf8")
    wrapped = BinLogPacketWrapper(pkt, table_map, _Control(), (8, 0, 35), True, STOCK_EVENTS, None, None, None,
                                  None, False, False, False, True, False)
    ev = wrapped.event
    if isinstance(ev, stock_rows.TableMapEvent):
        table_map[ev.table_id] = ev.get_table()
    return ev


def split_events(data: bytes, pos: int) -> list[bytes]:
    out = []
    while pos < len(data):
        size = struct.unpack_from("<I", data, pos + 9)[0]
        out.append(data[pos : pos + size])
        pos += size
    return out


def stock_events(file_bytes: bytes) -> list[Any]:
    """Stock's parse of every event of a file (after the magic); a payload's inner events in its place (given a
    checksum trailer, as stock's parsers expect one)."""
    table_map: dict[int, Any] = {}
    out = []
    for ev in split_events(file_bytes, 4):
        if ev[4] != TRANSACTION_PAYLOAD_EVENT:
            out.append(stock_parse(ev, table_map))
            continue
        body = ev[19:-4]
        frame = body[body.index(b"\x28\xb5\x2f\xfd"):]  # the zstd frame magic ends the payload header
        for inner in split_events(zstandard.ZstdDecompressor().decompress(frame), 0):
            fixed = bytearray(inner)
            fixed[9:13] = struct.pack("<I", len(inner) + 4)
            out.append(stock_parse(bytes(fixed) + struct.pack("<I", zlib.crc32(fixed)), table_map))
    return out
