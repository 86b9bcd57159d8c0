"""The ceiling of a binlog reader: how fast the server's dump connection hands out a binlog range when
nothing is decoded.

A replica session as the `mysql` source opens it (`dbus_ray.mysql.replica.Replica`: checksum,
COM_REGISTER_SLAVE), then COM_BINLOG_DUMP from the range's start with the BINLOG_DUMP_NON_BLOCK flag: the
server sends every event up to the end of its binlog, then an EOF packet and closes the dump. The range
must end at the end of the binlog (the caller measures right after writing it). MariaDB leaves out what a
replica did not ask for (ANNOTATE_ROWS events, the statement text of each INSERT), as it does for our
reader, so the bytes sent are fewer than the range's bytes in the file.
- `raw`: the socket's bytes read in 1 MiB chunks and counted, no framing at all, until the server
  closes the dump;
- `framed`: the same through pymysql's packet reader (`_read_packet`, what our reader's loop is built on):
  every packet framed, nothing parsed, until the EOF packet.

`bytes_per_s`: the bytes sent over the seconds from sending the dump command to the last byte;
`rows_per_s`: the range's rows over the same seconds: the rows/s no reader of this connection can pass.
Best of `repeat` runs each.
"""

from __future__ import annotations

import struct
import time
from typing import Any

import pymysql
from pymysql.constants.COMMAND import COM_BINLOG_DUMP

from dbus_ray.mysql.replica import Replica

BINLOG_DUMP_NON_BLOCK = 1


def _session(mariadb: Any, file: str, offset: int, server_id: int) -> Any:
    """A pymysql connection that is a registered replica and has sent COM_BINLOG_DUMP (non-blocking)."""
    from pymysqlreplication.binlogstream import ReportSlave

    replica = Replica(mariadb.connection_settings(), server_id, "dbus-bench-ceiling", 30.0, file, offset)
    replica.connection = conn = pymysql.connect(**replica.settings)
    row = replica._query("SHOW GLOBAL VARIABLES LIKE 'BINLOG_CHECKSUM'")
    if row is not None and row[1] != "NONE":
        replica._query("SET @master_binlog_checksum= @@global.binlog_checksum")
    replica._query("SET @mariadb_slave_capability=4")
    replica._send(ReportSlave((replica.identity, "", "", 0)).encoded(server_id))
    conn._read_packet()
    name = file.encode()
    replica._send(struct.pack("<i", len(name) + 11) + bytes([COM_BINLOG_DUMP])
                  + struct.pack("<IHI", offset, BINLOG_DUMP_NON_BLOCK, server_id) + name)
    return replica


def raw_seconds(mariadb: Any, file: str, start: int, server_id: int) -> tuple[float, int]:
    """(seconds, bytes) of the dump read from the socket without framing."""
    replica = _session(mariadb, file, start, server_id)
    conn = replica.connection
    t0 = time.monotonic()
    got = 0
    try:
        read = conn._rfile.read1
        while True:
            chunk = read(1 << 20)
            if not chunk:
                return time.monotonic() - t0, got
            got += len(chunk)
    finally:
        replica.close()


def framed_seconds(mariadb: Any, file: str, start: int, server_id: int) -> tuple[float, int]:
    """(seconds, bytes of the packets) of the dump read packet by packet with pymysql."""
    replica = _session(mariadb, file, start, server_id)
    conn = replica.connection
    t0 = time.monotonic()
    got = 0
    try:
        while True:
            pkt = conn._read_packet()
            got += len(pkt._data) + 4
            if pkt.is_eof_packet():
                return time.monotonic() - t0, got
    finally:
        replica.close()


def ceiling(mariadb: Any, start: tuple[str, int], rows: int, repeat: int = 2, server_id: int = 8501
            ) -> dict[str, Any]:
    """The dump connection's rate from `start` to the end of the binlog, a range holding `rows` rows."""
    file, begin = start
    raw, size = min(raw_seconds(mariadb, file, begin, server_id) for _ in range(repeat))
    framed, _ = min(framed_seconds(mariadb, file, begin, server_id) for _ in range(repeat))
    return {
        "bytes_sent": size,
        "rows": rows,
        "raw_bytes_per_s": round(size / raw),
        "raw_rows_per_s": round(rows / raw),
        "framed_bytes_per_s": round(size / framed),
        "framed_rows_per_s": round(rows / framed),
    }
