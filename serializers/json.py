"""Serializer `json`: each row change as exactly `RowChange.to_dict()` (the documented JSON form),
encoded by `dbus_ray.model.dumps` (DECIMAL as an exact string, bytes as base64, dates and times in
ISO 8601), UTF-8. Decoding is plain `json.loads`.

`encode_json` is `dbus_ray.model.dumps` (orjson; a unit test holds it equal to the standard library's
encoder with the same settings)."""

from __future__ import annotations

import json
from typing import Any, ClassVar

from dbus_ray.model import TableRows, dumpb, dumps

encode_json = dumps


class JsonSerializer:
    name: ClassVar[str] = "json"
    per_row: ClassVar[bool] = True
    content_type: ClassVar[str] = "application/json"

    def encode(self, rows: TableRows, pipeline: str, records: list[dict[str, Any]] | None = None) -> list[bytes]:
        return [dumpb(r) for r in (rows.records(pipeline) if records is None else records)]

    @staticmethod
    def decode(value: bytes) -> dict[str, Any]:
        return json.loads(value)
