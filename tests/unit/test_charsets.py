"""The charset mapping's refusals: a charset without an exact decoder refuses in one line, and a byte the
server has no character for raises instead of being replaced (the values themselves are checked against
the server in tests/integration/test_charsets.py)."""

from __future__ import annotations

import pytest

from dbus_ray.mysql.charsets import codec_of, decode_text


def test_a_charset_without_an_exact_decoder_is_refused_in_one_line() -> None:
    with pytest.raises(ValueError) as err:
        codec_of("gb18030", "gb18030_chinese_ci")  # MySQL 8's; MariaDB 10.11 has no such charset to check it by
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("character set gb18030 has no exact decoder in dbus-ray")


@pytest.mark.parametrize(("charset", "raw"), [
    ("swe7", b"Ab\x80"),  # 7-bit: the server converts 0x80 to '?'
    ("cp1256", b"\x8a"),  # Python's cp1256 has a letter here, the server none
    ("big5", b"\xa1\xc3"),  # Python's big5 has U+FFE3 here, the server none
    ("utf8mb4", b"\xff"),
])
def test_bytes_without_a_character_raise_instead_of_being_replaced(charset: str, raw: bytes) -> None:
    with pytest.raises(UnicodeDecodeError):
        decode_text(raw, codec_of(charset, None))


def test_the_charset_comes_from_the_collation_name() -> None:
    """python-mysql-replication names koi8r `koi8_r` and latin1 `cp1252`; the collation names the charset."""
    assert decode_text(b"\xc1", codec_of("koi8_r", "koi8r_general_ci")) == "а"
    assert decode_text(b"\x81", codec_of("cp1252", "latin1_swedish_ci")) == "\x81"
