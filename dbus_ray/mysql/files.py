"""Binlog files read from disk (archived binlogs, backups, files downloaded from a managed service) as the
events of the `mysql` source's stream (`dbus_ray.mysql.streaming.BinlogStream`, given `FileReader` as its
`reader`): the same decoding, row model and `{"file", "offset", ...}` positions as a replica connection.

`BinlogFiles` lists the files of a directory (names ending in `.NNNNNN`, like `binlog.000042`) or a glob, in
binlog order. `FileReader` hands out their events the way a server's binlog dump does: a ROTATE event (time 0)
naming each file as it starts, then the file's events from its FORMAT_DESCRIPTION on; the file's checksum
setting comes from its FORMAT_DESCRIPTION event and every event's CRC32 is checked. After a file's ROTATE or
STOP event (or its end, when a later file exists) comes the next file, which must be the next number: a gap
between files is an error. At the end of the last file it hands out a heartbeat (the stream is idle: caught
up); with `follow` it first waits up to `WAIT_SECONDS` for the file to grow or the next file to appear.

Bad input is one DbusError line naming the file and offset: no file matches, a file that is not a binlog
(no magic, no FORMAT_DESCRIPTION), an offset that is not an event boundary, a corrupt event (bad size or
checksum), an encrypted file, a torn last event when not following (a file copied while the server wrote
it), a gap between files.
"""

from __future__ import annotations

import glob
import os
import re
import struct
import time
import zlib
from collections import deque
from dataclasses import dataclass
from typing import Any, BinaryIO

import pymysql.protocol

from dbus_ray.errors import DbusError
from dbus_ray.mysql import replica as rp
from dbus_ray.mysql.offset import binlog_index

MAGIC = b"\xfebin"
EVENT_HEADER = 19
STOP_EVENT, ROTATE_EVENT, FORMAT_DESCRIPTION_EVENT, TABLE_MAP_EVENT = 3, 4, 15, 19
HEARTBEAT_EVENT = 27
MARIADB_GTID_EVENT, GTID_LIST_EVENT = 162, 163
START_ENCRYPTION_EVENT = 164
IN_USE_FLAG = 0x1  # LOG_EVENT_BINLOG_IN_USE_F of a FORMAT_DESCRIPTION event: the file is open for writing
WAIT_SECONDS = 0.25  # with `follow`, how long a read at the end waits for more before saying it is idle
_POLL_SECONDS = 0.02
_NAME_RE = re.compile(r"\.\d+$")
_HEADER = struct.Struct("<IBIII")


@dataclass(frozen=True)
class FileHeader:
    """What a binlog file's FORMAT_DESCRIPTION event says."""

    server_version: str
    server_id: int
    created: int  # the event's time (unix seconds)
    checksum: bool  # events end with a CRC32
    end: int  # the position after the FORMAT_DESCRIPTION event

    @property
    def mariadb(self) -> bool:
        return "mariadb" in self.server_version.lower()


class BinlogFiles:
    """The binlog files of `pattern`: a directory (its files named `NAME.NNNNNN`) or a glob of files."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern

    def paths(self) -> list[str]:
        """The files now, in binlog order (by their number)."""
        pattern = os.path.expanduser(self.pattern)
        found = glob.glob(os.path.join(pattern, "*")) if os.path.isdir(pattern) else glob.glob(pattern)
        files = [p for p in found if _NAME_RE.search(p) and os.path.isfile(p)]
        return sorted(files, key=lambda p: (binlog_index(p), os.path.basename(p)))

    def listing(self, need: bool = True) -> dict[str, str]:
        """File name -> path, in binlog order; with `need`, a DbusError when nothing matches or two files of one
        number differ in name."""
        out: dict[str, str] = {}
        for path in self.paths():
            name = os.path.basename(path)
            if name in out:
                raise DbusError(f"binlog files {self.pattern}: {name} is both {out[name]} and {path}")
            out[name] = path
        if need and not out:
            raise DbusError(f"binlog files {self.pattern}: no binlog file matches (expected files named like "
                            "binlog.000042 in that directory, or a glob of them)")
        bases = {_NAME_RE.sub("", n) for n in out}
        if len(bases) > 1:
            raise DbusError(f"binlog files {self.pattern}: files of several binlogs ({', '.join(sorted(bases))}): "
                            "give a glob that matches one")
        return out

    def check_gaps(self, start: str) -> None:
        """The files from `start` on are numbered without a gap (a missing file would lose its rows)."""
        names = [n for n in self.listing() if binlog_index(n) >= binlog_index(start)]
        for a, b in zip(names, names[1:], strict=False):
            if binlog_index(b) != binlog_index(a) + 1:
                raise DbusError(f"binlog files {self.pattern}: {b} follows {a}: the file(s) between them are missing "
                                "(their rows would be lost)")


class ShortHeader(DbusError):
    """A binlog file that ends before its FORMAT_DESCRIPTION event does (one being written, with `follow`)."""


def successor(name: str) -> str:
    """The name of the binlog file after `name` (`binlog.000009` -> `binlog.000010`)."""
    digits = name.rsplit(".", 1)[1]
    return f"{name.rsplit('.', 1)[0]}.{int(digits) + 1:0{len(digits)}d}"


def read_header(path: str, fh: BinaryIO) -> FileHeader:
    """The magic and the FORMAT_DESCRIPTION event of an open binlog file; a DbusError naming the file otherwise."""
    name = os.path.basename(path)
    fh.seek(0)
    head = fh.read(4)
    if len(head) < 4:
        raise ShortHeader(f"binlog {name}:0: the file ends before its binlog magic bytes: {path}")
    if head != MAGIC:
        raise DbusError(f"binlog {name}:0: not a binlog file (it does not start with the binlog magic bytes "
                        f"fe 62 69 6e): {path}")
    raw = fh.read(EVENT_HEADER)
    if len(raw) < EVENT_HEADER:
        raise ShortHeader(f"binlog {name}:4: the file ends before its FORMAT_DESCRIPTION event: {path}")
    ts, typ, server_id, size, _end = _HEADER.unpack_from(raw)
    if typ != FORMAT_DESCRIPTION_EVENT or not EVENT_HEADER + 57 <= size <= 4096:
        raise DbusError(f"binlog {name}:4: no FORMAT_DESCRIPTION event (type {typ}, size {size}): not a binlog "
                        f"v4 file (MySQL 5.0 or later, MariaDB): {path}")
    body = fh.read(size - EVENT_HEADER)
    if len(body) < size - EVENT_HEADER:
        raise ShortHeader(f"binlog {name}:4: the file ends inside its FORMAT_DESCRIPTION event: {path}")
    try:
        version = body[2:52].split(b"\0", 1)[0].decode("ascii")
    except UnicodeDecodeError:
        raise DbusError(f"binlog {name}:4: the FORMAT_DESCRIPTION event's server version is not ASCII: not a "
                        f"binlog file: {path}") from None
    event = raw + body
    # with checksums on, the event ends with the algorithm byte (1: CRC32) and the CRC32 of all before it, computed
    # without the flag LOG_EVENT_BINLOG_IN_USE_F (set while the server writes the file, cleared when it closes it)
    unflagged = event[:17] + bytes([event[17] & ~IN_USE_FLAG]) + event[18:-4]
    checksum = event[-5] == 1 and zlib.crc32(unflagged) == int.from_bytes(event[-4:], "little")
    return FileHeader(version, server_id, ts, checksum, 4 + size)


def _made_up(typ: int, body: bytes, ts: int = 0, server_id: int = 0) -> rp.RawEvent:
    """A made-up event (no checksum): the ROTATE naming a file as it starts, or an idle heartbeat."""
    data = b"\0" + _HEADER.pack(ts, typ, server_id, EVENT_HEADER + len(body), 0) + b"\0\0" + body
    return rp.RawEvent(None, data, False)


class FileReader:
    """The events of binlog files from `file:offset` on (the stream's `replica` for files; see the module)."""

    def __init__(self, files: BinlogFiles, file: str, offset: int, follow: bool, what: str = "start") -> None:
        self.files = files
        self.follow = follow
        self.fh: BinaryIO | None = None
        self.path = ""
        self.name = file
        self.pos = offset
        self.header: FileHeader | None = None
        self.next_name: str | None = None  # the file a ROTATE named (or the next number after a STOP)
        self.checksum = False
        self.ahead: deque[rp.RawEvent] = deque()  # events to hand out first (made up, or peeked at open)
        self.at_end = False  # not following, and the end of the last file was reached
        self._tables = rp.Replica({}, 0, "", 0.0)  # parses TABLE_MAP events (never connects)
        listing = files.listing()
        if file not in listing:
            first, last = next(iter(listing)), list(listing)[-1]
            if file == successor(last) and offset == 4:
                self.next_name = file  # the file after the last one: not written yet
                return
            raise DbusError(f"binlog {file}:{offset} ({what}) is not among the binlog files {files.pattern} "
                            f"({first} .. {last})")
        files.check_gaps(file)
        self._open(listing[file], offset, what)

    # ------------------------------------------------------------------ files
    def _open(self, path: str, offset: int, what: str) -> None:
        self.close_file()
        try:
            fh = open(path, "rb")  # noqa: SIM115 - kept open while its events are read
        except OSError as exc:
            raise DbusError(f"binlog file {path}: cannot open it: {exc.strerror}") from None
        self.fh, self.path, self.name = fh, path, os.path.basename(path)
        header = self.header = read_header(path, fh)
        self._tables = rp.Replica({}, 0, "", 0.0, mariadb=header.mariadb)
        self.checksum = self._tables.checksum = header.checksum
        self.next_name = None
        if offset != 4:
            self._seek_event(offset, what)
        self.pos = offset
        self.ahead.append(_made_up(ROTATE_EVENT, struct.pack("<Q", offset) + self.name.encode()))

    def _seek_event(self, offset: int, what: str) -> None:
        """Check that `offset` is an event boundary (walking the event headers from the start of the file)."""
        assert self.fh is not None and self.header is not None
        size = os.fstat(self.fh.fileno()).st_size
        if offset > size:
            raise DbusError(f"binlog {self.name}:{offset} ({what}) is beyond the end of the file ({size} bytes)")
        before, pos = 4, self.header.end
        while pos < offset:
            before = pos
            self.fh.seek(pos)
            raw = self.fh.read(EVENT_HEADER)
            if len(raw) < EVENT_HEADER:
                break
            n = _HEADER.unpack_from(raw)[3]
            if n < EVENT_HEADER:
                raise DbusError(f"binlog {self.name}:{pos}: corrupt event (size {n}): {self.path}")
            pos += n
        if pos != offset:
            raise DbusError(f"binlog {self.name}:{offset} ({what}) is not the start of an event (the events around "
                            f"it start at {before} and {pos}): give the position of a transaction")

    def close_file(self) -> None:
        if self.fh is not None:
            self.fh.close()
            self.fh = None

    def close(self) -> None:
        self.close_file()

    def _next_file(self) -> bool:
        """Open the file after the current one when it is there (True); a gap is an error."""
        listing = self.files.listing()
        want = self.next_name
        later = [n for n in listing if binlog_index(n) > binlog_index(self.name)]
        if want is None:  # the file ended without ROTATE/STOP (a crash): the next number, if a later file exists
            if not later:
                return False
            want = successor(self.name)
        if want in listing:
            return self._open_next(listing[want])
        if later:
            raise DbusError(f"binlog {self.name}:{self.pos}: the next binlog file {want} is missing but {later[0]} is "
                            f"there: a gap between the files of {self.files.pattern} (its rows would be lost)")
        return False

    def _open_next(self, path: str) -> bool:
        """Open the next file at its start; with `follow`, one whose header is not all written yet is waited for."""
        self.next_name = os.path.basename(path)
        try:
            self._open(path, 4, "next file")
        except ShortHeader:
            if not self.follow:
                raise
            self.close_file()
            return False
        return True

    # ------------------------------------------------------------------ events
    def ready(self) -> bool:
        """Whether an event can be read without waiting (one queued, or the file holds bytes past the
        position): a poll holding committed rows hands them on when not."""
        if self.ahead:
            return True
        if self.at_end or self.fh is None:
            return False
        try:
            return os.fstat(self.fh.fileno()).st_size > self.pos
        except OSError:
            return True  # the read says what is wrong

    def fetch(self) -> rp.RawEvent | None:
        """The next event; at the end of what is there now a heartbeat (after waiting for more with `follow`)."""
        if self.ahead:
            return self.ahead.popleft()
        if self.at_end:  # not following: nothing comes after the end
            return _made_up(HEARTBEAT_EVENT, self.name.encode())
        deadline = time.monotonic() + (WAIT_SECONDS if self.follow else 0.0)
        while True:
            try:
                got = self._read_event()
            except DbusError:
                raise
            except (OSError, ValueError, IndexError, struct.error) as exc:  # a file that vanished, garbage
                raise DbusError(f"binlog {self.name}:{self.pos}: cannot read the event: {exc}: {self.path}") from None
            if got is not None:
                return got
            if self.ahead:
                return self.ahead.popleft()
            if time.monotonic() >= deadline:
                self.at_end = not self.follow
                return _made_up(HEARTBEAT_EVENT, self.name.encode())
            time.sleep(_POLL_SECONDS)

    def _read_event(self) -> rp.RawEvent | None:
        """The event at the position, or None at the end of what is there (having moved to the next file when
        it is there: its ROTATE is queued)."""
        fh = self.fh
        if fh is None:  # waiting for the file after the last one
            listing = self.files.listing(need=False)
            if self.next_name is not None and self.next_name in listing:
                self._open_next(listing[self.next_name])
            return None
        fh.seek(self.pos)
        raw = fh.read(EVENT_HEADER)
        size = len(raw)
        if size == EVENT_HEADER:
            ts, typ, server_id, n, end = _HEADER.unpack_from(raw)
            if n < EVENT_HEADER or (end and end != self.pos + n):
                raise DbusError(f"binlog {self.name}:{self.pos}: corrupt event (type {typ}, size {n}, end {end}): "
                                f"{self.path}")
            body = fh.read(n - EVENT_HEADER)
            if len(body) == n - EVENT_HEADER:
                return self._event(raw + body, typ)
            size += len(body)
        if (size == 0 and self.next_name is not None) or self._later_file():
            if size:
                raise self._torn(size)
            self.close_file()
            self.fh = None
            self._next_file()
            return None
        if size and not self.follow:
            raise self._torn(size)
        return None  # the end (or an event being written, with follow)

    def _later_file(self) -> bool:
        return any(binlog_index(n) > binlog_index(self.name) for n in self.files.listing())

    def _torn(self, got: int) -> DbusError:
        return DbusError(f"binlog {self.name}:{self.pos}: torn event at the end of the file (only {got} bytes of it "
                         "are there: copied while the server wrote it?); copy the file again, or use follow: true "
                         f"if it is still being written: {self.path}")

    def _event(self, event: bytes, typ: int) -> rp.RawEvent:
        at = self.pos
        crc = int.from_bytes(event[-4:], "little")
        if self.checksum and typ != FORMAT_DESCRIPTION_EVENT and zlib.crc32(event[:-4]) != crc:
            raise DbusError(f"binlog {self.name}:{at}: checksum mismatch (a corrupt file): {self.path}")
        self.pos += len(event)
        if typ == START_ENCRYPTION_EVENT:
            raise DbusError(f"binlog {self.name}:{at}: the file is encrypted (encrypt_binlog=ON): its events cannot be "
                            "read from the file; read them from the server with the mysql source")
        if typ == ROTATE_EVENT:
            self.next_name = event[EVENT_HEADER + 8 : len(event) - 4 if self.checksum else len(event)].decode()
        elif typ == STOP_EVENT:
            self.next_name = successor(self.name)
        pkt = pymysql.protocol.MysqlPacket(b"\0" + event, "utf8") if typ == TABLE_MAP_EVENT else None
        return rp.RawEvent(pkt, b"\0" + event, self.checksum)

    def table_map_event(self, raw: rp.RawEvent) -> Any:
        """python-mysql-replication's parse of a TABLE_MAP event, as for a replica connection."""
        return self._tables.table_map_event(raw)


def file_header(path: str) -> FileHeader:
    with open(path, "rb") as fh:
        return read_header(path, fh)


def end_of(path: str) -> int:
    """The position after the last whole event of a binlog file (`start: latest`)."""
    with open(path, "rb") as fh:
        pos = read_header(path, fh).end
        size = os.fstat(fh.fileno()).st_size
        while pos + EVENT_HEADER <= size:
            fh.seek(pos)
            n = _HEADER.unpack_from(fh.read(EVENT_HEADER))[3]
            if n < EVENT_HEADER or pos + n > size:
                break
            pos += n
        return pos


def gtid_state_at(path: str, offset: int) -> str | None:
    """MariaDB's GTID state at `offset` of a binlog file, as BINLOG_GTID_POS gives it on the server: the file's
    GTID_LIST event and the GTIDs of the transactions before `offset`; None for MySQL files."""
    with open(path, "rb") as fh:
        header = read_header(path, fh)
        if not header.mariadb:
            return None
        state: dict[int, str] | None = None
        pos, seen = header.end, 0
        while pos < offset or (offset == 4 and state is None and seen < 3):
            fh.seek(pos)
            raw = fh.read(EVENT_HEADER)
            if len(raw) < EVENT_HEADER:
                break
            _ts, typ, server_id, n, _end = _HEADER.unpack_from(raw)
            if n < EVENT_HEADER:
                break
            if typ == GTID_LIST_EVENT:
                body = fh.read(n - EVENT_HEADER)
                count = int.from_bytes(body[:4], "little") & 0x0FFFFFFF
                state = {}
                for i in range(count):
                    domain, server, seq = struct.unpack_from("<IIQ", body, 4 + 16 * i)
                    state[domain] = f"{domain}-{server}-{seq}"
            elif typ == MARIADB_GTID_EVENT and state is not None:
                body = fh.read(12)
                state[int.from_bytes(body[8:12], "little")] = f"{int.from_bytes(body[8:12], 'little')}-{server_id}-" \
                    f"{int.from_bytes(body[:8], 'little')}"
            pos += n
            seen += 1
        return None if state is None else ",".join(state[d] for d in sorted(state))
