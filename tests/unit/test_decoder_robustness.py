"""Robustness of the row-image decoders (`dbus_ray.binlog.types.Layout.read_rows`, the per-table
compiled decoder every ROWS event goes through) against truncated and corrupted bytes: a seeded random
fuzz loop (no hypothesis), every case under a time limit.

What holds today is asserted; what does not is marked `xfail(strict=True)` with the reason, so it turns
into a failure to unmark once `binlog/types.py` is fixed (see docs/operations.md, "Decoder robustness").
"""

from __future__ import annotations

import collections
import random
import signal
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from dbus_ray.binlog import types as T
from dbus_ray.binlog.types import ColumnDef, Layout
from dbus_ray.errors import DecodeError

SEED = 20261125
CASES = 2000
TIME_LIMIT_S = 2.0

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


def encode_row(rng: random.Random) -> tuple[bytes, dict[str, Any]]:
    """One valid row image of COLUMNS (null bitmap + values) and the values it holds."""
    nulls = 0
    values: list[bytes] = []
    expected: dict[str, Any] = {}
    for i, col in enumerate(COLUMNS):
        if i and rng.random() < 0.1:
            nulls |= 1 << i
            expected[col.name] = None
            continue
        v: Any
        if col.type == T.LONG:
            v = rng.randint(-2**31, 2**31 - 1)
            values.append(struct.pack("<i", v))
        elif col.type == T.LONGLONG:
            v = rng.randint(0, 2**64 - 1)
            values.append(struct.pack("<Q", v))
        elif col.type == T.VARCHAR:
            v = "".join(rng.choice("abcé€😀") for _ in range(rng.randint(0, 60 if col.max_length < 256 else 300)))
            raw = v.encode()
            values.append(len(raw).to_bytes(1 if col.max_length < 256 else 2, "little") + raw)
        elif col.type == T.NEWDECIMAL:  # DECIMAL(10,2): 4 bytes of integer digits, 1 byte of 2 fraction digits
            whole, frac = rng.randint(0, 99_999_999), rng.randint(0, 99)
            raw = bytearray(whole.to_bytes(4, "big") + frac.to_bytes(1, "big"))
            raw[0] |= 0x80
            v = whole * 100 + frac
            values.append(bytes(raw))
        elif col.type == T.DATETIME2:
            y, mo, d, h, mi, s = rng.randint(1, 9999), rng.randint(1, 12), rng.randint(1, 28), 1, 2, 3
            packed = ((y * 13 + mo) << 22 | d << 17 | h << 12 | mi << 6 | s) + 0x8000000000
            v = f"{y:04d}-{mo:02d}-{d:02d}T01:02:03"
            values.append(packed.to_bytes(5, "big"))
        elif col.type == T.BLOB:
            v = rng.randbytes(rng.randint(0, 100))
            values.append(len(v).to_bytes(2, "little") + v)
        elif col.type == T.ENUM:
            i_ = rng.randint(1, 2)
            v = col.members[i_ - 1]
            values.append(bytes([i_]))
        elif col.type == T.SET:
            mask = rng.randint(0, 7)
            v = ",".join(m for k, m in enumerate(col.members) if mask >> k & 1)
            values.append(bytes([mask]))
        elif col.type == T.JSON:  # MySQL binary JSON: literal true
            v = "true"
            values.append((2).to_bytes(4, "little") + b"\x04\x01")
        elif col.type == T.TIME2:
            v = None  # not compared
            values.append((0x800000 + (5 << 12 | 6 << 6 | 7)).to_bytes(3, "big"))
        elif col.type == T.DATE:
            v = "2024-02-29"
            values.append((2024 << 9 | 2 << 5 | 29).to_bytes(3, "little"))
        elif col.type == T.YEAR:
            v = 2000
            values.append(bytes([100]))
        else:
            v = rng.random()
            values.append(struct.pack("<d", v))
        if v is not None:
            expected[col.name] = v
    return nulls.to_bytes(2, "little") + b"".join(values), expected


def body(rng: random.Random, rows: int) -> tuple[bytes, list[int]]:
    """A rows-event body of `rows` valid images and the offsets where each row ends."""
    out, ends = b"", []
    for _ in range(rows):
        image, _ = encode_row(rng)
        out += image
        ends.append(len(out))
    return out, ends


def decode(data: bytes, bitmap: bytes = ALL) -> Any:
    layout = Layout("fuzz", "t", COLUMNS, ("id",))
    with time_limit():
        return layout.read_rows(data, "insert", bitmap, None, 0, len(data))


def test_valid_images_decode_exactly() -> None:
    rng = random.Random(SEED)
    for _ in range(50):
        image, expected = encode_row(rng)
        _, after = decode(image)
        got = {c.name: after[i][0] for i, c in enumerate(COLUMNS)}
        for name, value in expected.items():
            assert got[name] == value, name


def outcomes(cases: list[bytes]) -> collections.Counter[str]:
    seen: collections.Counter[str] = collections.Counter()
    for data in cases:
        try:
            decode(data)
        except Hang:
            seen["hang"] += 1
        except Exception as exc:  # noqa: BLE001 - the kind of error is what is counted
            seen[type(exc).__name__] += 1
        else:
            seen["accepted"] += 1
    return seen


def truncations(rng: random.Random, n: int) -> list[bytes]:
    """Bodies cut inside a row (a cut at a row boundary is a valid shorter body)."""
    cases = []
    while len(cases) < n:
        data, ends = body(rng, 3)
        cut = rng.randrange(1, len(data))
        if cut not in ends:
            cases.append(data[:cut])
    return cases


def corruptions(rng: random.Random, n: int) -> list[bytes]:
    cases = []
    for _ in range(n):
        data = bytearray(body(rng, 3)[0])
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        cases.append(bytes(data))
    return cases


def noise(rng: random.Random, n: int) -> list[bytes]:
    return [rng.randbytes(rng.randint(1, 400)) for _ in range(n)]


def test_fuzz_never_hangs_and_raises_only_ordinary_errors() -> None:
    """2,000 truncated, corrupted or random bodies: each one returns or raises an Exception in time
    (no hang, no interpreter-level failure such as RecursionError or MemoryError)."""
    rng = random.Random(SEED)
    cases = truncations(rng, CASES // 2) + corruptions(rng, CASES // 4) + noise(rng, CASES // 4)
    seen = outcomes(cases)
    assert sum(seen.values()) == CASES
    assert seen["hang"] == 0, seen
    assert not {"RecursionError", "MemoryError", "SystemError"} & set(seen), seen


ORDERS = [ColumnDef("id", T.LONG), ColumnDef("name", T.VARCHAR, charset="utf-8", max_length=200),
          ColumnDef("amount", T.NEWDECIMAL, precision=10, scale=2), ColumnDef("at", T.DATETIME2, fsp=0)]
#: (7, 'hello', 1.05, '2024-01-01T00:00:00') as one row image
ORDER_ROW = (b"\x00" + (7).to_bytes(4, "little") + b"\x05hello" + bytes([0x80, 0, 0, 1, 5])
             + (((2024 * 13 + 1) << 22 | 1 << 17) + 0x8000000000).to_bytes(5, "big"))


def test_fuzz_counts_truncations_detected_in_the_wide_table() -> None:
    """In COLUMNS (ending in fixed-size and length-prefixed columns) nearly every cut raises; the rest
    are counted, not asserted away (see the `orders` xfail below for a table where most cuts pass)."""
    seen = outcomes(truncations(random.Random(SEED), 500))
    assert seen["hang"] == 0
    assert seen["accepted"] <= 5, seen


def test_truncated_row_is_detected() -> None:
    layout = Layout("shop", "orders", ORDERS, ("id",))
    assert layout.read_rows(ORDER_ROW, "insert", b"\x0f")[1] == [[7], ["hello"], [105], ["2024-01-01T00:00:00"]]
    accepted = []
    for cut in range(1, len(ORDER_ROW)):
        try:
            with time_limit():
                accepted.append((cut, layout.read_rows(ORDER_ROW[:cut], "insert", b"\x0f")[1]))
        except Hang:
            raise
        except Exception:  # noqa: BLE001 - detected
            pass
    assert not accepted, accepted


@pytest.mark.xfail(strict=True, reason="an ENUM index past the members decodes as '' (MySQL's error value) "
                                       "instead of failing: a corrupt byte is not detected")
def test_enum_index_out_of_range_is_detected() -> None:
    layout = Layout("shop", "t", [ColumnDef("kind", T.ENUM, size=1, members=("small", "large"))], ())
    with pytest.raises(Exception):  # noqa: B017, PT011
        layout.read_rows(b"\x00\x09", "insert", b"\x01")


def test_errors_name_the_table() -> None:
    data, _ = body(random.Random(SEED), 1)
    with pytest.raises(Exception) as info:
        decode(data[:3])
    assert "fuzz.t" in str(info.value)


def test_empty_column_bitmap_does_not_hang() -> None:
    try:
        decode(b"\x00\x01\x02", bitmap=b"\x00\x00")
    except Hang:
        raise
    except Exception:  # noqa: BLE001 - any error is fine, a hang is not
        pass


def test_length_prefix_past_the_end_is_detected() -> None:
    """A VARCHAR length prefix larger than what is left: the image ends past the event, so the event is
    refused as truncated (the value is not silently cut to the bytes there are)."""
    layout = Layout("fuzz", "t", [ColumnDef("s", T.VARCHAR, charset="utf-8", max_length=200)], ())
    with time_limit(), pytest.raises(DecodeError, match=r"^insert rows event of fuzz.t is truncated or corrupt"):
        layout.read_rows(b"\x00\xff" + b"abc", "insert", b"\x01")
