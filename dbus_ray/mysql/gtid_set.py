"""MySQL GTID sets (`gtid_executed`, `uuid:1-5:7,uuid2:1-3`): the executed set a MySQL checkpoint records
(`gtid_pos`), kept up to date transaction by transaction (`add`), compared with a server's history
(`missing_from`), and encoded for COM_BINLOG_DUMP_GTID (auto-position: the server sends every transaction
not in the set) or decoded from a PREVIOUS_GTIDS_LOG_EVENT.

Text form as MySQL prints it: source UUIDs in lower case and ascending order, each with its intervals in
ascending order, `a-b` (inclusive) or `a` for one transaction, adjacent intervals merged; parsing accepts
upper case, blanks and the newlines of `SELECT @@gtid_executed`. Tagged GTIDs (MySQL 8.4 `uuid:tag:1-5`) are
refused with one line.

Binary form (`Gtid_set::encode` in MySQL's sql/rpl_gtid_set.cc; the COM_BINLOG_DUMP_GTID data and the body of
PREVIOUS_GTIDS_LOG_EVENT): n_sids (8 bytes), then per UUID in ascending order: the UUID (16 bytes),
n_intervals (8), and each interval as start, end (8 each, end exclusive); little-endian.
"""

from __future__ import annotations

import bisect
import re
import struct
import uuid as uuid_mod

_UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_INTERVAL_RE = re.compile(r"^(\d+)(?:-(\d+))?$")

#: COM_BINLOG_DUMP_GTID command byte and the flag that says a GTID set follows
COM_BINLOG_DUMP_GTID = 0x1E
BINLOG_THROUGH_GTID = 0x04


class GtidSet:
    """A set of MySQL GTIDs: {uuid: [[start, end], ...]} (inclusive, sorted, disjoint, not adjacent)."""

    __slots__ = ("sids",)

    def __init__(self) -> None:
        self.sids: dict[str, list[list[int]]] = {}

    # ------------------------------------------------------------------ text
    @classmethod
    def parse(cls, text: str | None) -> GtidSet:
        """`uuid:1-5:7,uuid2:1-3` -> a set; ValueError naming the part that is not a GTID set."""
        out = cls()
        for part in (text or "").replace("\n", "").split(","):
            part = part.strip()
            if not part:
                continue
            sid, _, rest = part.partition(":")
            sid = sid.strip().lower()
            if not _UUID_RE.match(sid) or not rest:
                raise ValueError(f"bad MySQL GTID set {text!r}: {part!r} is not UUID:INTERVALS, "
                                 "e.g. 3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5:7")
            for interval in rest.split(":"):
                m = _INTERVAL_RE.match(interval.strip())
                if m is None:
                    raise ValueError(f"bad MySQL GTID set {text!r}: {interval!r} in {part!r} is not N or N-M"
                                     + (" (tagged GTIDs are not supported)" if interval.strip().isidentifier() else ""))
                start, end = int(m.group(1)), int(m.group(2) or m.group(1))
                if start < 1 or end < start:
                    raise ValueError(f"bad MySQL GTID set {text!r}: interval {interval!r} in {part!r} is empty "
                                     "or starts at 0")
                out.add_interval(sid, start, end)
        return out

    def __str__(self) -> str:
        return ",".join(
            f"{sid}:" + ":".join(f"{a}" if a == b else f"{a}-{b}" for a, b in self.sids[sid])
            for sid in sorted(self.sids)
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GtidSet) and self.sids == other.sids

    def __repr__(self) -> str:
        return f"GtidSet({str(self)!r})"

    def copy(self) -> GtidSet:
        out = GtidSet()
        out.sids = {sid: [list(i) for i in intervals] for sid, intervals in self.sids.items()}
        return out

    # ------------------------------------------------------------------ changes
    def add(self, gtid: str) -> None:
        """One transaction `uuid:n` (as a GTID event names it) joins the set."""
        sid, _, gno = gtid.rpartition(":")
        if not sid or not gno.isdigit():
            raise ValueError(f"bad MySQL GTID {gtid!r}: expected UUID:N")
        n = int(gno)
        self.add_interval(sid.lower(), n, n)

    def add_interval(self, sid: str, start: int, end: int) -> None:
        """[start, end] (inclusive) of `sid` joins the set, merged with the intervals it overlaps or touches."""
        intervals = self.sids.setdefault(sid, [])
        if intervals and intervals[-1][1] + 1 == start:  # the usual case: the next transaction of a source
            intervals[-1][1] = end
            return
        i = bisect.bisect_left(intervals, [start, 0])
        if i > 0 and intervals[i - 1][1] + 1 >= start:  # touches or overlaps the one before
            i -= 1
            start = intervals[i][0]
        j = i
        while j < len(intervals) and intervals[j][0] <= end + 1:
            end = max(end, intervals[j][1])
            j += 1
        intervals[i:j] = [[start, end]]

    # ------------------------------------------------------------------ comparisons
    def missing_from(self, history: GtidSet) -> GtidSet:
        """The GTIDs of this set that `history` does not hold (MySQL `GTID_SUBTRACT(this, history)`)."""
        out = GtidSet()
        for sid, intervals in self.sids.items():
            have = history.sids.get(sid, [])
            for a, b in intervals:
                cur = a
                for c, d in have:
                    if d < cur or c > b:
                        continue
                    if c > cur:
                        out.add_interval(sid, cur, c - 1)
                    cur = d + 1
                    if cur > b:
                        break
                if cur <= b:
                    out.add_interval(sid, cur, b)
        return out

    def subset_of(self, history: GtidSet) -> bool:
        """MySQL `GTID_SUBSET(this, history)`."""
        return not self.missing_from(history).sids

    # ------------------------------------------------------------------ binary
    def encode(self) -> bytes:
        """The binary form (module docstring)."""
        sids = [sid for sid in sorted(self.sids) if self.sids[sid]]
        out = [struct.pack("<Q", len(sids))]
        for sid in sids:
            intervals = self.sids[sid]
            out.append(uuid_mod.UUID(sid).bytes + struct.pack("<Q", len(intervals)))
            out.extend(struct.pack("<QQ", a, b + 1) for a, b in intervals)
        return b"".join(out)

    @classmethod
    def decode(cls, data: bytes, pos: int = 0) -> GtidSet:
        """The binary form at `data[pos:]` -> a set; ValueError when it is cut short."""
        out = cls()
        try:
            (n_sids,) = struct.unpack_from("<Q", data, pos)
            pos += 8
            for _ in range(n_sids):
                sid = str(uuid_mod.UUID(bytes=bytes(data[pos : pos + 16])))
                (n,) = struct.unpack_from("<Q", data, pos + 16)
                pos += 24
                for _ in range(n):
                    a, b = struct.unpack_from("<QQ", data, pos)
                    pos += 16
                    if b <= a:
                        raise ValueError(f"empty interval [{a}, {b}) of {sid}")
                    out.add_interval(sid, a, b - 1)
        except (struct.error, ValueError) as exc:
            raise ValueError(f"bad encoded GTID set: {exc}") from None
        return out


def dump_gtid_packet(gtids: GtidSet, server_id: int) -> bytes:
    """COM_BINLOG_DUMP_GTID with its 4-byte packet header (length, sequence 0), as MySQL documents it: command
    0x1e, flags (2: BINLOG_THROUGH_GTID), server_id (4), binlog-filename-len (4), binlog-filename, binlog-pos
    (8), data-size (4), data (the encoded set). The file name is left empty (3 zero bytes, as the
    replica in python-mysql-replication sends it) and the position 4: the set says where to start."""
    data = gtids.encode()
    name = b"\0\0\0"
    body = (bytes([COM_BINLOG_DUMP_GTID]) + struct.pack("<HII", BINLOG_THROUGH_GTID, server_id, len(name)) + name
            + struct.pack("<QI", 4, len(data)) + data)
    return struct.pack("<I", len(body))[:3] + b"\0" + body
