"""The replica's framing of the dump's packets (`Replica.fetch`, `Replica.ahead`): every whole event packet of the
bytes read ahead is handed out in order, and a packet that is no event (the server's error, the end of the dump)
or is not all there yet stops the framing, so `fetch` answers it as a packet read alone. The packets are built
here by the MySQL client/server protocol (3-byte length, sequence number, payload: OK byte + 19-byte event
header + body + CRC32), not by the code under test."""

from __future__ import annotations

import struct
import zlib
from typing import Any

import pymysql
import pytest

from dbus_ray.mysql import replica as rp

XID_EVENT = 16


def event_payload(log_pos: int, body: bytes = b"\1\0\0\0\0\0\0\0") -> bytes:
    header = struct.pack("<IBIII", 1_700_000_000, XID_EVENT, 1, 19 + len(body) + 4, log_pos) + b"\0\0"
    event = header + body
    return b"\0" + event + struct.pack("<I", zlib.crc32(event))


def packet(seq: int, payload: bytes) -> bytes:
    return struct.pack("<I", len(payload))[:3] + bytes([seq]) + payload


class Socketless:
    """The few parts of a pymysql connection the replica uses once the dump started; reading the socket
    (`_rfile.read1`) hands out `chunks` in turn."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self._current_timeout = self._read_timeout = 10.0
        self._rfile = self
        self.closed = False

    def read1(self, n: int) -> bytes:
        return self.chunks.pop(0) if self.chunks else b""

    def _force_close(self) -> None:
        self.closed = True

    def close(self) -> None:
        self.closed = True


def replica(buffered: bytes, chunks: list[bytes] | None = None) -> rp.Replica:
    r = rp.Replica({}, 1, "test", 1.0)
    r.connection = Socketless(chunks or [])  # type: ignore[assignment]
    r.checksum = True
    r._rbuf, r._rpos, r._seq = buffered, 0, 1
    return r


def positions(events: list[Any]) -> list[int]:
    return [e.log_pos for e in events]


def test_the_whole_event_packets_read_ahead_come_in_order_and_the_end_of_the_dump_after_them() -> None:
    eof = b"\xfe\0\0\2\0"
    r = replica(packet(1, event_payload(100)) + packet(2, event_payload(200)) + packet(3, event_payload(300))
                + packet(4, eof))
    first = r.fetch()
    assert first is not None and first.log_pos == 100 and first.type == XID_EVENT
    assert positions(list(r.ahead)) == [200, 300]  # framed at once; the EOF packet left for `fetch`
    assert r.ready()
    assert positions([r.fetch(), r.fetch()]) == [200, 300]
    assert r.fetch() is None  # the end of the dump
    assert r.closed


def test_an_error_packet_after_events_is_raised_after_them() -> None:
    error = b"\xff" + struct.pack("<H", 1236) + b"#HY000" + b"Could not find first log file name in binary log"
    r = replica(packet(1, event_payload(100)) + packet(2, event_payload(200)) + packet(3, error))
    assert positions([r.fetch(), r.fetch()]) == [100, 200]
    with pytest.raises(pymysql.err.OperationalError) as exc:
        r.fetch()
    assert exc.value.args[0] == 1236


def test_an_event_split_across_reads_of_the_socket_is_joined() -> None:
    second = packet(2, event_payload(200))
    r = replica(packet(1, event_payload(100)) + second[:10], chunks=[second[10:], packet(3, event_payload(300))])
    assert r.fetch().log_pos == 100  # type: ignore[union-attr]
    assert not r.ahead  # the second packet is not all there: not framed
    assert positions([r.fetch(), r.fetch()]) == [200, 300]


def test_a_sequence_number_out_of_order_is_not_framed_ahead_but_refused() -> None:
    r = replica(packet(1, event_payload(100)) + packet(7, event_payload(200)))
    assert r.fetch().log_pos == 100  # type: ignore[union-attr]
    assert not r.ahead
    with pytest.raises(pymysql.err.InternalError, match="Packet sequence number wrong - got 7 expected 2"):
        r.fetch()
