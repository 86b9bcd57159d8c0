"""Robustness of the row-image decoders (`dbus_ray.mysql.values.Layout.read_rows`, the per-table
compiled decoder every ROWS event goes through) against truncated and corrupted bytes, property-based
(hypothesis): row images are generated from column values, then cut, overwritten or replaced by random
bytes. Every case runs under a time limit (a hang fails) and must either decode or raise a `DecodeError`
that names the table; no other exception type gets out of the decoder.

The runs are derandomized (the same examples each time, no example database); set
DBUS_HYPOTHESIS_EXAMPLES to explore more than the default 150 examples per property.

An ENUM index or a SET bit past the column's members is refused too (a corrupt byte that would decode
as a valid-looking value otherwise).
"""

from __future__ import annotations

import os
import signal
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dbus_ray.errors import DecodeError
from dbus_ray.mysql import values as T
from dbus_ray.mysql.decoder import Layout
from dbus_ray.mysql.values import ColumnDef

TIME_LIMIT_S = 2.0
EXAMPLES = int(os.environ.get("DBUS_HYPOTHESIS_EXAMPLES", "150"))
PROPERTY = settings(max_examples=EXAMPLES, deadline=timedelta(seconds=TIME_LIMIT_S), derandomize=True,
                    database=None, suppress_health_check=[HealthCheck.too_slow])

COLUMNS = [
    ColumnDef("id", T.LONG),
    ColumnDef("big", T.LONGLONG, unsigned=True),
    ColumnDef("name", T.VARCHAR, charset="utf-8", max_length=200),
    ColumnDef("long_name", T.VARCHAR, charset="utf-8", max_length=1200),
    ColumnDef("amount", T.NEWDECIMAL, precision=10, scale=2),
    ColumnDef("at", T.DATETIME2, fsp=0),
    ColumnDef("blob", T.BLOB, charset="binary", length_size=2),
    ColumnDef("kind", T.ENUM, size=1, members=("small", "large")),
    ColumnDef("flags", T.SET, size=1, members=("a", "b", "c")),
    ColumnDef("doc", T.JSON, length_size=4),
    ColumnDef("t", T.TIME2, fsp=0),
    ColumnDef("d", T.DATE),
    ColumnDef("y", T.YEAR),
    ColumnDef("f", T.DOUBLE),
]
ALL = bytes([0xFF, 0xFF])  # columns-present bitmap: all 14 columns
LAYOUT = Layout("fuzz", "t", COLUMNS, ("id",))
KINDS = ("insert", "update", "delete")


class Hang(Exception):
    pass


@contextmanager
def time_limit(seconds: float = TIME_LIMIT_S) -> Iterator[None]:
    def on_alarm(signum: int, frame: Any) -> None:
        raise Hang(f"no result within {seconds} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# ------------------------------------------------------------------------------------------ strategies

TEXT = st.characters(exclude_categories=("Cs",))  # any code point UTF-8 can encode


@st.composite
def row_images(draw: st.DrawFn) -> tuple[bytes, dict[str, Any]]:
    """One valid row image of COLUMNS (null bitmap + values) and the values it holds (TIME2 not compared)."""
    nulls = 0
    values: list[bytes] = []
    expected: dict[str, Any] = {}
    for i, col in enumerate(COLUMNS):
        if i and draw(st.booleans()):
            nulls |= 1 << i
            expected[col.name] = None
            continue
        v: Any
        if col.type == T.LONG:
            v = draw(st.integers(-2**31, 2**31 - 1))
            values.append(struct.pack("<i", v))
        elif col.type == T.LONGLONG:
            v = draw(st.integers(0, 2**64 - 1))
            values.append(struct.pack("<Q", v))
        elif col.type == T.VARCHAR:
            short = col.max_length < 256
            v = draw(st.text(TEXT, max_size=60 if short else 300))
            raw = v.encode()
            values.append(len(raw).to_bytes(1 if short else 2, "little") + raw)
        elif col.type == T.NEWDECIMAL:  # DECIMAL(10,2): 4 bytes of integer digits, 1 byte of 2 fraction digits
            whole, frac = draw(st.integers(0, 99_999_999)), draw(st.integers(0, 99))
            raw = bytearray(whole.to_bytes(4, "big") + frac.to_bytes(1, "big"))
            raw[0] |= 0x80
            v = whole * 100 + frac
            values.append(bytes(raw))
        elif col.type == T.DATETIME2:
            y, mo, d = draw(st.integers(1, 9999)), draw(st.integers(1, 12)), draw(st.integers(1, 28))
            h, mi, s = draw(st.integers(0, 23)), draw(st.integers(0, 59)), draw(st.integers(0, 59))
            packed = ((y * 13 + mo) << 22 | d << 17 | h << 12 | mi << 6 | s) + 0x8000000000
            v = f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}"
            values.append(packed.to_bytes(5, "big"))
        elif col.type == T.BLOB:
            v = draw(st.binary(max_size=100))
            values.append(len(v).to_bytes(2, "little") + v)
        elif col.type == T.ENUM:
            index = draw(st.integers(1, len(col.members)))
            v = col.members[index - 1]
            values.append(bytes([index]))
        elif col.type == T.SET:
            mask = draw(st.integers(0, 7))
            v = ",".join(m for k, m in enumerate(col.members) if mask >> k & 1)
            values.append(bytes([mask]))
        elif col.type == T.JSON:  # MySQL binary JSON: a literal
            v, code = draw(st.sampled_from([("true", 1), ("false", 2)]))
            values.append((2).to_bytes(4, "little") + bytes([4, code]))
        elif col.type == T.TIME2:
            v = None  # not compared
            values.append((0x800000 + (5 << 12 | 6 << 6 | 7)).to_bytes(3, "big"))
        elif col.type == T.DATE:
            y, mo, d = draw(st.integers(1, 9999)), draw(st.integers(1, 12)), draw(st.integers(1, 31))
            v = f"{y:04d}-{mo:02d}-{d:02d}"
            values.append((y << 9 | mo << 5 | d).to_bytes(3, "little"))
        elif col.type == T.YEAR:
            b = draw(st.integers(0, 255))
            v = 1900 + b if b else 0
            values.append(bytes([b]))
        else:
            v = draw(st.floats(allow_nan=False))
            values.append(struct.pack("<d", v))
        if v is not None:
            expected[col.name] = v
    return nulls.to_bytes(2, "little") + b"".join(values), expected


@st.composite
def bodies(draw: st.DrawFn) -> tuple[str, bytes, list[int], list[dict[str, Any]]]:
    """(kind, a valid rows-event body of 1-3 rows, the offsets where each row ends, the images' values);
    an update row is two images (before, after)."""
    kind = draw(st.sampled_from(KINDS))
    per_row = 2 if kind == "update" else 1
    images = draw(st.lists(row_images(), min_size=per_row, max_size=3 * per_row).filter(
        lambda i: len(i) % per_row == 0))
    data, ends = b"", []
    for n, (image, _) in enumerate(images, 1):
        data += image
        if n % per_row == 0:
            ends.append(len(data))
    return kind, data, ends, [values for _, values in images]


def as_values(layout: Layout, columns: list[list[Any]]) -> list[list[Any]]:
    """The decoder's value lists; a column it keeps as raw bytes (DATETIME; DECIMAL up to 18 digits) through
    its column converter: a DATETIME's text, a DECIMAL's unscaled integer."""
    out = []
    for convert, col, values in zip(layout.converters, layout.columns, columns):
        if col.type == T.DATETIME2:
            values = convert(values).to_pylist()
        elif col.type == T.NEWDECIMAL and col.precision <= 18:
            values = [None if d is None else int(d.scaleb(col.scale)) for d in convert(values).to_pylist()]
        out.append(values)
    return out


def decode(data: bytes, kind: str = "insert", bitmap: bytes = ALL, bitmap2: bytes | None = ALL) -> Any:
    """The (before, after) images, or the DecodeError raised; a hang or any other exception propagates."""
    with time_limit():
        try:
            return LAYOUT.read_rows(data, kind, bitmap, bitmap2 if kind == "update" else None, 0, len(data))
        except DecodeError as exc:
            return exc


def assert_refused(result: Any, kind: str) -> None:
    assert isinstance(result, DecodeError), f"accepted: {result}"
    assert f"{kind} rows event of fuzz.t" in str(result), str(result)


def assert_consistent(result: Any, kind: str) -> None:
    """A DecodeError naming the table, or images with as many values in every column."""
    if isinstance(result, DecodeError):
        assert_refused(result, kind)
        return
    before, after = result
    images = [i for i in (before, after) if i is not None]
    assert images and len(images) == (2 if kind == "update" else 1)
    assert len({len(column) for image in images for column in image}) == 1


# ------------------------------------------------------------------------------------------ properties


@PROPERTY
@given(bodies())
def test_valid_images_decode_exactly(case: tuple[str, bytes, list[int], list[dict[str, Any]]]) -> None:
    kind, data, ends, images = case
    result = decode(data, kind)
    assert not isinstance(result, DecodeError), result
    before, after = result
    decoded = [before, after] if kind == "update" else [before if kind == "delete" else after]
    for n, values in enumerate(images):
        columns = as_values(LAYOUT, decoded[n % len(decoded)])
        row = n // len(decoded)
        for i, col in enumerate(COLUMNS):
            if col.name in values:
                assert columns[i][row] == values[col.name], (col.name, n)


@PROPERTY
@given(bodies(), st.data())
def test_truncated_body_raises_decode_error_naming_the_table(
    case: tuple[str, bytes, list[int], list[dict[str, Any]]], data: st.DataObject
) -> None:
    """A body cut anywhere but at a row boundary (where it is a valid shorter body) or before the first row
    (an empty body: see `test_empty_body_is_no_rows`) is refused."""
    kind, body, ends, _ = case
    cut = data.draw(st.integers(1, len(body) - 1).filter(lambda c: c not in ends), label="cut")
    assert_refused(decode(body[:cut], kind), kind)


@PROPERTY
@given(bodies(), st.data())
def test_corrupted_body_decodes_or_raises_decode_error(
    case: tuple[str, bytes, list[int], list[dict[str, Any]]], data: st.DataObject
) -> None:
    """1-8 bytes overwritten: a value changes (decodes) or the event is refused, never anything else."""
    kind, body, _, _ = case
    corrupt = bytearray(body)
    for pos, byte in data.draw(st.lists(st.tuples(st.integers(0, len(body) - 1), st.integers(0, 255)),
                                        min_size=1, max_size=8), label="overwrites"):
        corrupt[pos] = byte
    assert_consistent(decode(bytes(corrupt), kind), kind)


@PROPERTY
@given(st.sampled_from(KINDS), st.binary(min_size=1, max_size=400), st.binary(min_size=2, max_size=2),
       st.binary(min_size=2, max_size=2))
def test_random_bytes_and_bitmaps_decode_or_raise_decode_error(
    kind: str, body: bytes, bitmap: bytes, bitmap2: bytes
) -> None:
    assert_consistent(decode(body, kind, bitmap, bitmap2), kind)


ORDERS = [ColumnDef("id", T.LONG), ColumnDef("name", T.VARCHAR, charset="utf-8", max_length=200),
          ColumnDef("amount", T.NEWDECIMAL, precision=10, scale=2), ColumnDef("at", T.DATETIME2, fsp=0)]
#: (7, 'hello', 1.05, '2024-01-01T00:00:00') as one row image
ORDER_ROW = (b"\x00" + (7).to_bytes(4, "little") + b"\x05hello" + bytes([0x80, 0, 0, 1, 5])
             + (((2024 * 13 + 1) << 22 | 1 << 17) + 0x8000000000).to_bytes(5, "big"))


def test_truncated_row_is_detected() -> None:
    layout = Layout("shop", "orders", ORDERS, ("id",))
    after = as_values(layout, layout.read_rows(ORDER_ROW, "insert", b"\x0f")[1])
    assert after == [[7], ["hello"], [105], ["2024-01-01T00:00:00"]]
    for cut in range(1, len(ORDER_ROW)):
        with time_limit(), pytest.raises(DecodeError, match="^(cannot decode the )?insert rows event of shop.orders"):
            layout.read_rows(ORDER_ROW[:cut], "insert", b"\x0f")


def test_enum_index_out_of_range_is_detected() -> None:
    """An ENUM index past the members (a corrupt byte) is refused, naming the table and the column; index 0
    is MySQL's error value '' and decodes as such."""
    layout = Layout("shop", "t", [ColumnDef("kind", T.ENUM, size=1, members=("small", "large"))], ())
    assert layout.read_rows(b"\x00\x00\x00\x02", "insert", b"\x01")[1] == [["", "large"]]
    with time_limit(), pytest.raises(DecodeError) as err:
        layout.read_rows(b"\x00\x09", "insert", b"\x01")
    assert str(err.value) == ("cannot decode the insert rows event of shop.t (truncated or corrupt): "
                              "ValueError: ENUM column kind: index 9 is past its 2 members")


def test_set_bit_past_the_members_is_detected() -> None:
    layout = Layout("shop", "t", [ColumnDef("tags", T.SET, size=1, members=("a", "b", "c"))], ())
    assert layout.read_rows(b"\x00\x05\x00\x00", "insert", b"\x01")[1] == [["a,c", ""]]
    with time_limit(), pytest.raises(DecodeError) as err:
        layout.read_rows(b"\x00\x09", "insert", b"\x01")
    assert str(err.value) == ("cannot decode the insert rows event of shop.t (truncated or corrupt): "
                              "ValueError: SET column tags: bit 3 is past its 3 members")


def test_empty_body_is_no_rows() -> None:
    """A rows event body with no row image decodes as zero rows (the source then emits nothing): a body
    cut before its first row cannot be told from it by the decoder."""
    for kind in KINDS:
        result = decode(b"", kind)
        assert not isinstance(result, DecodeError), result
        assert {len(c) for image in result if image is not None for c in image} == {0}


def test_empty_column_bitmap_is_refused() -> None:
    assert_refused(decode(b"\x00\x01\x02", bitmap=b"\x00\x00"), "insert")


def test_length_prefix_past_the_end_is_detected() -> None:
    """A VARCHAR length prefix larger than what is left: the image ends past the event, so the event is
    refused as truncated (the value is not silently cut to the bytes there are)."""
    layout = Layout("fuzz", "t", [ColumnDef("s", T.VARCHAR, charset="utf-8", max_length=200)], ())
    with time_limit(), pytest.raises(DecodeError, match=r"^insert rows event of fuzz.t is truncated or corrupt"):
        layout.read_rows(b"\x00\xff" + b"abc", "insert", b"\x01")
