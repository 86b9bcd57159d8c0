"""How the Kafka sink names a message key in an error line or a dead-letter record: exact, never altered."""

from dbus_ray.kafka.messages import key_text as _key_text


def test_a_key_that_is_not_utf8_is_shown_as_its_bytes_not_as_altered_text() -> None:
    raw = bytes([0x63, 0x61, 0x66, 0xE9])  # 'café' in latin1: not UTF-8
    assert _key_text(raw) == "0x636166e9"
    assert bytes.fromhex(_key_text(raw)[2:]) == raw


def test_a_utf8_key_is_its_text_and_a_long_one_is_cut() -> None:
    assert _key_text("café".encode()) == "café"
    assert _key_text(None) == "null"
    assert _key_text(b"k" * 250, limit=200) == "k" * 200 + "..."
