"""What the Kafka sink says about one message: its size as the broker counts it, where its row sits (for a
failed delivery) and its key as text for an error line or a dead-letter record."""

from __future__ import annotations

import json
from typing import Any

from dbus_ray.model import dumps


def message_size(value: bytes | None, key: bytes | None, headers: list | None) -> int:
    """Bytes of a message's value, key and headers (names and values)."""
    return len(value or b"") + len(key or b"") + sum(len(k) + len(v or b"") for k, v in headers or ())


def position_of(msg: Any, json_values: bool) -> str:
    """Where the row of a message whose delivery failed sits: the `pos` of its JSON value (`format: json`),
    else its key. Never its headers: `msg.headers()` of a failed message can raise after a fatal producer
    error (confluent-kafka 2.16); nothing may raise out of the delivery callback (it would break the flush)."""
    try:
        value = msg.value()
        if json_values and value:
            pos = json.loads(value).get("pos")
            if pos is not None:
                return dumps(pos)
        return f"key {key_text(msg.key())}"
    except Exception:  # noqa: BLE001 - an exception must not leave the delivery callback
        return "unknown position"


def key_text(key: bytes | None, limit: int = 200) -> str:
    """A message key for an error line or dead-letter record: its text when it is UTF-8, else its bytes in
    hex (`0x...`: never an altered text), cut at `limit` characters."""
    if key is None:
        return "null"
    try:
        text = key.decode("utf-8")
    except UnicodeDecodeError:
        text = "0x" + key.hex()
    return text if len(text) <= limit else text[:limit] + "..."
