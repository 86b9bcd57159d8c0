"""MySQL's binary JSON (a JSON column in a MySQL row image) -> the text MySQL shows for it
(`SELECT CAST(j AS CHAR)`, `Json_wrapper::to_string` in `sql-common/json_dom.cc`):

- objects `{"k": v, ...}` and arrays `[v, ...]` with `", "` and `": "` separators, keys in stored order (MySQL
  stores them by length, then bytes); strings double-quoted, escaping `"`, `\\`, `\\b \\f \\n \\r \\t` and other
  control characters as `\\u00xx` (lower-case hex), nothing else;
- int16..int64 and uint16..uint64 as integers; a double as `my_gcvt(d, DOUBLE, 34)` prints it (shortest digits,
  `e` notation past 15 integer digits or below 1e-15, exponent without `+` or zero padding) with `.0` appended
  when it has neither `.` nor `e`;
- opaque DECIMAL as the number with its scale (`1.50`, unquoted); DATE `"2015-01-15"`, TIME `"23:24:25.000000"`,
  DATETIME/TIMESTAMP `"2015-01-15 23:24:25.000000"` (always 6 fraction digits); an opaque VAR_STRING as a string;
  any other opaque value `"base64:typeN:..."` (MySQL's base64, a newline every 76 characters).

Layout (`sql-common/json_binary.h`): type byte + value; objects/arrays: count and size (2 bytes small, 4 large),
key entries (offset, 2-byte length), value entries (type + inlined value or offset from the container start:
literals and [u]int16 inlined, [u]int32 too in the large format), then keys and values; strings and opaque data
with a 7-bits-per-byte length.
"""

from __future__ import annotations

import base64
import decimal
import re
import struct

from dbus_ray.mysql.values import decimal_digits, decimal_layout

_LITERALS = {0: "null", 1: "true", 2: "false"}
_INTS = {5: "<h", 6: "<H", 7: "<i", 8: "<I", 9: "<q", 10: "<Q"}
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_NEEDS_ESCAPE = re.compile(r'[\x00-\x1f"\\]')
_U16, _U32 = struct.Struct("<H"), struct.Struct("<I")
_SMALL_KEY, _LARGE_KEY = struct.Struct("<HH"), struct.Struct("<IH")
DEPTH_LIMIT = 100  # MySQL's JSON_DOCUMENT_MAX_DEPTH


def to_text(data: bytes) -> str:
    """A JSON column value (binary, without its length prefix) as MySQL's JSON text. ValueError when corrupt (the
    row decoder names the table and column)."""
    if not data:
        return "null"
    try:
        return _value(data[0], data, 1, len(data), 0, [len(data)])
    except (IndexError, ValueError, struct.error, UnicodeDecodeError, decimal.InvalidOperation) as exc:
        raise ValueError(f"corrupt MySQL binary JSON: {type(exc).__name__}: {exc}") from None


def quote(s: str) -> str:
    """A string as MySQL's JSON text quotes it."""
    if _NEEDS_ESCAPE.search(s) is None:
        return '"' + s + '"'
    return '"' + _NEEDS_ESCAPE.sub(lambda m: _ESCAPES.get(m.group()) or f"\\u{ord(m.group()):04x}", s) + '"'


def _varlen(buf: bytes, pos: int) -> tuple[int, int]:
    n = shift = 0
    for _ in range(5):
        b = buf[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        if not b & 0x80:
            return n, pos
        shift += 7
    raise ValueError("data length of more than 5 bytes")


def _value(t: int, buf: bytes, pos: int, end: int, depth: int, budget: list[int]) -> str:
    """The value of type `t` whose bytes start at `pos` (a container ends at `end`). `budget`: values left to
    read; a document holds fewer values than bytes, so more means entries share values (corrupt bytes that
    would take exponential time)."""
    budget[0] -= 1
    if budget[0] < 0:
        raise ValueError("more values than bytes: value entries overlap")
    if t in (0, 1, 2, 3):
        return _container(t, buf, pos, end, depth, budget)
    if t == 4:
        literal = _LITERALS.get(buf[pos])
        if literal is None:
            raise ValueError(f"unknown JSON literal {buf[pos]}")
        return literal
    if t in _INTS:
        return str(struct.unpack_from(_INTS[t], buf, pos)[0])
    if t == 11:
        return format_double(struct.unpack_from("<d", buf, pos)[0])
    if t == 12:
        n, pos = _varlen(buf, pos)
        if pos + n > len(buf):
            raise ValueError("string past the end of the value")
        return quote(buf[pos : pos + n].decode("utf-8"))
    if t == 15:
        field_type = buf[pos]
        n, pos = _varlen(buf, pos + 1)
        if pos + n > len(buf):
            raise ValueError("opaque value past the end of the value")
        return opaque_text(field_type, bytes(buf[pos : pos + n]))
    raise ValueError(f"unknown JSON value type {t}")


def _container(t: int, buf: bytes, pos: int, end: int, depth: int, budget: list[int]) -> str:
    if depth >= DEPTH_LIMIT:
        raise ValueError(f"nested deeper than {DEPTH_LIMIT}")
    large = t in (1, 3)
    is_object = t in (0, 1)
    osz = 4 if large else 2
    word = _U32 if large else _U16
    unpack = word.unpack_from
    count = unpack(buf, pos)[0]
    size = unpack(buf, pos + osz)[0]
    limit = pos + size
    if limit > end:
        raise ValueError(f"container of {size} bytes past the end of its value")
    key_entries = pos + 2 * osz
    value_entries = key_entries + (count * (osz + 2) if is_object else 0)
    if value_entries + count * (1 + osz) > limit:
        raise ValueError("container header larger than the container")
    inlined = (4, 5, 6, 7, 8) if large else (4, 5, 6)
    key_unpack = (_LARGE_KEY if large else _SMALL_KEY).unpack_from
    parts = []
    for i in range(count):
        entry = value_entries + i * (1 + osz)
        vt = buf[entry]
        if vt in inlined:
            value = _value(vt, buf, entry + 1, limit, depth + 1, budget)
        else:
            offset = unpack(buf, entry + 1)[0]
            if offset >= size:
                raise ValueError(f"value offset {offset} past the container's {size} bytes")
            value = _value(vt, buf, pos + offset, limit, depth + 1, budget)
        if is_object:
            ko, kn = key_unpack(buf, key_entries + i * (osz + 2))
            if ko + kn > size:
                raise ValueError("key past the end of its object")
            parts.append(quote(buf[pos + ko : pos + ko + kn].decode("utf-8")) + ": " + value)
        else:
            parts.append(value)
    if is_object:
        return "{" + ", ".join(parts) + "}"
    return "[" + ", ".join(parts) + "]"


def format_double(d: float) -> str:
    """A double as MySQL's JSON text prints it (`my_gcvt(d, MY_GCVT_ARG_DOUBLE, 34)` + `.0` when needed)."""
    if d != d or d in (float("inf"), float("-inf")):
        raise ValueError(f"{d} is not a JSON number")
    if 1e-4 <= abs(d) < 1e15:  # both print the shortest digits in positional notation, with ".0" when whole
        return repr(d)
    return my_gcvt_text(d)


def my_gcvt_text(d: float) -> str:
    """`format_double` by my_gcvt's own rules, for any finite double."""
    if d == 0:
        return "-0.0" if str(d).startswith("-") else "0.0"
    sign, digits, exponent = decimal.Decimal(repr(d)).as_tuple()
    text = "".join(map(str, digits)).rstrip("0") or "0"
    n = len(text)
    decpt = len(digits) + int(exponent)  # the decimal point after this many digits
    width = 34 - (1 if sign else 0)
    exp_len = 1 + (decpt >= 101 or decpt <= -99) + (decpt >= 11 or decpt <= -9)
    have_space = (n - decpt + 2 if decpt <= 0 else n + 1 if decpt < n else decpt) <= width
    force_e = decpt <= 0 and width <= 2 - decpt and width >= 3 + exp_len
    use_f = (have_space or (decpt <= width and (decpt >= -1 or (decpt == -2 and (n > 1 or not force_e)))
                            and not force_e)) and (not have_space or (decpt >= -14 and (decpt <= 15 or n > decpt)))
    out = "-" if sign else ""
    if use_f:
        if decpt <= 0:
            out += "0." + "0" * -decpt + text
        elif decpt < n:
            out += text[:decpt] + "." + text[decpt:]
        else:
            out += text + "0" * (decpt - n)
    else:
        e = decpt - 1
        out += text[0] + ("." + text[1:] if n > 1 else "") + "e" + str(e)
    if "." not in out and "e" not in out:
        out += ".0"
    return out


def _decimal_text(precision: int, scale: int, raw: bytes) -> str:
    intg0, _, frac0, frac0x, lead, tail, size = decimal_layout(precision, scale)
    if len(raw) != size:
        raise ValueError(f"DECIMAL({precision},{scale}) of {len(raw)} bytes, expected {size}")
    negative, whole, frac = decimal_digits(raw, intg0, frac0, frac0x, lead, tail)
    whole = whole.lstrip("0") or "0"
    text = whole + ("." + frac if scale else "")
    if negative and (whole != "0" or frac.strip("0")):
        text = "-" + text
    return text


def _unpack_datetime(v: int) -> tuple[int, int, int, int, int, int, int]:
    v = abs(v)
    us = v & 0xFFFFFF
    ymdhms = v >> 24
    ymd, hms = ymdhms >> 17, ymdhms & 0x1FFFF
    ym = ymd >> 5
    return ym // 13, ym % 13, ymd & 31, hms >> 12, (hms >> 6) & 63, hms & 63, us


def opaque_text(field_type: int, data: bytes) -> str:
    """An opaque JSON value as MySQL prints it."""
    if field_type == 246:  # NEWDECIMAL: precision, scale, binary decimal
        return _decimal_text(data[0], data[1], data[2:])
    if field_type in (10, 12, 7, 11):  # DATE, DATETIME, TIMESTAMP, TIME: an 8-byte packed value
        v = struct.unpack("<q", data)[0]
        if field_type == 11:
            sign = "-" if v < 0 else ""
            v = abs(v)
            us, hms = v & 0xFFFFFF, v >> 24
            return f'"{sign}{hms >> 12:02d}:{(hms >> 6) & 63:02d}:{hms & 63:02d}.{us:06d}"'
        y, mo, d, h, mi, s, us = _unpack_datetime(v)
        if field_type == 10:
            return f'"{y:04d}-{mo:02d}-{d:02d}"'
        return f'"{y:04d}-{mo:02d}-{d:02d} {h:02d}:{mi:02d}:{s:02d}.{us:06d}"'
    if field_type == 253:  # VAR_STRING: printed as a JSON string
        return quote(data.decode("utf-8"))
    encoded = base64.b64encode(data).decode("ascii")
    lines = "\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76))
    return quote(f"base64:type{field_type}:{lines}")
