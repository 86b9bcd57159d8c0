"""MySQL's binary JSON (`sql-common/json_binary.h`) written from Python values, for the test-only MySQL 8 binlog
writer (`tests.support.mysql8_binlog`): type byte + value; objects/arrays with count and size (2 bytes small, 4
large), key entries (offset, 2-byte length) in MySQL's key order (length, then bytes), value entries (type +
offset, or the value inlined: literals and [u]int16, [u]int32 too in the large format), keys, then values; strings
and opaque data with a 7-bits-per-byte length; opaque DECIMAL (precision, scale, decimal2bin) and DATE/TIME/DATETIME/
TIMESTAMP (8-byte packed value)."""

from __future__ import annotations

import datetime as dt
import decimal
import struct
from typing import Any

NEWDECIMAL = 246

class JsonType:
    """A JSON scalar written with an explicit binary type (0x05..0x0a int16..uint64, 0x0b double)."""

    def __init__(self, code: int, value: Any) -> None:
        self.code, self.value = code, value


INT16, UINT16, INT32, UINT32, INT64, UINT64, DOUBLE_T, STRING_T, OPAQUE = 5, 6, 7, 8, 9, 10, 11, 12, 15
_INT_FORMATS = {INT16: "<h", UINT16: "<H", INT32: "<i", UINT32: "<I", INT64: "<q", UINT64: "<Q", DOUBLE_T: "<d"}


class Opaque:
    """A JSON opaque value: MySQL column type `field_type` and its bytes."""

    def __init__(self, field_type: int, data: bytes) -> None:
        self.field_type, self.data = field_type, data


def _varlen(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def decimal_binary(value: decimal.Decimal, precision: int, scale: int) -> bytes:
    """MySQL's binary DECIMAL(precision, scale) (decimal2bin): 9-digit groups of 4 bytes, partial groups of
    1-4 bytes, sign bit flipped, every byte inverted for negatives."""
    dig2bytes = (0, 1, 1, 2, 2, 3, 3, 4, 4, 4)
    exact = decimal.Context(prec=100)
    sign, digits, _ = value.quantize(decimal.Decimal(1).scaleb(-scale), context=exact).as_tuple()
    text = "".join(map(str, digits)).rjust(precision, "0")
    intg, frac = text[: precision - scale], text[precision - scale:]
    out = bytearray()
    lead = len(intg) % 9
    if lead:
        out += int(intg[:lead]).to_bytes(dig2bytes[lead], "big")
    for i in range(lead, len(intg), 9):
        out += int(intg[i: i + 9]).to_bytes(4, "big")
    full = len(frac) // 9 * 9
    for i in range(0, full, 9):
        out += int(frac[i: i + 9]).to_bytes(4, "big")
    if len(frac) > full:
        out += int(frac[full:]).to_bytes(dig2bytes[len(frac) - full], "big")
    if sign:
        out = bytearray(b ^ 0xFF for b in out)
    out[0] ^= 0x80
    return bytes(out)


def opaque_decimal(text: str, precision: int | None = None, scale: int | None = None) -> Opaque:
    d = decimal.Decimal(text)
    exp = -d.as_tuple().exponent  # type: ignore[operator]
    scale = max(exp, 0) if scale is None else scale
    ndigits = len(d.as_tuple().digits)
    precision = max(ndigits, scale + 1) if precision is None else precision
    return Opaque(NEWDECIMAL, bytes([precision, scale]) + decimal_binary(d, precision, scale))


def _datetime_packed(y: int, mo: int, d: int, h: int, mi: int, s: int, us: int) -> int:
    ymd = ((y * 13 + mo) << 5) | d
    hms = (h << 12) | (mi << 6) | s
    return ((ymd << 17 | hms) << 24) + us


def opaque_date(d: dt.date) -> Opaque:
    return Opaque(10, struct.pack("<q", _datetime_packed(d.year, d.month, d.day, 0, 0, 0, 0)))


def opaque_datetime(t: dt.datetime, field_type: int = 12) -> Opaque:
    """DATETIME (12) or TIMESTAMP (7)."""
    return Opaque(field_type, struct.pack("<q", _datetime_packed(t.year, t.month, t.day, t.hour, t.minute, t.second,
                                                                 t.microsecond)))


def opaque_time(hours: int, minutes: int, seconds: int, us: int = 0, negative: bool = False) -> Opaque:
    packed_time = (((hours << 12) | (minutes << 6) | seconds) << 24) + us
    return Opaque(11, struct.pack("<q", -packed_time if negative else packed_time))


def mysql_key_order(keys: list[str]) -> list[str]:
    """Object keys in the order MySQL stores them: shorter first, then by their utf8mb4 bytes."""
    return sorted(keys, key=lambda k: (len(k.encode()), k.encode()))


def json_binary(value: Any, large: bool = False) -> bytes:
    """A JSON document as MySQL stores it: type byte + value. dict -> object (keys in MySQL's order), list ->
    array, None/True/False -> literal, int -> int16/int32/int64 (uint64 past int64), float -> double, str ->
    string, JsonType/Opaque as given. `large` forces the large format for every container."""
    t, data = _json_value(value, large)
    return bytes([t]) + data


def _json_value(v: Any, large: bool) -> tuple[int, bytes]:
    if isinstance(v, dict):
        return _container(v, large, True)
    if isinstance(v, list):
        return _container(v, large, False)
    if v is None or isinstance(v, bool):
        return 4, bytes([0 if v is None else 1 if v else 2])
    if isinstance(v, JsonType):
        if v.code == STRING_T:
            raw = v.value.encode()
            return STRING_T, _varlen(len(raw)) + raw
        return v.code, struct.pack(_INT_FORMATS[v.code], v.value)
    if isinstance(v, int):
        for code in (INT16, INT32, INT64):
            lo = -(1 << (8 * struct.calcsize(_INT_FORMATS[code]) - 1))
            if lo <= v < -lo:
                return code, struct.pack(_INT_FORMATS[code], v)
        return UINT64, struct.pack("<Q", v)
    if isinstance(v, float):
        return DOUBLE_T, struct.pack("<d", v)
    if isinstance(v, str):
        raw = v.encode()
        return STRING_T, _varlen(len(raw)) + raw
    if isinstance(v, Opaque):
        return OPAQUE, bytes([v.field_type]) + _varlen(len(v.data)) + v.data
    raise TypeError(f"no JSON binary form for {type(v).__name__}")


def _inlined(code: int, large: bool) -> bool:
    return code in (4, INT16, UINT16) or (large and code in (INT32, UINT32))


def _container(v: Any, large: bool, is_object: bool) -> tuple[int, bytes]:
    items = [(k, v[k]) for k in mysql_key_order(list(v))] if is_object else [(None, x) for x in v]
    for big in ((True,) if large else (False, True)):
        osz = 4 if big else 2
        n = len(items)
        header = 2 * osz + n * (1 + osz) + (n * (osz + 2) if is_object else 0)
        keys = b"".join(k.encode() for k, _ in items) if is_object else b""
        key_entries = b""
        pos = header
        for k, _ in items:
            if is_object:
                raw = k.encode()
                key_entries += pos.to_bytes(osz, "little") + len(raw).to_bytes(2, "little")
                pos += len(raw)
        value_entries = b""
        values = b""
        for _, x in items:
            code, data = _json_value(x, large)
            if _inlined(code, big):
                value_entries += bytes([code]) + data.ljust(osz, b"\0")
            else:
                offset = pos + len(values)
                if offset >= 1 << 8 * osz:
                    break
                value_entries += bytes([code]) + offset.to_bytes(osz, "little")
                values += data
        else:
            offset = 0
        size = header + len(keys) + len(values)
        if len(value_entries) < n * (1 + osz) or (not big and size > 0xFFFF):
            continue
        body = n.to_bytes(osz, "little") + size.to_bytes(osz, "little") + key_entries + value_entries + keys + values
        return (1 if is_object else 3) if big else (0 if is_object else 2), body
    raise AssertionError("unreachable")
