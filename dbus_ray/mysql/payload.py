"""MySQL 8 TRANSACTION_PAYLOAD_EVENT (type 40, `binlog_transaction_compression=ON`): one transaction's events
(BEGIN, TABLE_MAP, ROWS..., XID) compressed into one event after its GTID event.

Body (`libs/mysql/binlog/event/codecs/binary.cpp`, Transaction_payload::encode): a header of fields, each a
packed type, a packed length and a packed value (`net_store_length`): compression type (2; 0 zstd, 255 none),
uncompressed size (3), payload size (1), unknown types skipped by their length, ended by type 0; then the
payload: the inner events back to back, each with its common header and no checksum.

`inner_events` hands the inner events out as `RawEvent`s the stream handles like any other, with `log_pos` 0:
their position is the payload event's (a row inside a payload is addressed by its transaction's start and its
index in the transaction, as every row is: see `dbus_ray.mysql.offset`). Each inner event gets a CRC32 trailer
(and its size counts it), the form python-mysql-replication's TABLE_MAP parser expects.
"""

from __future__ import annotations

import io
import struct
import zlib

import pymysql.protocol

from dbus_ray.mysql.replica import HEADER, RawEvent, read_lenenc

ZSTD, NONE = 0, 255
_HEADER_LEN = 19
MAX_UNCOMPRESSED = 1 << 30  # MySQL's max_log_event_size: no payload holds more


def payload_parts(body: bytes) -> tuple[int, int, bytes]:
    """(compression type, uncompressed size or -1, payload bytes) of a TRANSACTION_PAYLOAD_EVENT body (its
    bytes after the common header, without checksum). ValueError when it is not one."""
    pos = 0
    ctype = size = None
    uncompressed = -1
    while True:
        if pos >= len(body):
            raise ValueError("transaction payload header has no end mark")
        kind, pos = read_lenenc(body, pos)
        if kind == 0:
            break
        length, pos = read_lenenc(body, pos)
        if kind in (1, 2, 3):
            value, after = read_lenenc(body, pos)
            if kind == 1:
                size = value
            elif kind == 2:
                ctype = value
            else:
                uncompressed = value
            pos = after
        else:
            pos += length
    if size is None or ctype is None:
        raise ValueError("transaction payload header lacks the payload size or the compression type")
    if pos + size != len(body):
        raise ValueError(f"transaction payload of {len(body) - pos} bytes, its header says {size}")
    return ctype, uncompressed, body[pos:]


def decompress(ctype: int, uncompressed: int, payload: bytes) -> bytes:
    if ctype == NONE:
        return payload
    if ctype != ZSTD:
        raise ValueError(f"transaction payload compressed with unknown algorithm {ctype} (MySQL knows 0 zstd)")
    import zstandard

    limit = uncompressed if 0 <= uncompressed <= MAX_UNCOMPRESSED else MAX_UNCOMPRESSED
    try:  # streamed: a frame without its content size, or several frames, decode too
        with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(payload), read_across_frames=True) as reader:
            out = reader.read(limit + 1)
    except zstandard.ZstdError as exc:
        raise ValueError(f"corrupt zstd transaction payload: {exc}") from None
    if len(out) > limit:
        raise ValueError(f"transaction payload holds more than {limit} bytes")
    if uncompressed >= 0 and len(out) != uncompressed:
        raise ValueError(f"transaction payload holds {len(out)} bytes, its header says {uncompressed}")
    return out


def inner_events(ev: RawEvent) -> list[RawEvent]:
    """The events inside a TRANSACTION_PAYLOAD_EVENT, in order. ValueError when the payload is corrupt."""
    ctype, uncompressed, payload = payload_parts(bytes(ev.data[HEADER : ev.end]))
    events = decompress(ctype, uncompressed, payload)
    out = []
    pos = 0
    while pos < len(events):
        if pos + _HEADER_LEN > len(events):
            raise ValueError(f"transaction payload: an event header cut at byte {pos} of {len(events)}")
        size = struct.unpack_from("<I", events, pos + 9)[0]
        if size < _HEADER_LEN or pos + size > len(events):
            raise ValueError(f"transaction payload: an event of {size} bytes at byte {pos} of {len(events)}")
        raw = bytearray(events[pos : pos + size])
        raw[9:13] = struct.pack("<I", size + 4)
        raw[13:17] = b"\0\0\0\0"  # log_pos: the payload event's position stands for it
        raw += struct.pack("<I", zlib.crc32(raw))
        data = b"\0" + bytes(raw)
        inner = RawEvent(pymysql.protocol.MysqlPacket(data, "utf8"), data, True)
        out.append(inner)
        pos += size
    return out
