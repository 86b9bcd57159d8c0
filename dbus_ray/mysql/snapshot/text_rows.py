"""A snapshot SELECT's rows, read column-wise from MySQL's text protocol.

pymysql reads a result row by row: a Python object per packet, a decode and a converter call per value,
then the snapshot turned those values into Arrow column by column. Here the row packets are split
straight from the socket into one list of raw values per column (`fetch`), and each column becomes its
Arrow image in one vectorized step (`TextRows.image`): integers, decimals and doubles by Arrow's own
parsers (which refuse what they cannot read exactly), UTF-8 text by Arrow's validation, DATETIME and
TIMESTAMP by text operations giving exactly what the per-value path gave (pymysql's `convert_datetime`
and `datetime.isoformat`). Any other column, and any value outside the fast path's forms, goes through
exactly pymysql's converter and the snapshot's own (`catalog._converter`), as before. Text in a charset
other than UTF-8 comes as its stored bytes (`catalog.raw_codec`) and is decoded by the binlog decoder's
strict decoder of the charset (`dbus_ray.mysql.charsets`; a single-byte charset's whole column at once): a
byte with no character in the charset stops the snapshot with one line (`undecodable`), where the server's
own conversion would have sent `?`.

The connection is pymysql's: it sends the query and reads the column definitions; only the row packets
are read here (the result is then finished as pymysql expects)."""

from __future__ import annotations

import datetime as dt
import decimal
import functools
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pymysql
from pymysql import converters as mc
from pymysql import err
from pymysql.protocol import MysqlPacket

from dbus_ray.errors import DbusError
from dbus_ray.mysql.charsets import SINGLE_BYTE, decoder

#: Bytes asked of the socket at a time.
READ_SIZE = 1 << 20
#: A packet of this length continues in the next one (a row of 16 MiB or more).
MAX_PACKET = 0xFFFFFF
_LOST = 2013  # CR_SERVER_LOST

_DATETIME = r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(\.\d{1,6})?$"
_DATE = r"^\d{4}-\d{2}-\d{2}$"
_DAYS = pa.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], pa.int32())


def iso_date(v: Any) -> Any:
    """DATE / DATETIME as the binlog decoder gives it (a zero date, which pymysql leaves as text, as is)."""
    return v.isoformat() if isinstance(v, (dt.date, dt.datetime)) else v


def iso_utc(v: Any) -> Any:
    """TIMESTAMP (read in a session at UTC) as the binlog decoder gives it."""
    return v.replace(tzinfo=dt.UTC).isoformat() if isinstance(v, dt.datetime) else v


class TextRows:
    """Raw values of a result, one list per column (bytes, None for NULL), with pymysql's decoding of
    each column: (encoding or None, converter or None)."""

    def __init__(self, columns: list[list[bytes | None]], decoding: list[tuple[str | None, Any]]) -> None:
        self.columns = columns
        self.decoding = decoding

    def __len__(self) -> int:
        return len(self.columns[0]) if self.columns else 0

    def row(self, row: int) -> tuple[Any, ...]:
        """The values pymysql gives (decoded, converted) of one row (text read as its stored bytes stays bytes:
        `SnapTable.page_key` decodes a key's)."""
        return tuple(_values([raw[row]], *decoding, None)[0] for raw, decoding in zip(self.columns, self.decoding))

    def image(self, t: Any) -> pa.StructArray:
        """The rows as the snapshot table `t`'s Arrow image (the binlog decoder's values)."""
        children = []
        for i, (col, ours, typ) in enumerate(zip(t.columns, t.converters, t.types)):
            encoding, convert = self.decoding[i]
            try:
                if t.codecs[i] is not None:
                    children.append(strict_text(self.columns[i], t.codecs[i]).cast(typ))
                else:
                    children.append(_column(self.columns[i], encoding, convert, ours, typ))
            except Undecodable as exc:
                raise DbusError(undecodable(t, i, exc.error, self._key(t, exc.row))) from None
            except (pa.ArrowException, ValueError, UnicodeDecodeError, decimal.InvalidOperation) as exc:
                raise DbusError(f"snapshot of {t.name}: column {col.name}: a value cannot be read exactly: "
                                f"{str(exc).splitlines()[0]}") from None
        return pa.StructArray.from_arrays(children, fields=t.fields)

    def _key(self, t: Any, row: int) -> str:
        """` in the row with key a=1, ...`, or "" when its key cannot be told."""
        try:
            values = t.page_key(self.row(row))
        except Exception:  # noqa: BLE001 - the key itself undecodable: the line goes without it
            return ""
        shown = (repr(v) if isinstance(v, (str, bytes)) else str(v) for v in values)
        return " in the row with key " + ", ".join(f"{k}={v}" for k, v in zip(t.page, shown))


# ------------------------------------------------------------------------------- text in its charset


class Undecodable(Exception):
    """Value `row` of a column holds bytes with no character in its charset (`error`)."""

    def __init__(self, row: int, error: UnicodeDecodeError) -> None:
        super().__init__(row, error)
        self.row, self.error = row, error


def undecodable(t: Any, i: int, error: UnicodeDecodeError, where: str = "") -> str:
    """The one line that stops a snapshot at column `i` of table `t`, whose stored value (`where`: which
    row) holds bytes its charset has no character for."""
    col, bad = t.columns[i], bytes(error.object[error.start : error.end])
    what = f"byte 0x{bad.hex()}" if len(bad) == 1 else "bytes " + " ".join(f"0x{b:02x}" for b in bad)
    charset = t.charsets.get(col.name) or t.codecs[i]
    return (f"snapshot of {t.name}: column {col.name}: a stored value{where} holds {what} (at byte {error.start}), "
            f"which has no character in the column's character set {charset}: it cannot be read exactly (the "
            "server's conversion would give '?'); correct the value or leave the table out (source.exclude)")


@functools.cache
def _utf8_extra(codec: str) -> np.ndarray | None:
    """A single-byte charset's UTF-8 bytes past the first of each byte's character, else None."""
    if not codec.startswith("mysql-") or codec[len("mysql-"):] not in SINGLE_BYTE:
        return None
    decode, out = decoder(codec), np.zeros(256, np.uint8)
    for b in range(256):
        try:
            chars = decode(bytes([b]))
        except UnicodeDecodeError:
            continue
        assert len(chars) == 1, (codec, b)
        out[b] = len(chars.encode("utf-8")) - 1
    return out


def strict_text(raw: list[bytes | None], codec: str) -> pa.Array:
    """A text column's stored bytes -> its text, by the strict decoder `codec` (`charsets.codec_of`);
    Undecodable at the first value it refuses. A single-byte charset's whole column is decoded in one call
    (one character per byte: a value's UTF-8 end is its stored end plus the extra UTF-8 bytes before it)."""
    decode, extra = decoder(codec), _utf8_extra(codec)
    if extra is not None:
        arr = pa.array(raw, pa.large_binary())
        validity, offsets, data = arr.buffers()
        ends = np.frombuffer(offsets, np.int64, count=len(arr) + 1)
        stored = np.frombuffer(data, np.uint8, count=int(ends[-1])) if data is not None else np.zeros(0, np.uint8)
        try:
            text = decode(stored.tobytes())
        except UnicodeDecodeError:
            pass  # which value: below
        else:
            wide = extra[stored]
            high = np.flatnonzero(wide)  # the bytes whose character takes more than one UTF-8 byte
            more = np.zeros(len(high) + 1, np.int64)
            np.cumsum(wide[high], out=more[1:])
            utf8_ends = ends + more[np.searchsorted(high, ends)]
            utf8 = pa.py_buffer(text.encode("utf-8"))
            return pa.LargeStringArray.from_buffers(len(arr), pa.py_buffer(utf8_ends), utf8, validity,
                                                    arr.null_count).cast(pa.string())
    out: list[str | None] = []
    for row, b in enumerate(raw):
        try:
            out.append(None if b is None else decode(b))
        except UnicodeDecodeError as exc:
            raise Undecodable(row, exc) from None
    return pa.array(out, pa.string())


# ------------------------------------------------------------------------------------------- reading


def fetch(conn: pymysql.connections.Connection, sql: str, args: Any = None) -> TextRows:
    """Run `sql` (with `args` bound as pymysql binds them, also an empty list: a `%%` is then `%`) and read all
    its rows."""
    if args is not None:
        with conn.cursor() as cur:
            sql = cur.mogrify(sql, args)
    conn.query(sql, unbuffered=True)
    result = conn._result
    if result is None or not result.unbuffered_active:  # no result set
        return TextRows([], [])
    columns: list[list[bytes | None]] = [[] for _ in range(result.field_count)]
    try:
        packets = _read_rows(conn, columns)
    except BaseException:
        conn._force_close()  # the rest of the result is still on the wire
        raise
    finally:
        result.unbuffered_active = False
    conn._next_seq_id = (conn._next_seq_id + packets) % 256
    return TextRows(columns, list(result.converters))


def _more(conn: pymysql.connections.Connection) -> bytes:
    try:
        chunk = conn._rfile.read1(READ_SIZE)
    except OSError as exc:
        raise err.OperationalError(_LOST, f"Lost connection to MySQL server during query ({exc})") from None
    if not chunk:
        raise err.OperationalError(_LOST, "Lost connection to MySQL server during query")
    return chunk


def _read_rows(conn: pymysql.connections.Connection, columns: list[list[bytes | None]]) -> int:
    """Split row packets into `columns` up to the result's EOF packet; the number of packets read."""
    buf = b""
    packets = 0
    while True:
        pos, n, state = _split(buf, columns)
        packets += n
        if state == "eof":
            if pos != len(buf):
                raise err.InternalError("bytes after the end of a result set")
            return packets + 1
        buf = buf[pos:]
        if state == "long":  # a row over several packets
            buf, n = _long_row(conn, buf, columns)
            packets += n
        else:
            buf += _more(conn)


def _split(buf: bytes, columns: list[list[bytes | None]]) -> tuple[int, int, str]:
    """Whole row packets of `buf` -> `columns`: (where the rest begins, packets read, "more" | "eof" |
    "long": a packet of MAX_PACKET bytes begins there)."""
    pos, end, rows = 0, len(buf), 0
    while end - pos >= 4:
        size = buf[pos] | buf[pos + 1] << 8 | buf[pos + 2] << 16
        stop = pos + 4 + size
        if stop > end:
            break
        p = pos + 4
        first = buf[p]
        if first == 0xFE and size < 9:
            return stop, rows, "eof"
        if first == 0xFF:
            err.raise_mysql_exception(buf[p:stop])
        if size == MAX_PACKET:
            return pos, rows, "long"
        for col in columns:  # each value: a length-encoded string
            n = buf[p]
            if n < 251:
                p += 1
            elif n == 251:
                col.append(None)
                p += 1
                continue
            elif n == 252:
                n = buf[p + 1] | buf[p + 2] << 8
                p += 3
            elif n == 253:
                n = buf[p + 1] | buf[p + 2] << 8 | buf[p + 3] << 16
                p += 4
            else:
                n = int.from_bytes(buf[p + 1 : p + 9], "little")
                p += 9
            col.append(buf[p : p + n])
            p += n
        if p != stop:
            raise err.InternalError(f"a row packet of {size} bytes held {p - pos - 4} bytes of values")
        pos = stop
        rows += 1
    return pos, rows, "more"


def _long_row(conn: pymysql.connections.Connection, buf: bytes, columns: list[list[bytes | None]]
              ) -> tuple[bytes, int]:
    """One row sent in several packets (the first at the start of `buf`) -> `columns`; the bytes after
    it and the packets read."""
    payload = bytearray()
    data = bytearray(buf)
    packets = 0
    while True:
        while len(data) < 4:
            data += _more(conn)
        size = data[0] | data[1] << 8 | data[2] << 16
        while len(data) < 4 + size:
            data += _more(conn)
        payload += data[4 : 4 + size]
        del data[: 4 + size]
        packets += 1
        if size < MAX_PACKET:
            break
    packet = MysqlPacket(bytes(payload), "ascii")
    for col in columns:
        col.append(packet.read_length_coded_string())
    if packet._position != len(payload):
        raise err.InternalError(f"a row of {len(payload)} bytes held {packet._position} bytes of values")
    return bytes(data), packets


# ---------------------------------------------------------------------------------------- to Arrow


def _column(raw: list[bytes | None], encoding: str | None, convert: Any, ours: Any, typ: pa.DataType) -> pa.Array:
    if convert is None and ours is None:
        if encoding is None:
            return pa.array(raw, typ)  # the bytes pymysql gives
        if encoding == "utf8" and pa.types.is_string(typ):
            return pa.array(raw, pa.binary()).cast(pa.string())  # (validates the UTF-8, as decode does)
    elif ours is None and encoding == "ascii":
        if (convert is int and pa.types.is_integer(typ)) or (convert is float and typ == pa.float64()):
            return pa.array(raw, pa.binary()).cast(typ)
        if convert is decimal.Decimal and pa.types.is_decimal(typ):
            return pa.array(raw, pa.binary()).cast(pa.string()).cast(typ)
    elif encoding == "ascii" and pa.types.is_string(typ):
        if convert is mc.convert_datetime and ours in (iso_date, iso_utc):
            return _datetimes(raw, encoding, convert, ours, ours is iso_utc)
        if convert is mc.convert_date and ours is iso_date:
            return _dates(raw, encoding, convert, ours)
    return pa.array(_values(raw, encoding, convert, ours), typ)


def _values(raw: list[bytes | None], encoding: str | None, convert: Any, ours: Any) -> list[Any]:
    """Per value, exactly as pymysql and then the snapshot's converter give it."""
    out = []
    for b in raw:
        if b is None:
            out.append(None)
            continue
        v: Any = b if encoding is None else b.decode(encoding)
        if convert is not None:
            v = convert(v)
        out.append(v if ours is None else ours(v))
    return out


def _per_value(text: pa.Array, fast: pa.Array, raw: list[bytes | None], encoding: str | None, convert: Any,
               ours: Any) -> pa.Array:
    """`text` where `fast` is true, the per-value path's result elsewhere."""
    if pc.all(fast).as_py() is not False:
        return text
    slow = [None if ok else v for ok, v in zip(fast.to_pylist(), raw)]
    return pc.if_else(fast, text, pa.array(_values(slow, encoding, convert, ours), pa.string()))


def _dates(raw: list[bytes | None], encoding: str | None, convert: Any, ours: Any) -> pa.Array:
    """DATE: pymysql's date (or, if not a calendar date, its text) in ISO form: the server's own text."""
    text = pa.array(raw, pa.binary()).cast(pa.string())
    fast = pc.fill_null(pc.match_substring_regex(text, _DATE), True)
    return _per_value(text, fast, raw, encoding, convert, ours)


def _datetimes(raw: list[bytes | None], encoding: str | None, convert: Any, ours: Any, utc: bool) -> pa.Array:
    """DATETIME / TIMESTAMP: `datetime.isoformat()` of pymysql's datetime ("T" between date and time,
    the fraction as 6 digits unless it is zero; "+00:00" for TIMESTAMP); a text that is no calendar
    date (a zero date) as the server gave it."""
    text = pa.array(raw, pa.binary()).cast(pa.string())
    form = pc.fill_null(pc.match_substring_regex(text, _DATETIME), True)
    safe = pc.if_else(form, text, "2000-01-01 00:00:00")

    def part(a: int, b: int) -> pa.Array:
        return pc.utf8_slice_codeunits(safe, a, b).cast(pa.int32())

    y, m, d, hh, mm, ss = part(0, 4), part(5, 7), part(8, 10), part(11, 13), part(14, 16), part(17, 19)
    leap = pc.and_(pc.equal(pc.subtract(y, pc.multiply(pc.divide(y, 4), 4)), 0),
                   pc.or_(pc.not_equal(pc.subtract(y, pc.multiply(pc.divide(y, 100), 100)), 0),
                          pc.equal(pc.subtract(y, pc.multiply(pc.divide(y, 400), 400)), 0)))
    month = pc.if_else(pc.and_(pc.greater_equal(m, 1), pc.less_equal(m, 12)), m, 0)
    days = pc.add(pc.take(_DAYS, month), pc.if_else(pc.and_(pc.equal(month, 2), leap), 1, 0))
    valid = pc.and_(pc.and_(pc.greater_equal(y, 1), pc.greater_equal(month, 1)),
                    pc.and_(pc.and_(pc.greater_equal(d, 1), pc.less_equal(d, days)),
                            pc.and_(pc.and_(pc.less_equal(hh, 23), pc.less_equal(mm, 59)), pc.less_equal(ss, 59))))
    base = pc.replace_substring(pc.utf8_slice_codeunits(safe, 0, 19), " ", "T", max_replacements=1)
    frac = pc.utf8_slice_codeunits(safe, 20, 26)
    iso = pc.if_else(pc.match_substring_regex(frac, "[1-9]"),
                     pc.binary_join_element_wise(base, pc.utf8_rpad(frac, 6, "0"), "."), base)
    if utc:
        iso = pc.binary_join_element_wise(iso, "+00:00", "")
    # the right form but no calendar date: pymysql gives the text itself
    out = pc.if_else(valid, iso, text)
    return _per_value(out, form, raw, encoding, convert, ours)
