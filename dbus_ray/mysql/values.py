"""Column values of the `mysql` source: per MySQL column type, how its binlog bytes read (`column_reader`)
and which Arrow type and value it becomes; the compiled row decoder is `dbus_ray.mysql.decoder`.

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
CHAR/VARCHAR/TEXT            -> string             -> decoded with the column charset, exactly as the
                                                      server maps it (`dbus_ray.mysql.charsets`)
BINARY/VARBINARY/BLOB        -> binary             -> bytes, BINARY(n) zero-padded to n (base64)
ENUM / SET                   -> string             -> the member / the members joined by `,` (as SELECT)
JSON                         -> string             -> MariaDB: the stored text; MySQL: its JSON text as
                                                      `CAST(j AS CHAR)` shows it
GEOMETRY                     -> binary             -> as SELECT returns it: 4-byte LE SRID + WKB

Dates are strings because an Arrow date/timestamp cannot hold MySQL's zero dates exactly. NULL is
null everywhere. With `binlog_row_image=MINIMAL` or `NOBLOB` a column missing from an image is null in
the image and named in the row's `absent` (see `dbus_ray.model.ABSENT_TYPE`), so SQL NULL and "not in
the image" stay apart.
"""

from __future__ import annotations

import datetime as dt
import decimal
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from dbus_ray.mysql.charsets import codec_of, decode_text  # noqa: F401 - the decoder and stream import them here
from dbus_ray.mysql.charsets import decoder as _decoder

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
    compressed: bool = False  # MariaDB `... COMPRESSED` column: values as `uncompress_column` reads them


def uncompress_column(raw: bytes) -> bytes:
    """A value of a MariaDB compressed column (`TEXT`/`BLOB`/`VARCHAR ... COMPRESSED`, 10.3+) as the row image
    holds it -> the value. Empty for an empty value; else a header byte whose high nibble is the method: 0,
    the value follows as is (too short to gain); 8, zlib: the low 3 bits are n, the value's length in the n
    big-endian bytes that follow, bit 3 set means a raw deflate stream (no zlib wrapper), then the stream.
    ValueError when it is not one (MariaDB sql/field_comp.cc)."""
    if not raw:
        return b""
    head = raw[0]
    method = head >> 4
    if method == 0:
        return bytes(raw[1:])
    n = head & 0x07
    if method != 8 or not 1 <= n <= 4:
        raise ValueError(f"compressed column value with an unknown header byte {head:#04x}")
    size = int.from_bytes(raw[1 : 1 + n], "big")
    try:
        out = zlib.decompress(raw[1 + n :], -zlib.MAX_WBITS if head & 0x08 else zlib.MAX_WBITS)
    except zlib.error as exc:
        raise ValueError(f"corrupt compressed column value: {exc}") from None
    if len(out) != size:
        raise ValueError(f"compressed column value holds {len(out)} bytes, its header says {size}")
    return out


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


def decimal_layout(precision: int, scale: int) -> tuple[int, int, int, int, int, int, int]:
    """MySQL's binary DECIMAL: (full 9-digit groups and leftover digits of the integer part, the same of
    the fraction, bytes of the leading and trailing partial groups, total size in bytes)."""
    intg0, intg0x = divmod(precision - scale, 9)
    frac0, frac0x = divmod(scale, 9)
    lead, tail = _DIG2BYTES[intg0x], _DIG2BYTES[frac0x]
    return intg0, intg0x, frac0, frac0x, lead, tail, lead + intg0 * 4 + frac0 * 4 + tail


def decimal_digits(raw: bytes, intg0: int, frac0: int, frac0x: int, lead: int, tail: int) -> tuple[bool, str, str]:
    """A binary DECIMAL of the layout `decimal_layout` gives -> (negative, integer digits as stored, with
    leading zeros, "" for none; fraction digits, the scale's count)."""
    b = bytearray(raw)
    negative = not b[0] & 0x80
    b[0] ^= 0x80
    if negative:
        b = bytearray(x ^ 0xFF for x in b)
    p = lead
    whole = str(int.from_bytes(b[:lead], "big")) if lead else ""
    for _ in range(intg0):
        whole += f"{int.from_bytes(b[p : p + 4], 'big'):09d}"
        p += 4
    frac = ""
    for _ in range(frac0):
        frac += f"{int.from_bytes(b[p : p + 4], 'big'):09d}"
        p += 4
    if tail:
        frac += f"{int.from_bytes(b[p : p + tail], 'big'):0{frac0x}d}"
    return negative, whole, frac


def _decimal_reader(precision: int, scale: int) -> Reader:
    intg0, _, frac0, frac0x, lead, tail, size = decimal_layout(precision, scale)

    def read(buf: bytes, pos: int) -> tuple[Any, int]:
        negative, whole, frac = decimal_digits(buf[pos : pos + size], intg0, frac0, frac0x, lead, tail)
        text = ("-" if negative else "") + (whole or "0") + ("." + frac if frac else "")
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
    """A MySQL binary JSON value as MySQL's own JSON text (`dbus_ray.mysql.json_binary`)."""
    from dbus_ray.mysql.json_binary import to_text

    return to_text(data)


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
    if col.compressed:
        prefix = col.length_size or (2 if col.max_length > 255 else 1)
        codec = col.charset or "binary"
        text = _decoder(codec)
        return _lenbytes_reader(prefix, lambda b: text(uncompress_column(b))), \
            pa.binary() if codec == "binary" else pa.string()
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
    if t == ENUM:  # index 0 is MySQL's error value ''; past the members (when known) the bytes are corrupt
        members = ("",) + col.members
        size, known, name = col.size, bool(col.members), col.name

        def read_enum(buf: bytes, pos: int) -> tuple[Any, int]:
            i = int.from_bytes(buf[pos : pos + size], "little")
            if i < len(members):
                return members[i], pos + size
            if known:
                raise ValueError(f"ENUM column {name}: index {i} is past its {len(members) - 1} members")
            return "", pos + size

        return read_enum, pa.string()
    if t == SET:  # a bit past the members (when known) is corrupt bytes
        members = col.members
        size, name, beyond = col.size, col.name, ~((1 << len(col.members)) - 1) if col.members else 0

        def read_set(buf: bytes, pos: int) -> tuple[Any, int]:
            mask = int.from_bytes(buf[pos : pos + size], "little")
            if mask & beyond:
                raise ValueError(f"SET column {name}: bit {(mask & beyond).bit_length() - 1} is past its "
                                 f"{len(members)} members")
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
