"""The binlog connection of the `mysql` source: our own replica session and packet loop over a pymysql
connection, and the few slices that read the header fields of the events the stream decodes.

`Replica` does what a replica does on connect (binlog checksum, heartbeat period, MariaDB slave capability,
COM_REGISTER_SLAVE, then COM_BINLOG_DUMP from `file:offset`, or from a GTID set: MariaDB
`@slave_connect_state`, MySQL COM_BINLOG_DUMP_GTID with the executed set, `dbus_ray.mysql.gtid_set`), then
hands out every event, of any type, as a `RawEvent`: its header fields and the packet bytes, parsed by the
stream with a few slices (the stream decides per type, see `dbus_ray.mysql.events`). It never reconnects by
itself: a dropped connection is an error the stream answers by starting a new `Replica` at its checkpoint (so
a reconnect never lands mid-transaction). python-mysql-replication supplies only public pieces: `ReportSlave`
(the COM_REGISTER_SLAVE packet) and `BinLogPacketWrapper`/`TableMapEvent`, which parse a TABLE_MAP event the
stream has not seen before (`table_map_event`; the stream keys definitions by their bytes, so each is parsed
once). Writing packets goes through pymysql's `_write_bytes`/`_next_seq_id`/`_read_packet`, as
python-mysql-replication does; once the dump started, the replica reads the connection itself: chunks of the
socket's bytes, framed into packets as `_read_packet` does (same read timeout, sequence check, 16 MiB parts,
errors), all the whole ones of a chunk at once (`ahead`). The stock reader spent ~75% of its time on one-row
transactions re-parsing the same TABLE_MAP for every transaction: hence raw events, definitions parsed once.
"""

from __future__ import annotations

import select
import struct
import zlib
from collections import deque
from typing import Any

import pymysql
import pymysql.charset
import pymysql.protocol
from pymysql.constants.COMMAND import COM_BINLOG_DUMP
from pymysqlreplication.binlogstream import ReportSlave
from pymysqlreplication.packet import BinLogPacketWrapper
from pymysqlreplication.row_event import TableMapEvent

from dbus_ray.mysql import values
from dbus_ray.mysql.events import QUERY_COMPRESSED_EVENT, ROWS_UPDATE, ROWS_V2
from dbus_ray.mysql.gtid_set import GtidSet, dump_gtid_packet

#: pymysql errors of a dropped connection (server gone, lost during a query)
CONNECTION_LOST = (2013, 2006)

_HEADER_UNPACK = struct.Struct("<IBIII").unpack_from
MAX_PACKET_LEN = 2**24 - 1  # a packet this long continues in the next one
READ_AHEAD = 1 << 18  # bytes asked of the socket per read of the dump
HEADER = 20  # OK byte + 19-byte event header: the post-header starts here


class RawEvent:
    """An event, not parsed: `data` is the whole packet (OK byte, header, body, checksum); the
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
    schema = data[p : p + schema_len].decode("utf-8")  # names are utf8 in the binlog
    query = data[p + schema_len + 1 : ev.end]
    if ev.type == QUERY_COMPRESSED_EVENT:
        query = uncompress(query)
    return schema, statement_text(query, data[HEADER + 13 : HEADER + 13 + status_len])


# status variables of a QUERY event that the server writes before Q_CHARSET_CODE (4), by their sizes:
# Q_FLAGS2 (0), Q_SQL_MODE (1), Q_AUTO_INCREMENT (3) fixed; Q_CATALOG (2) and Q_CATALOG_NZ (6) length-prefixed
_STATUS_SIZES = {0: 4, 1: 8, 3: 4}


def client_charset(status: bytes) -> int | None:
    """The client's character set (a collation id) from a QUERY event's status variables; None when the
    event has none; ValueError when a variable this cannot step over comes first."""
    p = 0
    while p < len(status):
        code = status[p]
        p += 1
        if code == 4:  # Q_CHARSET_CODE: character_set_client, collation_connection, collation_server
            return int.from_bytes(status[p : p + 2], "little")
        if code in _STATUS_SIZES:
            p += _STATUS_SIZES[code]
        elif code == 2:
            p += 1 + status[p] + 1  # length, name, NUL
        elif code == 6:
            p += 1 + status[p]  # length, name
        else:
            raise ValueError(f"its status variable {code} before the client character set is unknown")
    return None


def statement_text(query: bytes, status: bytes) -> str:
    """A statement's text, decoded in the character set its client sent it in: exactly or not at all
    (ValueError naming the charset and the byte)."""
    if query.isascii():
        return query.decode("ascii")
    charset_id = client_charset(status)
    if charset_id is None:
        name = "utf8mb4"  # no charset recorded: the server's own
    else:
        try:
            name = pymysql.charset.charset_by_id(charset_id).name
        except KeyError:
            raise ValueError(f"the statement's client character set (id {charset_id}) is unknown") from None
    try:
        codec = values.codec_of(name, None)
    except ValueError:
        codec = "binary"
    if codec == "binary":
        raise ValueError(f"the statement's client character set {name} has no exact decoder")
    try:
        return values.decode_text(query, codec)
    except UnicodeDecodeError as exc:
        raise ValueError(f"the statement is not valid {name}: {exc.reason} at byte {exc.start}") from None


def uncompress(record: bytes) -> bytes:
    """A MariaDB compressed record (log_bin_compress=ON: the statement of a QUERY_COMPRESSED_EVENT, the row
    images of a ROWS_COMPRESSED event): a header byte `0x80 | algorithm << 4 | n` (algorithm 0: zlib),
    the uncompressed length in `n` big-endian bytes, then the zlib stream. ValueError when it is not one."""
    if not record:
        raise ValueError("empty compressed record")
    head = record[0]
    n = head & 0x07
    if head & 0x80 == 0 or (head >> 4) & 0x07 != 0 or not 1 <= n <= 4:
        raise ValueError(f"not a zlib-compressed record (header byte {head:#04x})")
    size = int.from_bytes(record[1 : 1 + n], "big")
    try:
        out = zlib.decompress(record[1 + n :])
    except zlib.error as exc:
        raise ValueError(f"corrupt compressed record: {exc}") from None
    if len(out) != size:
        raise ValueError(f"compressed record holds {len(out)} bytes, its header says {size}")
    return out


#: MariaDB's compressed column types in a TABLE_MAP event (MYSQL_TYPE_BLOB_COMPRESSED = 140,
#: MYSQL_TYPE_VARCHAR_COMPRESSED = 141) -> the plain type whose metadata and row image layout they share (a
#: length prefix, then the value as `values.uncompress_column` reads it; a VARCHAR's maximum length counts
#: the header byte)
COMPRESSED_TYPES = {140: 252, 141: 15}
_SET_STR_VALUE, _ENUM_STR_VALUE = 5, 6  # optional metadata fields of a TABLE_MAP event


def table_map_extras(ev: RawEvent) -> tuple[int, bytes, list[tuple[bytes, ...]], list[tuple[bytes, ...]]]:
    """(position of the column types in `ev.data`, the column type bytes, the member names of each ENUM
    column and of each SET column, as bytes: the event writes them in the column's charset) of a TABLE_MAP
    event. python-mysql-replication decodes member names as UTF-8 and puts "" where that fails."""
    data, end = ev.data, ev.end
    p = HEADER + 8
    p += data[p] + 2  # schema name, its length byte and NUL
    p += data[p] + 2  # table name
    ncols, p = read_lenenc(data, p)
    start, types = p, bytes(data[p : p + ncols])
    meta_len, p = read_lenenc(data, p + ncols)
    p += meta_len + (ncols + 7) // 8  # the metadata block and the NULL bitmap
    enums: list[tuple[bytes, ...]] = []
    sets: list[tuple[bytes, ...]] = []
    while p < end:  # optional metadata: type, length, value
        field = data[p]
        length, p = read_lenenc(data, p + 1)
        stop = p + length
        if field in (_SET_STR_VALUE, _ENUM_STR_VALUE):
            while p < stop:
                count, p = read_lenenc(data, p)
                names = []
                for _ in range(count):
                    n, p = read_lenenc(data, p)
                    names.append(bytes(data[p : p + n]))
                    p += n
                (sets if field == _SET_STR_VALUE else enums).append(tuple(names))
        p = stop
    return start, types, enums, sets


def mysql_gtid(ev: RawEvent) -> str:
    data = ev.data
    h = data[HEADER + 1 : HEADER + 17].hex()
    gno = int.from_bytes(data[HEADER + 17 : HEADER + 25], "little")
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}:{gno}"


_MARIADB_GTID = struct.Struct("<QIB").unpack_from


def mariadb_gtid(ev: RawEvent) -> tuple[str, int]:
    """(GTID `domain-server-seq`, flags) of a MariaDB GTID event."""
    seq, domain, flags = _MARIADB_GTID(ev.data, HEADER)
    return f"{domain}-{ev.server_id}-{seq}", flags


_ROWS_HEAD = struct.Struct("<IHH").unpack_from  # a rows event's table id (6 bytes) and flags


def rows_body(ev: RawEvent) -> tuple[int, int, int, bytes, bytes | None, int]:
    """(table id, flags, column count, present bitmap, second bitmap (updates) or None, position of the
    first row image) of a ROWS event."""
    data = ev.data
    low, high, flags = _ROWS_HEAD(data, HEADER)
    table_id = low | high << 32
    p = HEADER + 8
    if ev.type in ROWS_V2:
        p += data[p] | data[p + 1] << 8  # the extra header's length
    ncols = data[p]
    if ncols < 251:
        p += 1
    else:
        ncols, p = read_lenenc(data, p)
    nbytes = (ncols + 7) // 8
    bitmap = data[p : p + nbytes]
    p += nbytes
    bitmap2 = None
    if ev.type in ROWS_UPDATE:
        bitmap2 = data[p : p + nbytes]
        p += nbytes
    return table_id, flags, ncols, bitmap, bitmap2, p


def rotate(ev: RawEvent) -> tuple[str, int]:
    """(next binlog file, position) of a ROTATE event."""
    position = int.from_bytes(ev.data[HEADER : HEADER + 8], "little")
    return ev.data[HEADER + 8 : ev.end].decode(), position


class _StreamLost(Exception):
    """The binlog connection dropped (the stream resumes from its checkpoint on a new connection)."""


class _Control:
    """What `TableMapEvent` asks of python-mysql-replication's control connection: the charset and which
    server kind it is (the stream reads column names itself, so no query is ever sent)."""

    charset = "utf8"

    def __init__(self, mariadb: bool) -> None:
        self.dbms = "mariadb" if mariadb else "mysql"

    def _get_dbms(self) -> str:
        return self.dbms


class Replica:
    """One binlog connection, from `file:offset` or (with `gtid`) from a GTID set; `fetch` connects on
    first use. `settings` are pymysql.connect keyword arguments; `identity` is the host name the replica
    registers with (SHOW SLAVE HOSTS)."""

    def __init__(self, settings: dict[str, Any], server_id: int, identity: str, heartbeat: float, file: str = "",
                 offset: int = 4, gtid: str | None = None, mariadb: bool = True,
                 row_metadata: bool = True) -> None:
        self.settings = dict(settings)
        self.settings.setdefault("charset", "utf8")
        self.server_id = server_id
        self.identity = identity
        self.heartbeat = heartbeat
        self.file, self.offset, self.gtid = file, offset, gtid
        self.mariadb = mariadb
        self.row_metadata = row_metadata
        self.connection: pymysql.connections.Connection | None = None
        self.checksum = False
        self.closed = False
        self._control = _Control(mariadb)
        self._rbuf = b""  # bytes of the dump read ahead, from `_rpos` on
        self._rpos = 0
        self._seq = 0  # the sequence number of the next packet
        #: events framed already from the bytes read ahead, handed out first (a stream's read loop takes them
        #: itself: no call per event)
        self.ahead: deque[RawEvent] = deque()

    # ------------------------------------------------------------------ session
    def _query(self, sql: str, args: Any = None) -> Any:
        assert self.connection is not None
        with self.connection.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchone()

    def _send(self, packet: bytes) -> None:
        """A command packet (its 4-byte header included) as the first of a new command."""
        assert self.connection is not None
        self.connection._write_bytes(packet)
        self.connection._next_seq_id = 1

    def connect(self) -> None:
        if self.closed:
            raise _StreamLost("binlog connection closed")
        self.connection = pymysql.connect(**self.settings)
        row = self._query("SHOW GLOBAL VARIABLES LIKE 'BINLOG_CHECKSUM'")
        self.checksum = row is not None and row[1] != "NONE"
        if self.checksum:  # tell the server this replica understands event checksums
            self._query("SET @master_binlog_checksum= @@global.binlog_checksum")
        net_timeout = float(self.settings.get("read_timeout") or 4294967)
        period = min(net_timeout / 2.0, self.heartbeat, 4294967)
        self._query("SET @master_heartbeat_period = %s", (int(period * 1_000_000_000),))
        # MariaDB: a capability below 4 makes a MariaDB 10.6 server replace GTID events (we read them)
        self._query("SET @mariadb_slave_capability=4")
        self._send(ReportSlave((self.identity, "", "", 0)).encoded(self.server_id))
        self.connection._read_packet()
        if self.gtid is None:
            name = self.file.encode()
            self._send(struct.pack("<i", len(name) + 11) + bytes([COM_BINLOG_DUMP])
                       + struct.pack("<IHI", self.offset, 0, self.server_id) + name)
        elif self.mariadb:
            self._query("SET @slave_connect_state = %s", (self.gtid,))
            self._query("SET @slave_gtid_strict_mode=1")
            self._query("SET @slave_gtid_ignore_duplicates=0")
            self._send(struct.pack("<i", 15) + bytes([COM_BINLOG_DUMP])
                       + struct.pack("<iHI", 4, 0, self.server_id) + b"\0\0\0\0")  # no file: the GTID state says where
        else:  # MySQL auto-position: the server sends every transaction not in the executed set
            self._send(dump_gtid_packet(GtidSet.parse(self.gtid), self.server_id))
        self._rbuf, self._rpos, self._seq = b"", 0, self.connection._next_seq_id
        self.ahead.clear()

    def thread_id(self) -> int | None:
        """The server's id of this connection (KILL), None before it connected."""
        return None if self.connection is None else self.connection.thread_id()

    # ------------------------------------------------------------------ events
    def fetch(self) -> RawEvent | None:
        """The next event, of any type (blocks until one comes; heartbeats come every `heartbeat` seconds
        without events); None when the server ended the stream."""
        if self.ahead:
            return self.ahead.popleft()
        if self.connection is None:
            self.connect()
        while True:
            data = self._packet()  # the first packet read ahead, or read from the socket
            head = data[0]
            if head == 0 and len(data) >= 7:
                event = RawEvent(None, data, self.checksum)
                if len(self._rbuf) - self._rpos >= 4:
                    self._frame_ahead()
                return event
            if head == 0xFF:
                self._error(data)
            if head == 0xFE and len(data) < 9:  # EOF: the server ended the dump
                self.close()
                return None

    def _frame_ahead(self) -> None:
        """The events whose packets were read ahead whole, framed into `ahead` (one call per read of the socket
        instead of one per event: a one-row transaction is 4 events); stops at any other packet (an error, the
        end of the dump, a packet of 16 MiB or more, a sequence number out of order), which `fetch` reads."""
        buf, pos, seq, checksum = self._rbuf, self._rpos, self._seq, self.checksum
        have = len(buf)
        append = self.ahead.append
        while have - pos >= 4:
            size = buf[pos] | buf[pos + 1] << 8 | buf[pos + 2] << 16
            stop = pos + 4 + size
            if stop > have or buf[pos + 3] != seq or size >= MAX_PACKET_LEN or size < 7 or buf[pos + 4] != 0:
                break
            append(RawEvent(None, buf[pos + 4 : stop], checksum))
            pos = stop
            seq = (seq + 1) & 255
        self._rpos, self._seq = pos, seq

    # ------------------------------------------------------------------ packets
    def _packet(self) -> bytes:
        """The next packet's payload, as pymysql's `_read_packet` reads it (same read timeout, sequence check,
        joining of 16 MiB parts, connection-lost errors), from bytes read ahead in chunks (`_fill`): the
        connection's reads are this replica's own once the dump started."""
        conn = self.connection
        assert conn is not None
        parts = []
        while True:
            self._fill(4)
            buf, pos = self._rbuf, self._rpos
            size = buf[pos] | buf[pos + 1] << 8 | buf[pos + 2] << 16
            seq = buf[pos + 3]
            if seq != self._seq:
                conn._force_close()
                self.close()
                if seq == 0:  # MariaDB sends an error packet with sequence number 0 when it shuts down
                    raise _StreamLost("binlog connection lost")
                raise pymysql.err.InternalError(f"Packet sequence number wrong - got {seq} expected {self._seq}")
            self._seq = (seq + 1) & 255
            self._rpos = pos + 4
            self._fill(size)
            pos = self._rpos
            parts.append(self._rbuf[pos : pos + size])
            self._rpos = pos + size
            if size < MAX_PACKET_LEN:
                return parts[0] if len(parts) == 1 else b"".join(parts)

    def _fill(self, need: int) -> None:
        """At least `need` bytes read ahead (a read of the socket returns what has come, up to READ_AHEAD)."""
        have = len(self._rbuf) - self._rpos
        if have >= need:
            return
        conn = self.connection
        assert conn is not None
        if conn._current_timeout != conn._read_timeout:
            conn._sock.settimeout(conn._read_timeout)
            conn._current_timeout = conn._read_timeout
        chunks = [self._rbuf[self._rpos :]]
        read = conn._rfile.read1
        while have < need:
            try:
                got = read(max(READ_AHEAD, need - have))
            except InterruptedError:
                continue
            except OSError as exc:
                self._lost(exc)
            except BaseException:
                conn._force_close()
                raise
            if not got:
                self._lost(None)
            chunks.append(got)
            have += len(got)
        self._rbuf = b"".join(chunks)
        self._rpos = 0

    def _lost(self, exc: BaseException | None) -> None:
        """The connection dropped (as pymysql's CR_SERVER_LOST: a socket error, a read timeout, or the server
        closed it)."""
        if self.connection is not None:
            self.connection._force_close()
        self.close()
        raise _StreamLost("binlog connection lost") from exc

    def _error(self, data: bytes) -> None:
        """An error packet of the server (a binlog it cannot send, another replica with our server_id, ...):
        raised as pymysql raises it."""
        try:
            pymysql.protocol.MysqlPacket(data, "utf8").raise_for_error()
        except pymysql.OperationalError as exc:
            if exc.args and exc.args[0] in CONNECTION_LOST:
                self.close()
                raise _StreamLost("binlog connection lost") from exc
            raise

    def ready(self) -> bool:
        """Whether the server has sent more already (`fetch` would not wait for it): bytes read ahead (`_fill`)
        or on the socket."""
        if self.ahead or len(self._rbuf) > self._rpos:
            return True
        sock = None if self.connection is None else self.connection._sock
        if sock is None:
            return True
        pending = getattr(sock, "pending", None)  # TLS: bytes decrypted already
        return bool(pending and pending()) or bool(select.select((sock,), (), (), 0)[0])

    def table_map_event(self, raw: RawEvent) -> TableMapEvent:
        """python-mysql-replication's parse of a TABLE_MAP event (column types, metadata, names). MariaDB's
        compressed column types are parsed as the plain types they share their metadata with (see
        `table_map_extras` for which columns they are). It reads the optional metadata up to 4 bytes before the
        end, where the CRC is: without checksums (binlog_checksum=NONE) the event gets 4 bytes more, else its
        last field (a primary key, 3 bytes) would be dropped."""
        pkt = raw.pkt if raw.pkt is not None else pymysql.protocol.MysqlPacket(raw.data, "utf8")
        start, types, _, _ = table_map_extras(raw)
        has_trailer = raw.end == len(raw.data) - 4
        if any(t in COMPRESSED_TYPES for t in types) or not has_trailer:
            data = bytearray(raw.data)
            data[start : start + len(types)] = bytes(COMPRESSED_TYPES.get(t, t) for t in types)
            pkt = pymysql.protocol.MysqlPacket(bytes(data) + (b"" if has_trailer else b"\0\0\0\0"), "utf8")
        wrapped = BinLogPacketWrapper(
            pkt, {}, self._control, (0, 0, 0), self.checksum, frozenset((TableMapEvent,)), None, None, None,
            None, False, False, False, self.row_metadata, False, False, None,
        )
        return wrapped.event

    def close(self) -> None:
        self.closed = True
        if self.connection is not None:
            try:
                self.connection.close()
            except Exception:  # noqa: BLE001 - already broken
                pass
            self.connection = None
