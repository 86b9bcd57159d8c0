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


def test_a_statement_whose_client_charset_cannot_be_read_is_refused() -> None:
    """A QUERY event's text is decoded in its client's character set (status variable 4); a variable that
    cannot be stepped over before it is an error for a statement that is not ASCII, never UTF-8 by default."""
    from dbus_ray.mysql.replica import statement_text

    latin1 = b"\x04" + (8).to_bytes(2, "little") * 3  # Q_CHARSET_CODE: latin1_swedish_ci (8) three times
    assert statement_text("ALTER TABLE t COMMENT 'é'".encode("latin1"), latin1) == "ALTER TABLE t COMMENT 'é'"
    assert statement_text(b"ALTER TABLE t ADD c INT", b"\x05\x03UTC") == "ALTER TABLE t ADD c INT"  # ASCII
    with pytest.raises(ValueError, match="status variable 5 before the client character set is unknown"):
        statement_text("ALTER TABLE t COMMENT 'é'".encode(), b"\x05\x03UTC" + latin1)
