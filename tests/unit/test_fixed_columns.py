"""DATETIME(fsp) and DECIMAL columns decoded column-wise (`dbus_ray/mysql/fixed_columns.py`). DATETIME
against Python's own `datetime.isoformat()` of the same date-times, for every fsp, random date-times over
years 1-9999 with and without a fraction, and nulls; zero and impossible dates (which Python cannot hold)
keep the per-value reader's text. DECIMAL against Python's `Decimal` for layouts up to 18 digits: random
values, zero, the extremes, nulls. The binlog bytes are built here from MySQL's documented layouts."""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal

import pyarrow as pa
import pytest

from dbus_ray.mysql import values as T
from dbus_ray.mysql.decoder import Layout, _datetime2_value
from dbus_ray.mysql.fixed_columns import datetime2_column
from dbus_ray.mysql.values import ColumnDef

FRACTION_BYTES = {0: 0, 1: 1, 2: 1, 3: 2, 4: 2, 5: 3, 6: 3}


@pytest.fixture(autouse=True)
def _column_wise_for_every_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """The column-wise path for the small runs here too (in use it starts at `MIN_VALUES` rows)."""
    monkeypatch.setattr("dbus_ray.mysql.fixed_columns.MIN_VALUES", 0)


def datetime2_bytes(y: int, mo: int, d: int, h: int, mi: int, s: int, us: int, fsp: int) -> bytes:
    """MySQL's DATETIME2 binary form: 1 sign bit, 17 bits year*13+month, 5 day, 5 hour, 6 minute, 6 second,
    big-endian with 0x8000000000 added, then the fraction in (fsp + 1) // 2 bytes."""
    packed = ((((y * 13 + mo) << 5 | d) << 17) | (h << 12 | mi << 6 | s)) + 0x8000000000
    fb = FRACTION_BYTES[fsp]
    fraction = (us // {1: 10000, 2: 100, 3: 1}[fb]).to_bytes(fb, "big") if fb else b""
    return packed.to_bytes(5, "big") + fraction


@pytest.mark.parametrize("fsp", range(7))
def test_random_datetimes_as_isoformat(fsp: int) -> None:
    rnd = random.Random(fsp)
    size, read = _datetime2_value(fsp)
    unit = 10 ** (6 - fsp)
    values, expected = [], []
    for _ in range(3000):
        if rnd.random() < 0.05:
            values.append(None)
            expected.append(None)
            continue
        t = dt.datetime(1, 1, 1) + dt.timedelta(seconds=rnd.randrange(315537897600))
        us = 0 if fsp == 0 or rnd.random() < 0.3 else rnd.randrange(10**6) // unit * unit
        t = t.replace(microsecond=us)
        values.append(datetime2_bytes(t.year, t.month, t.day, t.hour, t.minute, t.second, us, fsp))
        expected.append(t.isoformat())
    assert datetime2_column(values, fsp, size, read).to_pylist() == expected
    edges = [dt.datetime(1, 1, 1), dt.datetime(9999, 12, 31, 23, 59, 59, 999999 // unit * unit),
             dt.datetime(1970, 1, 1), dt.datetime(1969, 12, 31, 23, 59, 59), dt.datetime(2000, 2, 29, 12)]
    raw = [datetime2_bytes(t.year, t.month, t.day, t.hour, t.minute, t.second, t.microsecond, fsp) for t in edges]
    assert datetime2_column(raw, fsp, size, read).to_pylist() == [t.isoformat() for t in edges]


def test_dates_python_cannot_hold_keep_the_per_value_text() -> None:
    size, read = _datetime2_value(6)
    odd = [(0, 0, 0, 0, 0, 0, 0), (2024, 0, 5, 1, 2, 3, 0), (2024, 2, 30, 1, 2, 3, 500000), (2023, 2, 29, 0, 0, 0, 1),
           (2024, 5, 0, 23, 59, 59, 0)]
    values = [datetime2_bytes(*f, 6) for f in odd] + [datetime2_bytes(2024, 5, 1, 12, 0, 0, 7, 6), None]
    got = datetime2_column(values, 6, size, read).to_pylist()
    assert got[0] == "0000-00-00 00:00:00.000000"  # as the server shows a zero date
    assert got[2] == "2024-02-30T01:02:03.500000"  # ALLOW_INVALID_DATES: the fields as stored
    assert got[:5] == [read(v, 0) for v in values[:5]]
    assert got[5:] == ["2024-05-01T12:00:00.000007", None]


def test_texts_from_a_partial_update_event_pass_through() -> None:
    size, read = _datetime2_value(0)
    values = ["2024-05-01T12:00:00", None, datetime2_bytes(2024, 5, 2, 0, 0, 0, 0, 0)]
    assert datetime2_column(values, 0, size, read).to_pylist() == ["2024-05-01T12:00:00", None, "2024-05-02T00:00:00"]


def decimal_bytes(value: Decimal, precision: int, scale: int) -> bytes:
    """MySQL's binary DECIMAL of `value`: the integer and fraction digits in groups of 9 (4 bytes each; a
    partial group in 1-4 bytes by its digits, leading for the integer part, trailing for the fraction),
    big-endian, the first bit flipped, every byte inverted for a negative value."""
    per_digits = [0, 1, 1, 2, 2, 3, 3, 4, 4, 4]
    sign, digits, exponent = value.quantize(Decimal(1).scaleb(-scale)).as_tuple()
    text = "".join(map(str, digits)).rjust(precision, "0")
    whole, frac = text[: precision - scale], text[precision - scale:]
    out = b""
    lead = len(whole) % 9
    if lead:
        out += int(whole[:lead]).to_bytes(per_digits[lead], "big")
    for k in range(lead, len(whole), 9):
        out += int(whole[k : k + 9]).to_bytes(4, "big")
    for k in range(0, len(frac) - len(frac) % 9, 9):
        out += int(frac[k : k + 9]).to_bytes(4, "big")
    if len(frac) % 9:
        out += int(frac[len(frac) - len(frac) % 9:]).to_bytes(per_digits[len(frac) % 9], "big")
    out = bytes([out[0] ^ 0x80]) + out[1:]
    return bytes(x ^ 0xFF for x in out) if sign else out


@pytest.mark.parametrize(("precision", "scale"), [(1, 0), (5, 2), (9, 9), (10, 0), (12, 2), (18, 0), (18, 9),
                                                  (18, 18), (17, 3)])
def test_decimals_as_python_decimal(precision: int, scale: int) -> None:
    rnd = random.Random(precision * 100 + scale)
    layout = Layout("d", "t", [ColumnDef("v", T.NEWDECIMAL, precision=precision, scale=scale)], ("v",))
    top = 10**precision - 1
    wanted = [Decimal(0), Decimal(top).scaleb(-scale), -Decimal(top).scaleb(-scale), None]
    wanted += [None if rnd.random() < 0.05 else Decimal(rnd.randint(-top, top)).scaleb(-scale) for _ in range(2000)]
    raw = [None if d is None else decimal_bytes(d, precision, scale) for d in wanted]
    got = layout.converters[0](raw)
    assert got.type == pa.decimal128(precision, scale)
    assert got.to_pylist() == wanted
