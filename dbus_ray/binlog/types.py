"""Row images of binlog ROWS events -> Python values -> Arrow columns, one precompiled layout per table
definition (as its TABLE_MAP event describes it).

Type mapping (MySQL/MariaDB column -> Arrow type of the image field -> JSON of the jsonl sink). Every
value equals what a `SELECT` of the row returns through pymysql, after the JSON mapping of
`dbus_ray.model.json_default`:

column type                  -> Arrow type         -> value (JSON)
TINYINT..BIGINT              -> int8/16/32/32/64   -> number; UNSIGNED -> uint8/16/32/32/64
DECIMAL(p,s)                 -> decimal128(p,s)    -> exact Decimal (JSON string); decimal256 when p > 38
FLOAT / DOUBLE               -> float32 / float64  -> the stored binary value
BIT(n)                       -> binary             -> the (n+7)//8 big-endian bytes SELECT returns (base64)
YEAR                         -> uint16             -> 1901..2155, 0 for YEAR 0000
DATE                         -> string             -> `YYYY-MM-DD`
DATETIME(fsp)                -> string             -> ISO `YYYY-MM-DDTHH:MM:SS[.ffffff]` (= isoformat())
TIMESTAMP(fsp)               -> string             -> ISO in UTC, `...+00:00`
zero/partial dates           -> string             -> exactly as the server shows them, e.g.
                                                      `0000-00-00 00:00:00.000` (pymysql returns str too)
TIME(fsp)                    -> duration[us]       -> timedelta (JSON `[-]HH:MM:SS[.ffffff]`)
CHAR/VARCHAR/TEXT            -> string             -> decoded with the column charset (utf8mb4, latin1 =
                                                      cp1252 with 0x81/8D/8F/90/9D as C1 controls, ...)
BINARY/VARBINARY/BLOB        -> binary             -> bytes, BINARY(n) zero-padded to n (base64)
ENUM / SET                   -> string             -> the member / the members joined by `,` (as SELECT)
JSON                         -> string             -> MariaDB: the stored text; MySQL: compact JSON text
GEOMETRY                     -> binary             -> as SELECT returns it: 4-byte LE SRID + WKB

Dates are strings because an Arrow date/timestamp cannot hold MySQL's zero dates exactly. NULL is
null everywhere. With `binlog_row_image=MINIMAL` or `NOBLOB` a column missing from an image is null in
the image and named in the row's `absent` (see `dbus_ray.model.ABSENT_TYPE`), so SQL NULL and "not in
the image" stay apart.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from dbus_ray.errors import DecodeError

Reader = Callable[[bytes, int], tuple[Any, int]]

# FIELD_TYPE codes (include/mysql_com.h)
DECIMAL, TINY, SHORT, LONG, FLOAT, DOUBLE, NULL, TIMESTAMP, LONGLONG, INT24 = range(10)
DATE, TIME, DATETIME, YEAR, NEWDATE, VARCHAR, BIT, TIMESTAMP2, DATETIME2, TIME2 = range(10, 20)
JSON, NEWDECIMAL, ENUM, SET, TINY_BLOB, MEDIUM_BLOB, LONG_BLOB, BLOB, VAR_STRING, STRING, GEOMETRY = range(
    245, 256
)

_INTS: dict[int, tuple[str, str, Any, Any]] = {
    TINY: ("<b", "<B", pa.int8(), pa.uint8()),
    SHORT: ("<h", "<H", pa.int16(), pa.uint16()),
    LONG: ("<i", "<I", pa.int32(), pa.uint32()),
    LONGLONG: ("<q", "<Q", pa.int64(), pa.uint64()),
}
_DIG2BYTES = (0, 1, 1, 2, 2, 3, 3, 4, 4, 4)
_UTC = dt.UTC
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=_UTC)

# MySQL's latin1 is cp1252, except that the five bytes cp1252 leaves undefined map to C1 controls.
_CP1252_HIGH = bytes(range(0x80, 0xA0)).decode("cp1252", errors="replace")
LATIN1_TABLE = {0x80 + i: (ch if ch != "\ufffd" else chr(0x80 + i)) for i, ch in enumerate(_CP1252_HIGH)}


@dataclass(frozen=True, slots=True)
class ColumnDef:
    """What a TABLE_MAP event says about one column."""

    name: str
    type: int
    unsigned: bool = False
    charset: str | None = None  # Python codec, "binary" or None (not a character column)
    max_length: int = 0  # STRING/VARCHAR: bytes
    length_size: int = 0  # BLOB/JSON/GEOMETRY: bytes of the length prefix
    precision: int = 0
    scale: int = 0
    fsp: int = 0
    bits: int = 0  # BIT
    size: int = 0  # ENUM/SET: bytes
    members: tuple[str, ...] = ()  # ENUM/SET values (ENUM without the leading '')
    nullable: bool = True


def codec_of(charset_name: str | None, collation: str | None) -> str | None:
    """Python codec for a column's MySQL charset (as python-mysql-replication names it)."""
    if collation == "binary" or charset_name == "binary":
        return "binary"
    if collation and collation.startswith("latin1"):
        return "mysql-latin1"
    if charset_name in (None, "utf8", "utf8mb4", "utf8mb3"):
        return "utf-8"
    return charset_name


def _decoder(codec: str) -> Callable[[bytes], Any]:
    if codec == "binary":
        return bytes
    if codec == "mysql-latin1":
        return lambda b: b.decode("latin-1").translate(LATIN1_TABLE)
    try:
        "".encode(codec)
    except LookupError:
        codec = "utf-8"
    return lambda b: b.decode(codec, "replace")


# ------------------------------------------------------------------------------------------ readers


def _int_reader(fmt: str) -> Reader:
    s = struct.Struct(fmt)
    size, unpack = s.size, s.unpack_from

    def read(buf: bytes, pos: int) -> tuple[Any, int]:
        return unpack(buf, pos)[0], pos + size

    return read


def _int24_reader(unsigned: bool) -> Reader:
    def read(buf: bytes, pos: int) -> tuple[Any, int]:
        return int.from_bytes(buf[pos : pos + 3], "little", signed=not unsigned), pos + 3

    return read


def _lenbytes_reader(prefix: int, convert: Callable[[bytes], Any]) -> Reader:
    def read(buf: bytes, pos: int) -> tuple[Any, int]:
        n = int.from_bytes(buf[pos : pos + prefix], "little")
        start = pos + prefix
        return convert(buf[start : start + n]), start + n

    return read


def _decimal_layout(precision: int, scale: int) -> tuple[int, int, int, int, int, int, int]:
    """MySQL's binary DECIMAL: (full 9-digit groups and leftover digits of the integer part, the same of
    the fraction, bytes of the leading and trailing partial groups, total size in bytes)."""
    intg0, intg0x = divmod(precision - scale, 9)
    frac0, frac0x = divmod(scale, 9)
    lead, tail = _DIG2BYTES[intg0x], _DIG2BYTES[frac0x]
    return intg0, intg0x, frac0, frac0x, lead, tail, lead + intg0 * 4 + frac0 * 4 + tail


def _decimal_reader(precision: int, scale: int) -> Reader:
    intg0, intg0x, frac0, frac0x, lead, tail, size = _decimal_layout(precision, scale)

    def read(buf: bytes, pos: int) -> tuple[Any, int]:
        raw = bytearray(buf[pos : pos + size])
        negative = not raw[0] & 0x80
        raw[0] ^= 0x80
        if negative:
            raw = bytearray(b ^ 0xFF for b in raw)
        p = lead
        int_part = str(int.from_bytes(raw[:lead], "big")) if lead else ""
        for _ in range(intg0):
            int_part += f"{int.from_bytes(raw[p : p + 4], 'big'):09d}"
            p += 4
        frac = ""
        for _ in range(frac0):
            frac += f"{int.from_bytes(raw[p : p + 4], 'big'):09d}"
            p += 4
        if tail:
            frac += f"{int.from_bytes(raw[p : p + tail], 'big'):0{frac0x}d}"
        text = ("-" if negative else "") + (int_part or "0") + ("." + frac if frac else "")
        return decimal.Decimal(text), pos + size

    return read


def _frac_reader(fsp: int) -> tuple[int, Callable[[bytes, int], int]]:
    """(bytes, signed microseconds reader) of a temporal fraction."""
    if fsp in (1, 2):
        return 1, lambda b, p: int.from_bytes(b[p : p + 1], "big", signed=True) * 10000
    if fsp in (3, 4):
        return 2, lambda b, p: int.from_bytes(b[p : p + 2], "big", signed=True) * 100
    if fsp in (5, 6):
        return 3, lambda b, p: int.from_bytes(b[p : p + 3], "big", signed=True)
    return 0, lambda b, p: 0


def _zero_date_text(y: int, mo: int, d: int, h: int, mi: int, s: int, us: int, fsp: int) -> str:
    """A date Python cannot hold, as the server shows it."""
    text = f"{y:04d}-{mo:02d}-{d:02d} {h:02d}:{mi:02d}:{s:02d}"
    return text + (f".{us:06d}"[: fsp + 1] if fsp else "")


def _datetime_text(y: int, mo: int, d: int, h: int, mi: int, s: int, us: int, fsp: int) -> str:
    if y == 0 or mo == 0 or d == 0:
        return _zero_date_text(y, mo, d, h, mi, s, us, fsp)
    text = f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}"
    return text + f".{us:06d}" if us else text


def _datetime2_reader(fsp: int) -> Reader:
    fbytes, frac = _frac_reader(fsp)
    size = 5 + fbytes

    def read(buf: bytes, pos: int) -> tuple[Any, int]:
        v = int.from_bytes(buf[pos : pos + 5], "big") - 0x8000000000
        us = frac(buf, pos + 5) if fbytes else 0
        if us < 0:
            us = -us
        ymd, hms = v >> 17, v & 0x1FFFF
        ym = ymd >> 5
        text = _datetime_text(ym // 13, ym % 13, ymd & 31, hms >> 12, (hms >> 6) & 63, hms & 63, us, fsp)
        return text, pos + size

    return read


def _timestamp2_reader(fsp: int) -> Reader:
    fbytes, frac = _frac_reader(fsp)
    size = 4 + fbytes

    def read(buf: bytes, pos: int) -> tuple[Any, int]:
        secs = int.from_bytes(buf[pos : pos + 4], "big")
        us = frac(buf, pos + 4) if fbytes else 0
        if secs == 0 and us == 0:
            return _zero_date_text(0, 0, 0, 0, 0, 0, 0, fsp), pos + size
        t = _EPOCH + dt.timedelta(seconds=secs, microseconds=us)
        return t.isoformat(), pos + size

    return read


def _time2_reader(fsp: int) -> Reader:
    fbytes = {0: 0, 1: 1, 2: 1, 3: 2, 4: 2, 5: 3, 6: 3}[fsp]
    size = 3 + fbytes

    def read(buf: bytes, pos: int) -> tuple[Any, int]:
        if fbytes == 3:
            packed = int.from_bytes(buf[pos : pos + 6], "big") - 0x800000000000
        else:
            intpart = int.from_bytes(buf[pos : pos + 3], "big") - 0x800000
            frac = int.from_bytes(buf[pos + 3 : pos + 3 + fbytes], "big") if fbytes else 0
            if intpart < 0 and frac:
                intpart += 1
                frac -= 0x100 if fbytes == 1 else 0x10000
            frac *= 10000 if fbytes == 1 else 100
            packed = (intpart << 24) + frac
        sign = -1 if packed < 0 else 1
        packed = abs(packed)
        hms, us = packed >> 24, packed & 0xFFFFFF
        secs = (hms >> 12) % 1024 * 3600 + (hms >> 6) % 64 * 60 + hms % 64
        return dt.timedelta(microseconds=sign * (secs * 1_000_000 + us)), pos + size

    return read


def _date(buf: bytes, pos: int) -> tuple[Any, int]:
    v = int.from_bytes(buf[pos : pos + 3], "little")
    return f"{v >> 9:04d}-{(v >> 5) & 15:02d}-{v & 31:02d}", pos + 3


def _old_datetime(buf: bytes, pos: int) -> tuple[Any, int]:
    v = int.from_bytes(buf[pos : pos + 8], "little")
    d, t = divmod(v, 1_000_000)
    return _datetime_text(
        d // 10000, d // 100 % 100, d % 100, t // 10000, t // 100 % 100, t % 100, 0, 0
    ), pos + 8


def _old_timestamp(buf: bytes, pos: int) -> tuple[Any, int]:
    secs = int.from_bytes(buf[pos : pos + 4], "little")
    if secs == 0:
        return _zero_date_text(0, 0, 0, 0, 0, 0, 0, 0), pos + 4
    return (_EPOCH + dt.timedelta(seconds=secs)).isoformat(), pos + 4


def _old_time(buf: bytes, pos: int) -> tuple[Any, int]:
    v = int.from_bytes(buf[pos : pos + 3], "little", signed=True)
    sign, v = (-1 if v < 0 else 1), abs(v)
    return dt.timedelta(seconds=sign * (v // 10000 * 3600 + v // 100 % 100 * 60 + v % 100)), pos + 3


def _year(buf: bytes, pos: int) -> tuple[Any, int]:
    y = buf[pos]
    return (y + 1900 if y else 0), pos + 1


def _mysql_json(data: bytes) -> str:
    from pymysqlreplication.json_binary import parse_json

    if not data:
        return "null"
    value = parse_json(data[0], data[1:])
    return json.dumps(_json_plain(value), ensure_ascii=False)


def _json_plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, dict):
        return {_json_plain(k): _json_plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_plain(v) for v in value]
    if isinstance(value, decimal.Decimal):
        return float(value)
    return value


def column_reader(col: ColumnDef) -> tuple[Reader, pa.DataType]:
    """The reader and Arrow type of one column."""
    t = col.type
    if t in _INTS:
        signed_fmt, unsigned_fmt, signed_type, unsigned_type = _INTS[t]
        if col.unsigned:
            return _int_reader(unsigned_fmt), unsigned_type
        return _int_reader(signed_fmt), signed_type
    if t == INT24:
        return _int24_reader(col.unsigned), pa.uint32() if col.unsigned else pa.int32()
    if t == FLOAT:
        return _int_reader("<f"), pa.float32()
    if t == DOUBLE:
        return _int_reader("<d"), pa.float64()
    if t == NEWDECIMAL:
        arrow = pa.decimal128 if col.precision <= 38 else pa.decimal256
        return _decimal_reader(col.precision, col.scale), arrow(max(col.precision, 1), col.scale)
    if t in (VARCHAR, VAR_STRING, STRING):
        codec = col.charset or "utf-8"
        convert = _decoder(codec)
        if codec == "binary" and t == STRING and col.max_length:
            width = col.max_length

            def convert(b: bytes, width: int = width) -> bytes:
                return b.ljust(width, b"\0")

        prefix = 2 if col.max_length > 255 else 1
        return _lenbytes_reader(prefix, convert), pa.binary() if codec == "binary" else pa.string()
    if t in (BLOB, TINY_BLOB, MEDIUM_BLOB, LONG_BLOB):
        codec = col.charset or "binary"
        return _lenbytes_reader(
            col.length_size, _decoder(codec)
        ), pa.binary() if codec == "binary" else pa.string()
    if t == GEOMETRY:
        return _lenbytes_reader(col.length_size, bytes), pa.binary()
    if t == JSON:
        return _lenbytes_reader(col.length_size, _mysql_json), pa.string()
    if t == BIT:
        n = (col.bits + 7) // 8

        def read_bit(buf: bytes, pos: int) -> tuple[Any, int]:
            return bytes(buf[pos : pos + n]), pos + n

        return read_bit, pa.binary()
    if t == ENUM:
        members = ("",) + col.members
        size = col.size

        def read_enum(buf: bytes, pos: int) -> tuple[Any, int]:
            i = int.from_bytes(buf[pos : pos + size], "little")
            return (members[i] if i < len(members) else ""), pos + size

        return read_enum, pa.string()
    if t == SET:
        members = col.members
        size = col.size

        def read_set(buf: bytes, pos: int) -> tuple[Any, int]:
            mask = int.from_bytes(buf[pos : pos + size], "little")
            return ",".join(m for i, m in enumerate(members) if mask >> i & 1), pos + size

        return read_set, pa.string()
    if t == YEAR:
        return _year, pa.uint16()
    if t in (DATE, NEWDATE):
        return _date, pa.string()
    if t == DATETIME2:
        return _datetime2_reader(col.fsp), pa.string()
    if t == TIMESTAMP2:
        return _timestamp2_reader(col.fsp), pa.string()
    if t == TIME2:
        return _time2_reader(col.fsp), pa.duration("us")
    if t == DATETIME:
        return _old_datetime, pa.string()
    if t == TIMESTAMP:
        return _old_timestamp, pa.string()
    if t == TIME:
        return _old_time, pa.duration("us")
    raise ValueError(f"column {col.name}: unsupported MySQL column type {t}")


# ------------------------------------------------------------------------------------ compiled decoding
#
# Profile of the per-column reader loop (one closure call and one tuple per value, a list per image, a
# tuple per row, then zip(*rows) and pa.array per column): about half of the time went into calls and
# tuples. A layout now compiles, per columns-present bitmap, one Python function that decodes every
# row image of a ROWS event straight into one list per column (`append` of each list bound once per
# event): fixed-size types and strings are decoded inline, the rest call a value-only helper. Arrow
# arrays are built once per batch from those lists; DECIMAL values stay unscaled ints and become an
# Arrow decimal array from their bytes (no Decimal objects).


def _decimal_int_reader(precision: int, scale: int) -> tuple[int, Callable[[bytes, int], int]]:
    """(size, reader of the unscaled integer) of DECIMAL(precision, scale) in MySQL's binary format."""
    intg0, intg0x, frac0, frac0x, lead, tail, size = _decimal_layout(precision, scale)
    bits = 8 * size
    sign_bit = 1 << (bits - 1)
    ones = (1 << bits) - 1
    # (shift, mask, multiplier of what came before) of every digit group, most significant first
    groups: list[tuple[int, int, int]] = []
    off = 0
    for length, digits in [(lead, intg0x)] + [(4, 9)] * intg0 + [(4, 9)] * frac0 + [(tail, frac0x)]:
        if length:
            groups.append((bits - 8 * (off + length), (1 << 8 * length) - 1, 10**digits))
            off += length
    if len(groups) == 1:
        shift, mask, _ = groups[0]

        def read1(buf: bytes, pos: int) -> int:
            v = int.from_bytes(buf[pos : pos + size], "big")
            if v & sign_bit:
                return (v ^ sign_bit) >> shift & mask
            return -(((v ^ sign_bit ^ ones) >> shift) & mask)

        return size, read1
    frozen = tuple(groups)

    def read(buf: bytes, pos: int) -> int:
        v = int.from_bytes(buf[pos : pos + size], "big")
        negative = not v & sign_bit
        v ^= sign_bit
        if negative:
            v ^= ones
        out = 0
        for shift, mask, mul in frozen:
            out = out * mul + (v >> shift & mask)
        return -out if negative else out

    return size, read


def _decimal_arrow(values: list[Any], arrow_type: pa.DataType) -> pa.Array:
    """Unscaled ints (None: null) -> an Arrow decimal128/decimal256 array, built from its bytes."""
    n = len(values)
    nulls = values.count(None)
    validity = None
    if nulls:
        validity = pa.array([v is not None for v in values], pa.bool_()).buffers()[1]
        values = [0 if v is None else v for v in values]
    width = 16 if pa.types.is_decimal128(arrow_type) else 32
    if arrow_type.precision <= 18:
        import numpy as np

        low = np.array(values, dtype=np.int64)
        wide = np.empty((n, width // 8), dtype=np.int64)
        wide[:, 0] = low
        wide[:, 1:] = (low >> 63)[:, None]
        data = pa.py_buffer(wide.tobytes())
    else:
        data = pa.py_buffer(b"".join(v.to_bytes(width, "little", signed=True) for v in values))
    return pa.Array.from_buffers(arrow_type, n, [validity, data], null_count=nulls)


def _datetime2_value(fsp: int) -> tuple[int, Callable[[bytes, int], str]]:
    """(size, value reader) of DATETIME(fsp): ISO text, date and time parts memoized."""
    fbytes = {0: 0, 1: 1, 2: 1, 3: 2, 4: 2, 5: 3, 6: 3}[fsp]
    mul = {0: 0, 1: 10000, 2: 100, 3: 1}[fbytes]
    dates: dict[int, str] = {}
    times: dict[int, str] = {}

    def read(buf: bytes, pos: int) -> str:
        v = int.from_bytes(buf[pos : pos + 5], "big") - 0x8000000000
        ymd, hms = v >> 17, v & 0x1FFFF
        us = abs(int.from_bytes(buf[pos + 5 : pos + 5 + fbytes], "big", signed=True) * mul) if fbytes else 0
        date = dates.get(ymd)
        if date is None:
            ym = ymd >> 5
            y, mo, d = ym // 13, ym % 13, ymd & 31
            if y == 0 or mo == 0 or d == 0:
                return _zero_date_text(y, mo, d, hms >> 12, (hms >> 6) & 63, hms & 63, us, fsp)
            if len(dates) > 100_000:
                dates.clear()
            date = dates[ymd] = f"{y:04d}-{mo:02d}-{d:02d}T"
        time = times.get(hms)
        if time is None:
            time = times[hms] = f"{hms >> 12:02d}:{(hms >> 6) & 63:02d}:{hms & 63:02d}"
        if us:
            return f"{date}{time}.{us:06d}"
        return date + time

    return 5 + fbytes, read


def _len_expr(prefix: int) -> str:
    """Expression of a little-endian length prefix of `prefix` bytes at `pos`."""
    if prefix == 1:
        return "buf[pos]"
    if prefix == 2:
        return "buf[pos] | buf[pos + 1] << 8"
    return f"int.from_bytes(buf[pos : pos + {prefix}], 'little')"


def _column_code(i: int, col: ColumnDef, ns: dict[str, Any]) -> tuple[list[str], Callable[[list[Any]], pa.Array]]:
    """Statements that decode column `i` at `pos` into `a{i}(...)` and advance `pos`, and the converter
    of the column's value list to Arrow. Names the statements use are put into `ns`."""
    t = col.type
    reader, arrow_type = column_reader(col)

    def plain(values: list[Any]) -> pa.Array:
        return pa.array(values, type=arrow_type)

    convert: Callable[[list[Any]], pa.Array] = plain
    if t in _INTS or t in (FLOAT, DOUBLE):
        if t == TINY and col.unsigned:
            return [f"a{i}(buf[pos])", "pos += 1"], convert
        fmt = {FLOAT: "<f", DOUBLE: "<d"}.get(t) or _INTS[t][1 if col.unsigned else 0]
        s = struct.Struct(fmt)
        ns[f"u{i}"] = s.unpack_from
        return [f"a{i}(u{i}(buf, pos)[0])", f"pos += {s.size}"], convert
    if t == INT24:
        return [f"a{i}(int.from_bytes(buf[pos : pos + 3], 'little', signed={not col.unsigned}))", "pos += 3"], convert
    if t == NEWDECIMAL:
        size, read = _decimal_int_reader(col.precision, col.scale)
        ns[f"r{i}"] = read

        def decimals(values: list[Any]) -> pa.Array:
            return _decimal_arrow(values, arrow_type)

        return [f"a{i}(r{i}(buf, pos))", f"pos += {size}"], decimals
    if t == DATETIME2:
        size, read = _datetime2_value(col.fsp)
        ns[f"r{i}"] = read
        return [f"a{i}(r{i}(buf, pos))", f"pos += {size}"], convert
    prefix = 0
    codec = None
    if t in (VARCHAR, VAR_STRING, STRING):
        codec = col.charset or "utf-8"
        if not (codec == "binary" and t == STRING and col.max_length):
            prefix = 2 if col.max_length > 255 else 1
    elif t in (BLOB, TINY_BLOB, MEDIUM_BLOB, LONG_BLOB):
        codec = col.charset or "binary"
        prefix = col.length_size
    if prefix:
        value = "buf[pos : pos + n]"
        if codec == "utf-8":
            value += ".decode('utf-8', 'replace')"
        elif codec == "binary":
            value = f"bytes({value})"
        else:
            ns[f"c{i}"] = _decoder(codec)
            value = f"c{i}({value})"
        return [f"n = {_len_expr(prefix)}", f"pos += {prefix}", f"a{i}({value})", "pos += n"], convert
    ns[f"r{i}"] = reader
    return [f"v, pos = r{i}(buf, pos)", f"a{i}(v)"], convert


class Layout:
    """One table definition: how to decode its row images and the Arrow struct type of an image."""

    def __init__(self, db: str, table: str, columns: list[ColumnDef], key: tuple[str, ...]) -> None:
        self.db = db
        self.table = table
        self.columns = columns
        self.key = key
        self.names = [c.name for c in columns]
        self._ns: dict[str, Any] = {}
        self._code: list[list[str]] = []
        self.converters: list[Callable[[list[Any]], pa.Array]] = []
        self.types: list[pa.DataType] = []
        for i, c in enumerate(columns):
            code, convert = _column_code(i, c, self._ns)
            self._code.append(code)
            self.converters.append(convert)
            self.types.append(column_reader(c)[1])
        from dbus_ray.binlog.column_meta import column_field  # the MySQL type as field metadata

        self.image_type = pa.struct([column_field(c, t) for c, t in zip(columns, self.types)])
        self._fields = list(self.image_type)
        self._compiled: dict[tuple[bytes, bytes | None], Callable[..., int]] = {}
        self._absent: dict[bytes, tuple[str, ...]] = {}

    def absent(self, bitmap: bytes) -> tuple[str, ...]:
        """Names of the columns a columns-present bitmap leaves out of a row image (binlog_row_image MINIMAL
        or NOBLOB; () with FULL images)."""
        hit = self._absent.get(bitmap)
        if hit is None:
            hit = tuple(n for i, n in enumerate(self.names) if not bitmap[i >> 3] >> (i & 7) & 1)
            self._absent[bitmap] = hit
        return hit

    def _image_code(self, bitmap: bytes, lists: str, indent: str) -> list[str]:
        present = [i for i in range(len(self.columns)) if bitmap[i >> 3] >> (i & 7) & 1]
        null_len = (len(present) + 7) // 8
        lines = [f"nb = {_len_expr(null_len)}" if null_len else "nb = 0", f"pos += {null_len}"]
        for j, i in enumerate(present):
            lines.append(f"if nb >> {j} & 1:")
            lines.append(f"    a{i}(None)")
            lines.append("else:")
            lines += ["    " + s for s in self._code[i]]
        absent = sorted(set(range(len(self.columns))) - set(present))
        lines += [f"a{i}(None)" for i in absent]
        return [indent + _rename(s, lists) for s in lines]

    def _compile(self, bitmap: bytes, bitmap2: bytes | None) -> Callable[..., int]:
        n = len(self.columns)
        body = ["def decode(buf, pos, end, A, B):"]
        body.append("    " + ", ".join(f"a{i}" for i in range(n)) + (", " if n == 1 else "") + " = A")
        if bitmap2 is not None:
            body.append("    " + ", ".join(f"b{i}" for i in range(n)) + (", " if n == 1 else "") + " = B")
        body.append("    while pos < end:")
        body += self._image_code(bitmap, "a", "        ")
        if bitmap2 is not None:
            body += self._image_code(bitmap2, "b", "        ")
        body.append("    return pos")
        ns = dict(self._ns)
        exec(compile("\n".join(body), f"<layout {self.db}.{self.table}>", "exec"), ns)  # noqa: S102
        return ns["decode"]

    def read_rows(
        self,
        body: bytes,
        kind: str,
        bitmap: bytes,
        bitmap2: bytes | None = None,
        pos: int = 0,
        end: int | None = None,
    ) -> tuple[list[list[Any]] | None, list[list[Any]] | None]:
        """(before, after) images of every row of a rows event body (`body[pos:end]`), each a list of
        values per column, None where the event has no such image."""
        key = (bitmap, bitmap2 if kind == "update" else None)
        decode = self._compiled.get(key)
        if decode is None:
            decode = self._compiled[key] = self._compile(*key)
        n = len(self.columns)
        end = len(body) if end is None else end
        where = f"{kind} rows event of {self.db}.{self.table}"
        if not any(bitmap) or (kind == "update" and not any(bitmap2 or b"")):
            raise DecodeError(f"{where} names no column in its row images (corrupt event)")
        first: list[list[Any]] = [[] for _ in range(n)]
        second: list[list[Any]] | None = [[] for _ in range(n)] if kind == "update" else None
        try:
            stop = decode(
                body, pos, end, [c.append for c in first], None if second is None else [c.append for c in second]
            )
        except (IndexError, ValueError, TypeError, OverflowError, struct.error, decimal.InvalidOperation) as exc:
            raise DecodeError(f"cannot decode the {where} (truncated or corrupt): {type(exc).__name__}: {exc}") \
                from None
        if stop != end:
            raise DecodeError(f"{where} is truncated or corrupt: its row images end at byte {stop}, the event at {end}")
        if kind == "update":
            return first, second
        if kind == "insert":
            return None, first
        return first, None

    def struct(self, columns: list[list[Any]] | None, n: int, mask: list[bool] | None = None) -> pa.StructArray:
        """An Arrow struct column of `n` row images from per-column value lists (None: no image for
        any row; `mask`: True where a row has no image)."""
        if columns is None:
            children = [pa.nulls(n, t) for t in self.types]
            return pa.StructArray.from_arrays(children, fields=self._fields, mask=pa.array([True] * n, pa.bool_()))
        children = [convert(col) for convert, col in zip(self.converters, columns)]
        return pa.StructArray.from_arrays(
            children, fields=self._fields, mask=None if mask is None else pa.array(mask, pa.bool_())
        )

    def images(self, images: list[list[Any] | None]) -> pa.StructArray:
        """An Arrow struct column of row images, one value list per row (None: no image)."""
        empty = [None] * len(self.types)
        cols = [list(c) for c in zip(*[img if img is not None else empty for img in images])]
        return self.struct(cols, len(images), [img is None for img in images])


_CALL_RE = re.compile(r"\ba(\d+)\(")


def _rename(line: str, lists: str) -> str:
    """`a{i}(` calls of a statement -> `{lists}{i}(`."""
    return _CALL_RE.sub(lambda m: f"{lists}{m.group(1)}(", line)


def columns_of(table_map_event: Any, names: list[str] | None = None) -> list[ColumnDef]:
    """ColumnDefs of a python-mysql-replication TableMapEvent (`names` when the event carries none)."""
    out = []
    nulls = getattr(table_map_event, "null_bitmask", None) or b""
    for i, c in enumerate(table_map_event.columns):
        name = c.name or (names[i] if names and i < len(names) else f"col{i}")
        members: tuple[str, ...] = ()
        if c.type == ENUM and c.enum_values:
            members = tuple(c.enum_values[1:])
        elif c.type == SET and c.set_values:
            members = tuple(c.set_values)
        charset = None
        if c.type in (VARCHAR, VAR_STRING, STRING, BLOB, TINY_BLOB, MEDIUM_BLOB, LONG_BLOB):
            charset = codec_of(c.character_set_name, c.collation_name)
        data = c.__dict__
        out.append(
            ColumnDef(
                name=name,
                type=c.type,
                unsigned=bool(c.unsigned),
                charset=charset,
                max_length=data.get("max_length", 0),
                length_size=data.get("length_size", 0),
                precision=data.get("precision", 0),
                scale=data.get("decimals", 0),
                fsp=data.get("fsp", 0),
                bits=data.get("bits", 0),
                size=data.get("size", 0),
                members=members,
                nullable=not nulls or bool(nulls[i >> 3] >> (i & 7) & 1),
            )
        )
    return out
