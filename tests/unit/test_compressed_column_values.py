"""Values of MariaDB compressed columns as their row images hold them, built after MariaDB's layout
(sql/field_comp.cc: header byte 0x80 + n + 8 for a raw deflate stream, the length in n big-endian bytes,
then the stream; a value not worth compressing: header 0x00 then the value)."""

from __future__ import annotations

import zlib

import pytest

from dbus_ray.mysql.values import uncompress_column


def deflate(value: bytes, wrap: bool) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, zlib.MAX_WBITS if wrap else -zlib.MAX_WBITS)
    n = (len(value).bit_length() + 7) // 8
    return bytes([0x80 + n + (0 if wrap else 8)]) + len(value).to_bytes(n, "big") + c.compress(value) + c.flush()


@pytest.mark.parametrize("wrap", [True, False])
@pytest.mark.parametrize("value", [b"ab", "ä€".encode() * 40, bytes(range(256)) * 300])
def test_a_compressed_value_reads_back(value: bytes, wrap: bool) -> None:
    assert uncompress_column(deflate(value, wrap)) == value


def test_empty_and_stored_as_is() -> None:
    assert uncompress_column(b"") == b""
    assert uncompress_column(b"\x00abc") == b"abc"


@pytest.mark.parametrize("raw", [b"\x90\x01x", b"\x81\x05" + b"garbage", deflate(b"abcdef", True)[:-3],
                                 b"\x81\x09" + deflate(b"abcdef", True)[2:]])
def test_a_corrupt_value_is_a_one_line_error(raw: bytes) -> None:
    with pytest.raises(ValueError) as err:
        uncompress_column(raw)
    assert "\n" not in str(err.value)
