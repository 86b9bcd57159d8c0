"""The row decoder of the `mysql` source: a `Layout` per table definition (as its TABLE_MAP event
describes it) turns the row images of ROWS events into one value list per column, then Arrow columns.
The value and Arrow type of each column type are in `dbus_ray.mysql.values`.

Profile of the per-column reader loop (one closure call and one tuple per value, a list per image, a
tuple per row, then zip(*rows) and pa.array per column): about half of the time went into calls and
tuples. A layout now compiles, per columns-present bitmap, one Python function that decodes every
row image of a ROWS event straight into one list per column (`append` of each list bound once per
event): fixed-size types and strings are decoded inline, the rest call a value-only helper. Arrow
arrays are built once per batch from those lists; DECIMAL values stay unscaled ints and become an
Arrow decimal array from their bytes (no Decimal objects).
"""

from __future__ import annotations

import decimal
import itertools
import os
import re
import struct
from collections.abc import Callable
from typing import Any

import pyarrow as pa

from dbus_ray.errors import DecodeError
from dbus_ray.mysql.column_meta import column_field
from dbus_ray.mysql.fixed_columns import datetime2_column, decimal_column, decimal_groups
from dbus_ray.mysql.values import (
    _INTS,
    BLOB,
    DATETIME2,
    DOUBLE,
    ENUM,
    FLOAT,
    INT24,
    LONG_BLOB,
    MEDIUM_BLOB,
    NEWDECIMAL,
    SET,
    STRING,
    TINY,
    TINY_BLOB,
    VAR_STRING,
    VARCHAR,
    ColumnDef,
    _decoder,
    _zero_date_text,
    codec_of,
    column_reader,
    decimal_layout,
    decode_text,
)


def _decimal_int_reader(precision: int, scale: int) -> tuple[int, Callable[[bytes, int], int]]:
    """(size, reader of the unscaled integer) of DECIMAL(precision, scale) in MySQL's binary format."""
    intg0, intg0x, frac0, frac0x, lead, tail, size = decimal_layout(precision, scale)
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


_TWO = [f"{i:02d}" for i in range(64)]  # the two digits of an hour, minute or second field (0..63)


def _datetime2_value(fsp: int) -> tuple[int, Callable[[bytes, int], str]]:
    """(size, value reader) of DATETIME(fsp): ISO text, date and time parts memoized."""
    fbytes = {0: 0, 1: 1, 2: 1, 3: 2, 4: 2, 5: 3, 6: 3}[fsp]
    mul = {0: 0, 1: 10000, 2: 100, 3: 1}[fbytes]
    dates: dict[int, str] = {}
    times: dict[int, str] = {}
    size, fbits = 5 + fbytes, 8 * fbytes
    fmask, fsign, fwrap = (1 << fbits) - 1, (1 << fbits) >> 1, 1 << fbits

    def read(buf: bytes, pos: int) -> str:
        v = int.from_bytes(buf[pos : pos + size], "big")  # the date-time and its fraction in one read
        us = 0
        if fbits:
            us = v & fmask
            if us & fsign:  # the fraction is signed
                us -= fwrap
            us = abs(us * mul)
            v >>= fbits
        v -= 0x8000000000
        ymd, hms = v >> 17, v & 0x1FFFF
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
            time = times[hms] = f"{_TWO[hms >> 12]}:{_TWO[(hms >> 6) & 63]}:{_TWO[hms & 63]}"
        if us:
            return f"{date}{time}.{us:06d}"
        return date + time

    return size, read


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
        if col.precision <= 18:  # the raw bytes, converted column-wise (`fixed_columns`)
            intg0, intg0x, frac0, frac0x, lead, tail, _ = decimal_layout(col.precision, col.scale)
            groups = decimal_groups(lead, intg0, intg0x, frac0, frac0x, tail)

            def fixed(values: list[Any]) -> pa.Array:
                return decimal_column(values, size, groups, arrow_type, read, _decimal_arrow)

            return [f"a{i}(buf[pos : pos + {size}])", f"pos += {size}"], fixed
        ns[f"r{i}"] = read

        def decimals(values: list[Any]) -> pa.Array:
            return _decimal_arrow(values, arrow_type)

        return [f"a{i}(r{i}(buf, pos))", f"pos += {size}"], decimals
    if t == DATETIME2:  # the raw bytes, turned into text column-wise (`fixed_columns`)
        size, read = _datetime2_value(col.fsp)

        def datetimes(values: list[Any]) -> pa.Array:
            return datetime2_column(values, col.fsp, size, read)

        return [f"a{i}(buf[pos : pos + {size}])", f"pos += {size}"], datetimes
    prefix = 0
    codec = None
    if t in (VARCHAR, VAR_STRING, STRING):
        codec = col.charset or "utf-8"
        if not (codec == "binary" and t == STRING and col.max_length):
            prefix = 2 if col.max_length > 255 else 1
    elif t in (BLOB, TINY_BLOB, MEDIUM_BLOB, LONG_BLOB):
        codec = col.charset or "binary"
        prefix = col.length_size
    if col.compressed:
        prefix = 0  # through the column reader, which uncompresses
    if prefix:
        value = "buf[pos : pos + n]"
        if codec == "utf-8":
            value += ".decode('utf-8')"
        elif codec == "binary":
            value = f"bytes({value})"
        else:
            ns[f"c{i}"] = _decoder(codec)
            value = f"c{i}({value})"
        return [f"n = {_len_expr(prefix)}", f"pos += {prefix}", f"a{i}({value})", "pos += n"], convert
    ns[f"r{i}"] = reader
    return [f"v, pos = r{i}(buf, pos)", f"a{i}(v)"], convert


_TOKENS = itertools.count()
_PROCESS = os.urandom(6).hex()  # a token names one layout of one process, never another (pids are reused)
#: Layouts received from other processes (a decoder actor's), by token: each compiled once, not per batch.
_RECEIVED: dict[str, Layout] = {}
_RECEIVED_MAX = 4096


def _received(token: str, db: str, table: str, columns: list[ColumnDef], key: tuple[str, ...]) -> Layout:
    layout = _RECEIVED.get(token)
    if layout is None:
        if len(_RECEIVED) >= _RECEIVED_MAX:
            del _RECEIVED[next(iter(_RECEIVED))]
        layout = _RECEIVED[token] = Layout(db, table, columns, key, token)
    return layout


class Layout:
    """One table definition: how to decode its row images and the Arrow struct type of an image. Pickled as
    its definition and a token, so another process compiles it once (`dbus_ray.mysql.decode_pool`)."""

    def __init__(self, db: str, table: str, columns: list[ColumnDef], key: tuple[str, ...],
                 token: str | None = None) -> None:
        self.token = token if token is not None else f"{_PROCESS}.{next(_TOKENS)}"
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
        self.image_type = pa.struct([column_field(c, t) for c, t in zip(columns, self.types)])
        self._fields = list(self.image_type)
        self._compiled: dict[tuple[bytes, bytes | None], Callable[..., tuple[int, list[list[Any]], Any]]] = {}
        self._absent: dict[bytes, tuple[str, ...]] = {}
        # (event type, bitmap, second bitmap) of a plain rows event -> [decoder, op, absent, one-row decoder or
        # None (an update, or an event of more rows was seen)]: `row_images`
        self.plain: dict[tuple[int, bytes, bytes | None], list[Any]] = {}

    def __reduce__(self) -> tuple[Any, ...]:
        return _received, (self.token, self.db, self.table, self.columns, self.key)

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

    def _compile(self, bitmap: bytes, bitmap2: bytes | None) -> Callable[..., tuple[int, list[list[Any]], Any]]:
        """decode(buf, pos, end) -> (the position after the images, the first image's value list per column,
        the second's (None without `bitmap2`)): it makes its lists and binds their appends itself (one-row
        events are most of a busy OLTP binlog: per-event setup counts)."""
        n = len(self.columns)
        body = ["def decode(buf, pos, end):"]
        for i in range(n):
            body.append(f"    _ca{i} = []; a{i} = _ca{i}.append")
            if bitmap2 is not None:
                body.append(f"    _cb{i} = []; b{i} = _cb{i}.append")
        body.append("    while pos < end:")
        body += self._image_code(bitmap, "a", "        ")
        if bitmap2 is not None:
            body += self._image_code(bitmap2, "b", "        ")
        second = "[" + ", ".join(f"_cb{i}" for i in range(n)) + "]" if bitmap2 is not None else "None"
        body.append("    return pos, [" + ", ".join(f"_ca{i}" for i in range(n)) + "], " + second)
        ns = dict(self._ns)
        exec(compile("\n".join(body), f"<layout {self.db}.{self.table}>", "exec"), ns)  # noqa: S102
        return ns["decode"]

    def one_row_decoder(self, bitmap: bytes) -> Callable[..., Any]:
        """decode1(buf, pos, end) -> as the compiled decoder of a one-image event, when its images are one row;
        None when more follow. The values go to locals and the column lists are made at the end (no list and
        bound `append` per column before the row, no append calls): one-row events are what a busy OLTP
        primary writes."""
        n = len(self.columns)
        body = ["def decode1(buf, pos, end):"]
        body += [_CALL_RE.sub(lambda m: f"v{m.group(1)} = (", line) for line in self._image_code(bitmap, "a", "    ")]
        body.append("    if pos != end:")
        body.append("        return None")
        body.append("    return pos, [" + ", ".join(f"[v{i}]" for i in range(n)) + "], None")
        ns = dict(self._ns)
        exec(compile("\n".join(body), f"<layout {self.db}.{self.table} one row>", "exec"), ns)  # noqa: S102
        return ns["decode1"]

    def decoder(self, kind: str, bitmap: bytes, bitmap2: bytes | None) -> Callable[..., Any]:
        """The compiled decoder of the row images of a `kind` rows event with these columns-present bitmaps."""
        key = (bitmap, (bitmap2 or b"") if kind == "update" else None)  # checked when first compiled
        decode = self._compiled.get(key)
        if decode is None:
            if not any(bitmap) or (kind == "update" and not any(bitmap2 or b"")):
                raise DecodeError(f"{kind} rows event of {self.db}.{self.table} names no column in its row images "
                                  "(corrupt event)")
            decode = self._compiled[key] = self._compile(*key)
        return decode

    def corrupt(self, kind: str, exc: BaseException) -> DecodeError:
        where = f"{kind} rows event of {self.db}.{self.table}"
        return DecodeError(f"cannot decode the {where} (truncated or corrupt): {type(exc).__name__}: {exc}")

    def truncated(self, kind: str, stop: int, end: int) -> DecodeError:
        where = f"{kind} rows event of {self.db}.{self.table}"
        return DecodeError(f"{where} is truncated or corrupt: its row images end at byte {stop}, the event at {end}")

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
        decode = self.decoder(kind, bitmap, bitmap2)
        end = len(body) if end is None else end
        try:
            stop, first, second = decode(body, pos, end)
        except DECODE_ERRORS as exc:
            raise self.corrupt(kind, exc) from None
        if stop != end:
            raise self.truncated(kind, stop, end)
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


#: what a compiled decoder raises on a truncated or corrupt row image
DECODE_ERRORS = (IndexError, ValueError, TypeError, OverflowError, struct.error, decimal.InvalidOperation)

_CALL_RE = re.compile(r"\ba(\d+)\(")


def _rename(line: str, lists: str) -> str:
    """`a{i}(` calls of a statement -> `{lists}{i}(`."""
    return _CALL_RE.sub(lambda m: f"{lists}{m.group(1)}(", line)


def _members(raw: tuple[bytes, ...], c: Any, name: str) -> tuple[str, ...]:
    """ENUM/SET member names as the TABLE_MAP event writes them (bytes in the column's charset) -> text."""
    codec = codec_of(c.character_set_name, c.collation_name)
    if codec == "binary":
        codec = "utf-8"  # members of a binary ENUM/SET: SELECT gives their bytes; text when they are UTF-8
    try:
        return tuple(decode_text(m, codec) for m in raw)
    except UnicodeDecodeError as exc:
        raise ValueError(f"column {name}: a member name is not valid {c.character_set_name}: {exc.reason}") from None


def columns_of(table_map_event: Any, names: list[str] | None = None) -> list[ColumnDef]:
    """ColumnDefs of a python-mysql-replication TableMapEvent's table (`names` when the event carries none).
    Set by the stream on it: `enum_members`/`set_members` (member names as bytes, see
    `replica.table_map_extras`) and `compressed` (positions of MariaDB compressed columns)."""
    out = []
    nulls = getattr(table_map_event, "null_bitmask", None) or b""
    raw_enums = iter(getattr(table_map_event, "enum_members", None) or ())
    raw_sets = iter(getattr(table_map_event, "set_members", None) or ())
    compressed = getattr(table_map_event, "compressed", None) or frozenset()
    for i, c in enumerate(table_map_event.columns):
        name = c.name or (names[i] if names and i < len(names) else f"col{i}")
        members: tuple[str, ...] = ()
        if c.type == ENUM:
            raw = next(raw_enums, None)
            if raw is not None:
                members = _members(raw, c, name)
            elif c.enum_values:
                members = tuple(c.enum_values[1:])
        elif c.type == SET:
            raw = next(raw_sets, None)
            if raw is not None:
                members = _members(raw, c, name)
            elif c.set_values:
                members = tuple(c.set_values)
        if c.type in (ENUM, SET) and not members:  # not written with binlog_row_metadata=MINIMAL
            raise ValueError(f"column {name} is an ENUM/SET whose member names the binlog does not carry: set "
                             "binlog_row_metadata=FULL on the server to capture it")
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
                compressed=i in compressed,
                nullable=not nulls or bool(nulls[i >> 3] >> (i & 7) & 1),
            )
        )
    return out
