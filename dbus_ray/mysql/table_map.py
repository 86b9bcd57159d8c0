"""The optional metadata of a TABLE_MAP event read from its bytes (`libs/mysql/binlog/event/rows_event.h`):
after the post-header (table id 6, flags 2), the schema and table names (1-byte length, name, NUL), the packed
column count, one type byte per column, the packed metadata length and the metadata, and the null bits, come
type (1 byte) / packed length / value fields to the end of the event.

python-mysql-replication decodes the ENUM and SET member names (SET_STR_VALUE 5, ENUM_STR_VALUE 6: per column a
packed count, then packed-length names) as UTF-8 and puts "" where that fails; `enum_set_members` keeps their
bytes, for the column's own charset (ENUM_AND_SET_*_CHARSET) to decode.
"""

from __future__ import annotations

from dbus_ray.mysql.replica import HEADER, RawEvent, read_lenenc

SET_STR_VALUE, ENUM_STR_VALUE = 5, 6


def optional_metadata(ev: RawEvent) -> dict[int, bytes]:
    """{field type: value bytes} of a TABLE_MAP event's optional metadata ({} when it has none)."""
    data, end = ev.data, ev.end
    p = HEADER + 8
    p += 1 + data[p] + 1  # schema
    p += 1 + data[p] + 1  # table
    ncols, p = read_lenenc(data, p)
    p += ncols
    size, p = read_lenenc(data, p)
    p += size + (ncols + 7) // 8
    out: dict[int, bytes] = {}
    while p < end:
        kind = data[p]
        size, p = read_lenenc(data, p + 1)
        if p + size > end:
            raise ValueError(f"optional metadata field {kind} of {size} bytes past the end of the event")
        out[kind] = bytes(data[p : p + size])
        p += size
    return out


def _members(value: bytes) -> list[tuple[bytes, ...]]:
    out = []
    p = 0
    while p < len(value):
        count, p = read_lenenc(value, p)
        names = []
        for _ in range(count):
            size, p = read_lenenc(value, p)
            names.append(value[p : p + size])
            p += size
        out.append(tuple(names))
    if p != len(value):
        raise ValueError("ENUM/SET member names past the end of their field")
    return out


def enum_set_members(ev: RawEvent) -> tuple[list[tuple[bytes, ...]], list[tuple[bytes, ...]]]:
    """(the member names of each ENUM column, of each SET column), as bytes, in column order (binlog_row_metadata
    =FULL; empty lists without it)."""
    meta = optional_metadata(ev)
    return _members(meta.get(ENUM_STR_VALUE, b"")), _members(meta.get(SET_STR_VALUE, b""))
