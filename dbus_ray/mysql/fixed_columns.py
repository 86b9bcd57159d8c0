"""DATETIME(fsp) and DECIMAL (up to 18 digits) columns of a rows event decoded column by column: the
compiled decoder keeps each value's raw bytes (a slice, no Python work per value) and the column's
converter turns them all at once (numpy for the fields) into what the per-value reader gives:
- DATETIME: the ISO text (`YYYY-MM-DDTHH:MM:SS`, `.ffffff` only when the fraction is not 0), by Arrow's
  timestamp text. A value numpy cannot hold as a real date-time (a zero date `0000-00-00`, a zero month or
  day, a day past its month's end, as `ALLOW_INVALID_DATES` stores) keeps the per-value reader's text.
- DECIMAL: the Arrow decimal of the unscaled integer its 9-digit groups make. A column with a group over its
  digits (a corrupt value) goes value by value, as before.
A column holding decoded values already (from a partial-JSON update event, decoded value by value) passes
through.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

#: Below this many values a column is decoded value by value: numpy's and Arrow's cost per call would be
#: more than the values' (small batches: one-row transactions read as they commit).
MIN_VALUES = 64
_DAYS = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], np.int64)


def _leap(y: np.ndarray) -> np.ndarray:
    return ((y % 4 == 0) & (y % 100 != 0)) | (y % 400 == 0)


def _days_since_epoch(y: np.ndarray, mo: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Days from 1970-01-01 of proleptic Gregorian dates (valid ones)."""
    yy = y - (mo <= 2)
    era = np.floor_divide(yy, 400)
    yoe = yy - era * 400
    doy = (153 * np.where(mo > 2, mo - 3, mo + 9) + 2) // 5 + d - 1
    return era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468


def _matrix(values: list[Any], size: int, what: str) -> tuple[np.ndarray, np.ndarray | None] | None:
    """The raw values (`size` bytes each) as an n x size array of their bytes and the null mask (None: no
    null); None when the column holds a decoded value (a text or an integer: it goes value by value)."""
    try:
        raw, null = b"".join(values), None  # (raises on a None or a decoded value)
    except TypeError:
        if any(v is not None and type(v) is not bytes for v in values):
            return None
        null = np.array([v is None for v in values])
        fill = b"\x80" + bytes(size - 1)  # a zero value
        raw = b"".join(fill if v is None else v for v in values)
    if len(raw) != len(values) * size:
        raise ValueError(f"{what} value of a size other than {size}")
    return np.frombuffer(raw, np.uint8).reshape(len(values), size).astype(np.int64), null


def datetime2_column(values: list[Any], fsp: int, size: int, read: Callable[[bytes, int], str]) -> pa.Array:
    """A DATETIME(fsp) column's values (`size` raw bytes each, or None) as its Arrow string column."""
    n = len(values)
    found = _matrix(values, size, f"DATETIME({fsp})") if n >= MIN_VALUES else None
    if found is None:
        return pa.array([read(v, 0) if type(v) is bytes else v for v in values], pa.string())
    b, null = found
    v = b[:, 0]
    for k in range(1, 5):
        v = (v << 8) | b[:, k]
    v -= 0x8000000000
    us = np.zeros(n, np.int64)
    if size > 5:
        bits = 8 * (size - 5)
        for k in range(5, size):
            us = (us << 8) | b[:, k]
        us = np.where(us & (1 << (bits - 1)), us - (1 << bits), us)  # the fraction is signed
        us = np.abs(us * {1: 10000, 2: 100, 3: 1}[size - 5])
    ymd, hms = v >> 17, v & 0x1FFFF
    ym = ymd >> 5
    y, mo, d = ym // 13, ym % 13, ymd & 31
    h, mi, s = hms >> 12, (hms >> 6) & 63, hms & 63
    month_days = _DAYS[mo] + ((mo == 2) & _leap(y))
    real = (y >= 1) & (y <= 9999) & (mo >= 1) & (d >= 1) & (d <= month_days) & (h < 24) & (mi < 60) & (s < 60) \
        & (us < 1_000_000) & (v >= 0)
    if null is not None:
        real &= ~null
    seconds = np.where(real, _days_since_epoch(y, mo, d) * 86400 + h * 3600 + mi * 60 + s, 0)
    whole = pa.array(seconds).cast(pa.timestamp("s")).cast(pa.string())
    exact = pa.array(seconds * 1_000_000 + np.where(real, us, 0)).cast(pa.timestamp("us")).cast(pa.string())
    text = pc.replace_substring(pc.if_else(pa.array(us == 0), whole, exact), " ", "T", max_replacements=1)
    odd = ~real if null is None else ~real & ~null
    if odd.any():  # zero or impossible dates: the per-value reader's text
        at = np.flatnonzero(odd)
        text = pc.replace_with_mask(text, pa.array(odd), pa.array([read(values[i], 0) for i in at], pa.string()))
    if null is not None:
        text = pc.if_else(pa.array(null), pa.scalar(None, pa.string()), text)
    return text


def decimal_groups(lead: int, intg0: int, intg0x: int, frac0: int, frac0x: int, tail: int) -> list[tuple[int, int]]:
    """(bytes, digits) of each digit group of MySQL's binary DECIMAL, most significant first."""
    return [(n, d) for n, d in [(lead, intg0x)] + [(4, 9)] * (intg0 + frac0) + [(tail, frac0x)] if n]


def decimal_column(values: list[Any], size: int, groups: list[tuple[int, int]], arrow_type: pa.DataType,
                   read: Callable[[bytes, int], int], to_arrow: Callable[[list[Any], pa.DataType], pa.Array]
                   ) -> pa.Array:
    """A DECIMAL column of precision up to 18 (`size` raw bytes a value, or None) as its Arrow decimal column.
    A column holding unscaled integers already (a partial-JSON update event's), or a digit group over its
    digits (a corrupt value), goes value by value through `read` and `to_arrow`, as before."""
    n = len(values)
    found = _matrix(values, size, "DECIMAL") if n >= MIN_VALUES else None
    if found is None:
        return to_arrow([read(v, 0) if type(v) is bytes else v for v in values], arrow_type)
    b, null = found
    negative = (b[:, 0] & 0x80) == 0
    b[:, 0] ^= 0x80
    b ^= np.where(negative, 0xFF, 0)[:, None]
    out = np.zeros(n, np.int64)
    at = 0
    for length, digits in groups:
        group = b[:, at]
        for k in range(at + 1, at + length):
            group = (group << 8) | b[:, k]
        if (group >= 10**digits).any():
            return to_arrow([None if v is None else read(v, 0) for v in values], arrow_type)
        out = out * 10**digits + group
        at += length
    out = np.where(negative, -out, out)
    wide = np.empty((n, arrow_type.byte_width // 8), np.int64)
    wide[:, 0] = out
    wide[:, 1:] = (out >> 63)[:, None]
    validity = None if null is None else pa.array(~null).buffers()[1]
    nulls = 0 if null is None else int(null.sum())
    return pa.Array.from_buffers(arrow_type, n, [validity, pa.py_buffer(wide.tobytes())], null_count=nulls)
