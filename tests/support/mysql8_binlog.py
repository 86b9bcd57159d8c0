"""A test-only writer of MySQL 8 binlog events and files, built from MySQL's documented layout (not from our
decoder), so the MySQL 8 formats can be tested without a MySQL server.

Sources of each layout (MySQL 8.0/8.4 `libs/mysql/binlog/event/` (formerly `libbinlogevents`), `sql/`):

- common header (19 bytes: timestamp 4, type 1, server_id 4, event_size 4, log_pos 4, flags 2) and the CRC32
  footer (`binlog_event.h`; the checksum covers header and body, and `event_size` counts it);
- FORMAT_DESCRIPTION_EVENT (`control_events.h`): binlog_version 2, server_version 50, create_timestamp 4,
  header length 1, one post-header length per event type, checksum algorithm 1 (+ CRC). The post-header
  lengths are those of a real MySQL 8.0.35 file (`POST_HEADER_LENGTHS`);
- QUERY (`statement_events.h`), XID, ROTATE, GTID/ANONYMOUS_GTID (post-header 42 + commit timestamps of 7 bytes
  with bit 55 flagging the original one, transaction_length packed, server versions of 4 bytes with bit 31),
  PREVIOUS_GTIDS (`Gtid_set::encode`: n_sids 8, per sid uuid 16 + n_intervals 8 + [start, end) 8+8);
- TABLE_MAP (`rows_event.h`): table id 6, flags 2, packed-length schema and table names with a NUL,
  packed column count, types, packed metadata length + metadata, null bits, optional metadata as
  type 1 / packed length / value (SIGNEDNESS 1, DEFAULT_CHARSET 2, COLUMN_CHARSET 3, COLUMN_NAME 4,
  SET_STR_VALUE 5, ENUM_STR_VALUE 6, SIMPLE_PRIMARY_KEY 8, ENUM_AND_SET_DEFAULT_CHARSET 10,
  ENUM_AND_SET_COLUMN_CHARSET 11, COLUMN_VISIBILITY 12);
- ROWS v2 and PARTIAL_UPDATE_ROWS (`rows_event.h`, `sql/rpl_record.cc` pack_row): post-header 10 (table id,
  flags, extra-data length 2 counting itself), packed width, columns bitmap(s), then per row a null bitmap and
  the values; the after image of PARTIAL_UPDATE_ROWS starts with packed value_options and, when a JSON diff
  follows, one partial bit per JSON column of the table; a partial JSON value is a 4-byte length and the diffs
  (`sql/json_diff.cc` Json_diff::write_binary: operation 1, packed path length + path, packed value length +
  JSON binary value except for REMOVE);
- TRANSACTION_PAYLOAD (`codecs/binary.cpp` Transaction_payload::encode): fields type/length/value, all packed
  (`net_store_length`): compression type 2, uncompressed size 3, payload size 1, end mark 0; then the zstd frame
  of the transaction's events;
- JSON binary (`sql-common/json_binary.h`): `tests.support.mysql8_json`, re-exported here.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

from tests.support.mysql8_json import (  # noqa: F401 - re-exported: tests write JSON values through this module
    DOUBLE_T,
    INT16,
    INT32,
    INT64,
    OPAQUE,
    STRING_T,
    UINT16,
    UINT32,
    UINT64,
    JsonType,
    Opaque,
    decimal_binary,
    json_binary,
    mysql_key_order,
    opaque_date,
    opaque_datetime,
    opaque_decimal,
    opaque_time,
)

MAGIC = b"\xfebin"
HEADER_LEN = 19

QUERY_EVENT, ROTATE_EVENT, FORMAT_DESCRIPTION_EVENT, XID_EVENT, TABLE_MAP_EVENT = 2, 4, 15, 16, 19
WRITE_ROWS, UPDATE_ROWS, DELETE_ROWS = 30, 31, 32
GTID_LOG_EVENT, ANONYMOUS_GTID_LOG_EVENT, PREVIOUS_GTIDS_LOG_EVENT = 33, 34, 35
PARTIAL_UPDATE_ROWS_EVENT, TRANSACTION_PAYLOAD_EVENT = 39, 40

#: post-header length of event types 1..41 in the FORMAT_DESCRIPTION_EVENT of a MySQL 8.0.35 binlog
POST_HEADER_LENGTHS = bytes([0, 13, 0, 8, 0, 0, 0, 0, 4, 0, 4, 0, 0, 0, 98, 0, 4, 26, 8, 0, 0, 0, 8, 8, 8, 2, 0, 0, 0,
                             10, 10, 10, 42, 42, 0, 18, 52, 0, 10, 40, 0])

# column types (include/field_types.h)
LONG, LONGLONG, VARCHAR, JSON, NEWDECIMAL, ENUM, SET, BLOB, STRING = 3, 8, 15, 245, 246, 247, 248, 252, 254
TINY, SHORT, INT24, FLOAT, DOUBLE, DATETIME2, VAR_STRING = 1, 2, 9, 4, 5, 18, 253

# JSON diff operations (sql/json_diff.h enum_json_diff_operation)
REPLACE, INSERT, REMOVE = 0, 1, 2
PARTIAL_JSON_UPDATES = 1  # binlog_row_value_options bit (PARTIAL_JSON)


def packed(n: int) -> bytes:
    """MySQL's packed integer (`net_store_length`)."""
    if n < 251:
        return bytes([n])
    if n < 1 << 16:
        return b"\xfc" + n.to_bytes(2, "little")
    if n < 1 << 24:
        return b"\xfd" + n.to_bytes(3, "little")
    return b"\xfe" + n.to_bytes(8, "little")


def event(type_code: int, body: bytes, log_pos: int = 0, *, timestamp: int = 1_700_000_000, server_id: int = 1,
          flags: int = 0, checksum: bool = True) -> bytes:
    """One event: common header, body and (with `checksum`) the CRC32 of both. `log_pos` is the position
    after the event (end_log_pos). A FORMAT_DESCRIPTION_EVENT's CRC is computed with LOG_EVENT_BINLOG_IN_USE_F
    (flag 1) clear, as MySQL does (the flag is set while the file is open and cleared in place at close)."""
    size = HEADER_LEN + len(body) + (4 if checksum else 0)
    data = struct.pack("<IBIIIH", timestamp, type_code, server_id, size, log_pos, flags) + body
    if not checksum:
        return data
    crc_flags = flags & ~1 if type_code == FORMAT_DESCRIPTION_EVENT else flags
    crc = zlib.crc32(struct.pack("<IBIIIH", timestamp, type_code, server_id, size, log_pos, crc_flags) + body)
    return data + struct.pack("<I", crc)


# ------------------------------------------------------------------------------------------ event bodies


def format_description_body(server_version: str = "8.0.35", checksum: bool = True) -> bytes:
    """Body of a FORMAT_DESCRIPTION_EVENT (its CRC is added by `event`: MySQL always writes the checksum
    algorithm byte, and the CRC when the algorithm is CRC32)."""
    return (struct.pack("<H", 4) + server_version.encode().ljust(50, b"\0") + struct.pack("<I", 0)
            + bytes([HEADER_LEN]) + POST_HEADER_LENGTHS + bytes([1 if checksum else 0]))


def query_body(sql: str, schema: str = "", thread_id: int = 7, status: bytes = b"") -> bytes:
    db = schema.encode()
    return (struct.pack("<IIBHH", thread_id, 0, len(db), 0, len(status)) + status + db + b"\0" + sql.encode())


def xid_body(xid: int) -> bytes:
    return struct.pack("<Q", xid)


def rotate_body(next_file: str, position: int = 4) -> bytes:
    return struct.pack("<Q", position) + next_file.encode()


def gtid_body(uuid: str | None, gno: int, *, last_committed: int = 0, sequence_number: int = 1,
              commit_us: int = 1_700_000_000_000_000, original_commit_us: int | None = None,
              transaction_length: int = 0, server_version: int = 80035, flags: int = 0) -> bytes:
    """GTID_LOG_EVENT body (ANONYMOUS_GTID_LOG_EVENT with `uuid` None and gno 0), as MySQL 8.0 writes it."""
    sid = bytes(16) if uuid is None else bytes.fromhex(uuid.replace("-", ""))
    out = bytes([flags]) + sid + struct.pack("<qBqq", gno, 2, last_committed, sequence_number)
    differ = original_commit_us is not None and original_commit_us != commit_us
    out += (commit_us | (1 << 55 if differ else 0)).to_bytes(7, "little")
    if differ:
        out += original_commit_us.to_bytes(7, "little")  # type: ignore[union-attr]
    out += packed(transaction_length)
    out += struct.pack("<I", server_version)  # the same original server version: bit 31 clear
    return out


def previous_gtids_body(sets: dict[str, list[tuple[int, int]]]) -> bytes:
    """PREVIOUS_GTIDS_LOG_EVENT body: {uuid: [(first, last), ...]} (intervals stored as [first, last + 1))."""
    out = struct.pack("<Q", len(sets))
    for uuid, intervals in sets.items():
        out += bytes.fromhex(uuid.replace("-", "")) + struct.pack("<Q", len(intervals))
        for first, last in intervals:
            out += struct.pack("<qq", first, last + 1)
    return out


@dataclass
class Col:
    """A column of a table map: its type and metadata, and what the optional metadata says of it."""

    name: str
    type: int
    meta: bytes = b""
    nullable: bool = True
    unsigned: bool = False
    collation: int | None = None  # character columns (and ENUM/SET: the members' collation)
    members: tuple[str, ...] = ()  # ENUM/SET
    visible: bool = True


def col_long(name: str, unsigned: bool = False, nullable: bool = False, visible: bool = True) -> Col:
    return Col(name, LONG, nullable=nullable, unsigned=unsigned, visible=visible)


def col_tiny(name: str, unsigned: bool = False) -> Col:
    return Col(name, TINY, unsigned=unsigned)


def col_longlong(name: str, unsigned: bool = False) -> Col:
    return Col(name, LONGLONG, unsigned=unsigned)


def col_varchar(name: str, max_bytes: int, collation: int = 255) -> Col:
    return Col(name, VARCHAR, struct.pack("<H", max_bytes), collation=collation)


def col_json(name: str) -> Col:
    return Col(name, JSON, bytes([4]))  # pack length 4 (field_json.h)


def col_enum(name: str, members: tuple[str, ...], collation: int = 255) -> Col:
    return Col(name, STRING, bytes([ENUM, 1 if len(members) < 256 else 2]), collation=collation, members=members)


def col_set(name: str, members: tuple[str, ...], collation: int = 255) -> Col:
    return Col(name, STRING, bytes([SET, (len(members) + 7) // 8]), collation=collation, members=members)


def _is_numeric(c: Col) -> bool:
    return c.type in (TINY, SHORT, LONG, LONGLONG, INT24, FLOAT, DOUBLE, NEWDECIMAL)


def _is_character(c: Col) -> bool:
    return c.collation is not None and not c.members


def _bits_msb_first(flags: list[bool]) -> bytes:
    out = bytearray((len(flags) + 7) // 8)
    for i, f in enumerate(flags):
        if f:
            out[i // 8] |= 0x80 >> (i % 8)
    return bytes(out)


def _bits_lsb_first(flags: list[bool]) -> bytes:
    out = bytearray((len(flags) + 7) // 8)
    for i, f in enumerate(flags):
        if f:
            out[i // 8] |= 1 << (i % 8)
    return bytes(out)


def table_map_body(table_id: int, schema: str, table: str, cols: list[Col], primary_key: tuple[int, ...] = (),
                   full_metadata: bool = True, visibility: bool = True, default_charsets: bool = False,
                   key_prefixes: dict[int, int] | None = None) -> bytes:
    """TABLE_MAP_EVENT body with the optional metadata of binlog_row_metadata=FULL (MINIMAL without
    `full_metadata`). Charsets per column (COLUMN_CHARSET, ENUM_AND_SET_COLUMN_CHARSET), or with
    `default_charsets` as MySQL writes them when most columns share one (DEFAULT_CHARSET,
    ENUM_AND_SET_DEFAULT_CHARSET: the most used collation, then (index among those columns, collation) of the
    others). `primary_key`: column indexes in key order (SIMPLE_PRIMARY_KEY), or with `key_prefixes`
    {column index: prefix length in characters, 0 whole} PRIMARY_KEY_WITH_PREFIX."""
    meta = b"".join(c.meta for c in cols)
    out = (table_id.to_bytes(6, "little") + struct.pack("<H", 1)
           + bytes([len(schema.encode())]) + schema.encode() + b"\0"
           + bytes([len(table.encode())]) + table.encode() + b"\0"
           + packed(len(cols)) + bytes(c.type for c in cols) + packed(len(meta)) + meta
           + _bits_lsb_first([c.nullable for c in cols]))

    def tlv(kind: int, value: bytes) -> bytes:
        return bytes([kind]) + packed(len(value)) + value

    numeric = [c for c in cols if _is_numeric(c)]
    if numeric:
        out += tlv(1, _bits_msb_first([c.unsigned for c in numeric]))
    def charsets(of: list[Col], per_column: int, default: int) -> bytes:
        collations = [c.collation for c in of]
        if not default_charsets:
            return tlv(per_column, b"".join(packed(x) for x in collations))  # type: ignore[arg-type]
        most = max(collations, key=collations.count)
        return tlv(default, packed(most) + b"".join(  # type: ignore[arg-type]
            packed(i) + packed(x) for i, x in enumerate(collations) if x != most))  # type: ignore[arg-type]

    chars = [c for c in cols if _is_character(c)]
    if chars:
        out += charsets(chars, 3, 2)
    if full_metadata:
        out += tlv(4, b"".join(packed(len(c.name.encode())) + c.name.encode() for c in cols))
        for kind, member_type in ((5, SET), (6, ENUM)):
            of_kind = [c for c in cols if c.members and c.meta[0] == member_type]
            if of_kind:
                out += tlv(kind, b"".join(
                    packed(len(c.members)) + b"".join(packed(len(m.encode(_codec(c)))) + m.encode(_codec(c))
                                                      for m in c.members)
                    for c in of_kind))
    if primary_key and full_metadata:
        if key_prefixes is None:
            out += tlv(8, b"".join(packed(i) for i in primary_key))
        else:
            out += tlv(9, b"".join(packed(i) + packed(key_prefixes.get(i, 0)) for i in primary_key))
    enum_set = [c for c in cols if c.members]
    if enum_set and full_metadata:
        out += charsets(enum_set, 11, 10)
    if visibility and full_metadata:
        out += tlv(12, _bits_msb_first([c.visible for c in cols]))
    return out


# ------------------------------------------------------------------------------------------ row images


#: collation id -> Python codec of the values the writer encodes (MySQL's `SHOW COLLATION`: 8 latin1_swedish_ci, 33
#: utf8mb3_general_ci, 45/46/255 utf8mb4, 63 binary)
_CODECS = {8: "latin-1", 33: "utf-8", 45: "utf-8", 46: "utf-8", 255: "utf-8", 63: "latin-1"}


def _codec(c: Col) -> str:
    return _CODECS.get(c.collation if c.collation is not None else 255, "utf-8")


def column_value(c: Col, v: Any) -> bytes:
    """The row-image bytes of one non-NULL value of column `c` (v: int, str, or JSON binary bytes)."""
    if c.type == TINY:
        return struct.pack("<B" if c.unsigned else "<b", v)
    if c.type == LONG:
        return struct.pack("<I" if c.unsigned else "<i", v)
    if c.type == LONGLONG:
        return struct.pack("<Q" if c.unsigned else "<q", v)
    if c.type == VARCHAR:
        raw = v.encode(_codec(c)) if isinstance(v, str) else v
        width = 1 if struct.unpack("<H", c.meta)[0] < 256 else 2
        return len(raw).to_bytes(width, "little") + raw
    if c.type == JSON:
        return len(v).to_bytes(4, "little") + v
    if c.type == STRING and c.members:
        size = c.meta[1]
        if c.meta[0] == ENUM:
            return (c.members.index(v) + 1).to_bytes(size, "little")
        mask = sum(1 << c.members.index(m) for m in v.split(",") if m)
        return mask.to_bytes(size, "little")
    raise ValueError(f"the writer has no encoder for column type {c.type}")


def row_image(cols: list[Col], values: list[Any], present: list[bool] | None = None) -> bytes:
    """Null bitmap (over the present columns) and the values of one image."""
    present = present or [True] * len(cols)
    shown = [(c, v) for c, v, p in zip(cols, values, present) if p]
    nulls = _bits_lsb_first([v is None for _, v in shown])
    return nulls + b"".join(column_value(c, v) for c, v in shown if v is not None)


def rows_body(table_id: int, ncols: int, rows: bytes, bitmap2: bool = False, flags: int = 1) -> bytes:
    """ROWS v2 / PARTIAL_UPDATE_ROWS body of row images `rows` over all `ncols` columns (no extra data). The
    columns bitmap has every bit set, the padding bits of its last byte too, as MySQL writes it (bitmap_set_all)."""
    bitmap = b"\xff" * ((ncols + 7) // 8)
    return (table_id.to_bytes(6, "little") + struct.pack("<HH", flags, 2) + packed(ncols) + bitmap
            + (bitmap if bitmap2 else b"") + rows)


def json_diff(op: int, path: str, value: bytes | None = None) -> bytes:
    """One JSON diff (Json_diff::write_binary): operation, path, and (not for REMOVE) a JSON binary value."""
    out = bytes([op]) + packed(len(path.encode())) + path.encode()
    if op != REMOVE:
        assert value is not None
        out += packed(len(value)) + value
    return out


def partial_after_image(cols: list[Col], values: list[Any], diffs: dict[int, list[bytes]]) -> bytes:
    """The after image of a PARTIAL_UPDATE_ROWS_EVENT row: value_options (PARTIAL_JSON when any diff), the
    partial bits (one per JSON column of the table), then the image, where column i in `diffs` holds its
    diff vector (4-byte length + diffs) instead of a full value."""
    json_cols = [i for i, c in enumerate(cols) if c.type == JSON]
    if not diffs:
        return packed(0) + row_image(cols, values)
    head = packed(PARTIAL_JSON_UPDATES) + _bits_lsb_first([i in diffs for i in json_cols])
    nulls = _bits_lsb_first([v is None and i not in diffs for i, v in enumerate(values)])
    body = b""
    for i, (c, v) in enumerate(zip(cols, values)):
        if i in diffs:
            vector = b"".join(diffs[i])
            body += len(vector).to_bytes(4, "little") + vector
        elif v is not None:
            body += column_value(c, v)
    return head + nulls + body


def payload_body(inner: bytes, level: int = 3, streamed: bool = False) -> bytes:
    """TRANSACTION_PAYLOAD_EVENT body: the zstd frame of the transaction's events `inner` (each written without
    checksum) after the payload data header; `streamed`: compressed in pieces as MySQL's streaming compressor
    does (a frame without its content size in the header)."""
    import zstandard

    if streamed:
        compressor = zstandard.ZstdCompressor(level=level, write_content_size=False).compressobj()
        frame = b"".join(compressor.compress(inner[i : i + 100]) for i in range(0, len(inner), 100))
        frame += compressor.flush()
    else:
        frame = zstandard.ZstdCompressor(level=level).compress(inner)

    def field(kind: int, value: int) -> bytes:
        return packed(kind) + packed(len(packed(value))) + packed(value)

    return field(2, 0) + field(3, len(inner)) + field(1, len(frame)) + packed(0) + frame


# ------------------------------------------------------------------------------------------ files


@dataclass
class BinlogFile:
    """A MySQL 8 binlog file being written: magic, FORMAT_DESCRIPTION_EVENT, PREVIOUS_GTIDS_LOG_EVENT, then the
    events added; each event's log_pos is the position after it. `offsets` holds every event's position."""

    name: str = "binlog.000001"
    checksum: bool = True
    server_id: int = 1
    data: bytearray = field(default_factory=lambda: bytearray(MAGIC))
    offsets: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        # the FORMAT_DESCRIPTION_EVENT always carries the checksum algorithm byte and (CRC32) its own CRC
        fde = format_description_body(checksum=self.checksum)
        self.add(FORMAT_DESCRIPTION_EVENT, fde, checksum=True, flags=1)
        self.add(PREVIOUS_GTIDS_LOG_EVENT, previous_gtids_body({}))

    def add(self, type_code: int, body: bytes, *, checksum: bool | None = None, flags: int = 0,
            timestamp: int = 1_700_000_000) -> int:
        """Append one event; returns its position."""
        at = len(self.data)
        crc = self.checksum if checksum is None else checksum
        end = at + HEADER_LEN + len(body) + (4 if crc else 0)
        self.data += event(type_code, body, end, timestamp=timestamp, server_id=self.server_id, flags=flags,
                           checksum=crc)
        self.offsets.append(at)
        return at

    def add_payload(self, inner_events: list[tuple[int, bytes]], timestamp: int = 1_700_000_000,
                    streamed: bool = False) -> int:
        """Append a TRANSACTION_PAYLOAD_EVENT holding `inner_events` ((type, body) each): inner events carry no
        checksum and log_pos 0; returns the payload event's position."""
        inner = b"".join(event(t, b, 0, timestamp=timestamp, server_id=self.server_id, checksum=False)
                         for t, b in inner_events)
        return self.add(TRANSACTION_PAYLOAD_EVENT, payload_body(inner, streamed=streamed), timestamp=timestamp)

    def rotate(self, next_name: str) -> BinlogFile:
        """End this file with a ROTATE_EVENT to `next_name` (as MySQL does at FLUSH LOGS or max_binlog_size) and
        return the next file."""
        self.add(ROTATE_EVENT, rotate_body(next_name, 4))
        return BinlogFile(name=next_name, checksum=self.checksum, server_id=self.server_id)

    def bytes(self) -> bytes:
        return bytes(self.data)

    def write(self, directory: Any) -> Any:
        """Write the file into `directory` under its name; returns its path."""
        from pathlib import Path

        path = Path(directory) / self.name
        path.write_bytes(self.bytes())
        return path
