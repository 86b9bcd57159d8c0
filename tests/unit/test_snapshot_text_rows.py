"""The snapshot's column-wise text-protocol reader (`dbus_ray.mysql.snapshot.text_rows`) against what
pymysql itself gives for the same bytes: its row parsing (`MysqlPacket.read_length_coded_string`), its
converters, and Python's `isoformat` of the datetimes they make (the snapshot's values before the
column-wise reader). No server: the packets are built here, byte by byte."""

from __future__ import annotations

import datetime as dt
import decimal
import io
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pytest
from pymysql import converters as mc
from pymysql import err
from pymysql.protocol import MysqlPacket

from dbus_ray.errors import DbusError
from dbus_ray.mysql.charsets import SINGLE_BYTE, codec_of, decoder
from dbus_ray.mysql.snapshot.text_rows import (
    MAX_PACKET,
    TextRows,
    Undecodable,
    _read_rows,
    iso_date,
    iso_utc,
    strict_text,
)

DATETIMES = [
    "2024-05-01 12:00:00", "2024-05-01 12:00:00.000000", "2024-05-01 12:00:00.5", "2024-05-01 12:00:00.100",
    "2000-01-01 00:00:00.000001", "9999-12-31 23:59:59.999999", "0001-01-01 00:00:00", "1000-01-01 00:00:00",
    "0000-00-00 00:00:00", "0000-00-00 00:00:00.000000", "2020-00-00 00:00:00", "2020-01-00 00:00:00",
    "2024-02-29 12:34:56.789", "2023-02-29 12:00:00", "1900-02-29 00:00:00", "2000-02-29 00:00:00",
    "2024-04-31 00:00:00", "2024-12-31 23:59:59", "2024-13-01 00:00:00", "2024-1-1 1:2:3", "0000-01-01 00:00:00",
]
DATES = ["2024-05-01", "0000-00-00", "2020-00-00", "2023-02-29", "2024-02-29", "0001-01-01", "9999-12-31", "2024-1-1"]


def lenenc(b: bytes | None) -> bytes:
    if b is None:
        return b"\xfb"
    n = len(b)
    if n < 251:
        return bytes([n]) + b
    if n < 1 << 16:
        return b"\xfc" + n.to_bytes(2, "little") + b
    if n < 1 << 24:
        return b"\xfd" + n.to_bytes(3, "little") + b
    return b"\xfe" + n.to_bytes(8, "little") + b


def packets(payload: bytes, seq: int) -> tuple[bytes, int]:
    out = b""
    while True:
        part, payload = payload[:MAX_PACKET], payload[MAX_PACKET:]
        out += len(part).to_bytes(3, "little") + bytes([seq % 256]) + part
        seq += 1
        if len(part) < MAX_PACKET:
            return out, seq


EOF_PACKET = b"\xfe\x00\x00\x02\x00"


class Wire:
    """pymysql's connection as `_read_rows` uses it: a socket file handing out `chunk` bytes at a time."""

    def __init__(self, data: bytes, chunk: int) -> None:
        self.data = io.BytesIO(data)
        self.chunk = chunk
        self._rfile = self

    def read1(self, n: int) -> bytes:
        return self.data.read(min(n, self.chunk))


def wire_rows(rows: list[list[bytes | None]]) -> bytes:
    data, seq = b"", 1
    for r in rows:
        p, seq = packets(b"".join(lenenc(v) for v in r), seq)
        data += p
    return data + len(EOF_PACKET).to_bytes(3, "little") + bytes([seq % 256]) + EOF_PACKET


@pytest.mark.parametrize("chunk", [1, 7, 1 << 20])
def test_row_packets_split_as_pymysql_reads_them(chunk: int) -> None:
    rows = [[b"1", None, b"x" * 250], [b"", b"y" * 251, b"z" * 70_000], [None, None, None], [b"\xfe\xff", b"a", b""]]
    columns: list[list[bytes | None]] = [[], [], []]
    assert _read_rows(Wire(wire_rows(rows), chunk), columns) == len(rows) + 1  # type: ignore[arg-type]
    for r, row in enumerate(rows):
        packet = MysqlPacket(b"".join(lenenc(v) for v in row), "ascii")
        assert [columns[c][r] for c in range(3)] == [packet.read_length_coded_string() for _ in range(3)]


def test_a_row_over_several_packets() -> None:
    big = bytes(range(256)) * ((MAX_PACKET + 5_000) // 256)
    rows = [[b"1", big], [b"2", b"after"]]
    columns: list[list[bytes | None]] = [[], []]
    assert _read_rows(Wire(wire_rows(rows), 1 << 20), columns) == 2 + 1 + 1  # type: ignore[arg-type]
    assert columns == [[b"1", b"2"], [big, b"after"]]


def test_an_error_packet_in_the_rows_raises_the_servers_error() -> None:
    data = wire_rows([[b"1"]])[: -9]
    error = b"\xff" + (1317).to_bytes(2, "little") + b"#70100Query execution was interrupted"
    data += len(error).to_bytes(3, "little") + b"\x02" + error
    with pytest.raises(err.OperationalError, match="interrupted"):
        _read_rows(Wire(data, 1 << 20), [[]])  # type: ignore[arg-type]


def test_a_connection_that_ends_mid_result_is_lost() -> None:
    with pytest.raises(err.OperationalError) as caught:
        _read_rows(Wire(wire_rows([[b"1"], [b"2"]])[:-12], 1 << 20), [[]])  # type: ignore[arg-type]
    assert caught.value.args[0] == 2013


def test_a_row_packet_with_values_left_over_is_refused() -> None:
    data, _ = packets(lenenc(b"1") + lenenc(b"2"), 1)
    with pytest.raises(err.InternalError, match="held"):
        _read_rows(Wire(data + EOF_PACKET, 1 << 20), [[]])  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------ values


@dataclass
class Col:
    name: str


@dataclass
class Table:
    """The parts of a snapshot table `TextRows.image` reads."""

    types: list[pa.DataType]
    converters: list[Any]
    name: str = "db.t"
    columns: list[Col] = field(default_factory=list)
    codecs: list[str | None] = field(default_factory=list)  # text read as stored bytes: its strict decoder
    charsets: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.columns = [Col(f"c{i}") for i in range(len(self.types))]
        self.codecs = self.codecs or [None] * len(self.types)
        self.fields = [pa.field(c.name, t) for c, t in zip(self.columns, self.types)]


def pymysql_values(raw: list[bytes | None], encoding: str | None, convert: Any, ours: Any) -> list[Any]:
    out = []
    for b in raw:
        v = None if b is None else (b if encoding is None else b.decode(encoding))
        if v is not None and convert is not None:
            v = convert(v)
        if isinstance(v, dt.datetime):
            v = v.replace(tzinfo=dt.UTC).isoformat() if ours is iso_utc else v.isoformat()
        elif isinstance(v, dt.date):
            v = v.isoformat()
        out.append(v)
    return out


CASES = [  # (raw values, pymysql's (encoding, converter), the snapshot's converter, Arrow type)
    ([d.encode() for d in DATETIMES] + [None], ("ascii", mc.convert_datetime), iso_date, pa.string()),
    ([d.encode() for d in DATETIMES] + [None], ("ascii", mc.convert_datetime), iso_utc, pa.string()),
    ([d.encode() for d in DATES] + [None], ("ascii", mc.convert_date), iso_date, pa.string()),
    ([b"-128", b"127", b"0", None], ("ascii", int), None, pa.int8()),
    ([b"18446744073709551615", b"0", None], ("ascii", int), None, pa.uint64()),
    ([b"-9223372036854775808", b"9223372036854775807"], ("ascii", int), None, pa.int64()),
    ([b"1.7976931348623157e308", b"-2.2250738585072014e-308", b"0.1", b"-0", b"1e-300", None],
     ("ascii", float), None, pa.float64()),
    ([b"-999.9", b"0.0", b"12.5", None], ("ascii", decimal.Decimal), None, pa.decimal128(4, 1)),
    ([b"99999999999999999999999999999999999.999999999999999999999999999999", b"-0.000000000000000000000000000001"],
     ("ascii", decimal.Decimal), None, pa.decimal256(65, 30)),
    (["héllo".encode(), "😀".encode(), b"", None], ("utf8", None), None, pa.string()),
    ([b"\x00\xff", b"", None], (None, None), None, pa.binary()),
    ([b"-838:59:59", b"00:00:00.000001", None], ("ascii", mc.convert_timedelta), None, pa.duration("us")),
]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_columns_equal_pymysqls_values(case: int) -> None:
    raw, (encoding, convert), ours, typ = CASES[case]
    image = TextRows([list(raw)], [(encoding, convert)]).image(Table([typ], [ours]))
    assert image.field(0).to_pylist() == pa.array(pymysql_values(raw, encoding, convert, ours), typ).to_pylist()


@pytest.mark.parametrize(("raw", "decoding", "typ", "words"), [
    ([b"\xed\xa0\x80"], ("utf8", None), pa.string(), "UTF8"),
    ([b"300"], ("ascii", int), pa.int8(), "c0"),
    ([b"12.345"], ("ascii", decimal.Decimal), pa.decimal128(12, 2), "c0"),
])
def test_a_value_it_cannot_read_exactly_is_one_error_line(raw: list[bytes], decoding: Any, typ: Any, words: str
                                                          ) -> None:
    with pytest.raises(DbusError, match=words) as caught:
        TextRows([raw], [decoding]).image(Table([typ], [None]))
    assert "\n" not in str(caught.value) and "db.t" in str(caught.value)


def test_row_gives_pymysqls_values_for_the_checkpoint_key() -> None:
    rows = TextRows([[b"7", b"8"], [b"2024-05-01 12:00:00.5", None]], [("ascii", int), ("ascii", mc.convert_datetime)])
    assert rows.row(1) == (8, None)
    assert rows.row(0) == (7, dt.datetime(2024, 5, 1, 12, 0, 0, 500000))
    assert len(rows) == 2


# ------------------------------------------------------------------------- text in its charset


def defined_bytes(codec: str) -> list[bytes]:
    ok = []
    for b in range(256):
        try:
            decoder(codec)(bytes([b]))
        except UnicodeDecodeError:
            continue
        ok.append(bytes([b]))
    return ok


@pytest.mark.parametrize("charset", sorted(SINGLE_BYTE))
def test_a_single_byte_charsets_column_decodes_at_once_as_value_by_value(charset: str) -> None:
    codec = codec_of(charset, None)
    good = defined_bytes(codec)
    raw = [b"".join(good), None, b"", *good, b"".join(reversed(good))[:7], None]
    got = strict_text(raw, codec)
    assert got.type == pa.string()
    assert got.to_pylist() == [None if b is None else decoder(codec)(b) for b in raw]


@pytest.mark.parametrize(("charset", "raw", "row", "bad"), [
    ("cp1256", [b"ok", None, b"A\x8a"], 2, b"\x8a"),  # single-byte: the whole column, then the value
    ("dec8", [b"\xa4"], 0, b"\xa4"),
    ("big5", [b"A", b"\xa4\x40", b"A\xa1\x5a"], 2, b"\xa1\x5a"),  # a sequence the server has no character for
    ("ucs2", [b"\x00A", b"\xd8\x00"], 1, b"\xd8\x00"),  # a lone surrogate
])
def test_bytes_without_a_character_raise_with_their_row(charset: str, raw: list[bytes | None], row: int,
                                                        bad: bytes) -> None:
    with pytest.raises(Undecodable) as caught:
        strict_text(raw, codec_of(charset, None))
    err = caught.value.error
    assert caught.value.row == row and err.object[err.start : err.end] == bad


def test_an_undecodable_value_is_one_error_line_naming_column_byte_and_key() -> None:
    t = Table([pa.int32(), pa.string()], [None, None], codecs=[None, "mysql-cp1256"], charsets={"c1": "cp1256"})
    t.page, t.page_at = ("c0",), [0]
    t.page_key = lambda row: tuple(row[i] for i in t.page_at)
    rows = TextRows([[b"1", b"2"], [b"ok", b"\x8aA"]], [("ascii", int), (None, None)])
    with pytest.raises(DbusError) as caught:
        rows.image(t)
    assert str(caught.value) == (
        "snapshot of db.t: column c1: a stored value in the row with key c0=2 holds byte 0x8a (at byte 0), which has "
        "no character in the column's character set cp1256: it cannot be read exactly (the server's conversion "
        "would give '?'); correct the value or leave the table out (source.exclude)")
    t.codecs[1] = "mysql-latin1"  # every byte a character
    assert rows.image(t).field(1).to_pylist() == ["ok", "\x8aA".encode("latin-1").decode("cp1252")]
