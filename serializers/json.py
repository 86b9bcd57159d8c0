"""Serializer `json`: each row change as exactly `RowChange.to_dict()` (the documented JSON form),
encoded by `dbus_ray.model.dumps` (DECIMAL as an exact string, bytes as base64, dates and times in
ISO 8601), UTF-8. Decoding is plain `json.loads`.

`ENCODER` is one reusable encoder with exactly `dumps`' settings (same bytes, without building an encoder
per call; a unit test holds it equal to `dumps`)."""

from __future__ import annotations

import json
from typing import Any, ClassVar

from dbus_ray.model import RowChange, TableRows, json_default

ENCODER = json.JSONEncoder(default=json_default, ensure_ascii=False, separators=(",", ":"))
encode_json = ENCODER.encode  # == dbus_ray.model.dumps


class JsonSerializer:
    name: ClassVar[str] = "json"
    per_row: ClassVar[bool] = True
    content_type: ClassVar[str] = "application/json"

    def encode(self, rows: TableRows, pipeline: str, changes: list[RowChange] | None = None) -> list[bytes]:
        if changes is None:
            changes = list(rows.changes(pipeline))
        return [encode_json(c.to_dict()).encode() for c in changes]

    def encode_change(self, change: RowChange) -> bytes:
        return encode_json(change.to_dict()).encode()

    @staticmethod
    def decode(value: bytes) -> dict[str, Any]:
        return json.loads(value)
