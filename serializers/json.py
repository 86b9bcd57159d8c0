"""Serializer `json`: each row change as exactly `RowChange.to_dict()` (the documented JSON form),
encoded by `dbus_ray.model.dumps` (DECIMAL as an exact string, bytes as base64, dates and times in
ISO 8601), UTF-8. Decoding is plain `json.loads`.

`encode_json` is `dbus_ray.model.dumps` (orjson; a unit test holds it equal to the standard library's
encoder with the same settings).

`decimals_as_text(rows)`: the run with the DECIMAL columns of its images as the text their JSON form has
(`format(value, "f")`: positional notation with the column's scale), cast by Arrow, so the rows' JSON needs
no Python `Decimal` per value (building one costs more than the rest of the row's conversion). Arrow's text
is positional for a scale up to 6; above, a column where it gives scientific notation for some value
(`1E-7`, `0E-10`) keeps its Decimals."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Iterator
from typing import Any, ClassVar

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from dbus_ray.model import TableRows, dumps, json_default

encode_json = dumps
#: `dbus_ray.model.dumpb` without its Python frame (called once or twice per row on the Kafka sink's path)
encode_jsonb = functools.partial(orjson.dumps, default=json_default)


def json_text(value: str | None) -> str:
    """A str (or None) as its JSON text, with no `default` to look at (a file name or GTID per row)."""
    return orjson.dumps(value).decode()


def decimals_as_text(rows: TableRows) -> TableRows:
    """`rows` with each DECIMAL column of `before` and `after` as a string column of its JSON text (the same
    text as `format(value, "f")`); `rows` itself when there is none to convert."""
    data = rows.data
    columns, fields, changed = list(data.columns), list(data.schema), False
    for name in ("before", "after"):
        i = data.schema.get_field_index(name)
        image = columns[i]
        kind = image.type
        if not any(pa.types.is_decimal(f.type) for f in kind):
            continue
        children, child_fields = image.flatten(), list(kind)
        for j, f in enumerate(child_fields):
            if pa.types.is_decimal(f.type):
                text = children[j].cast(pa.string())
                if f.type.scale > 6 and pc.any(pc.match_substring(text, "E")).as_py():
                    continue  # scientific notation somewhere: this column keeps its Decimals
                children[j], child_fields[j], changed = text, f.with_type(pa.string()), True
        columns[i] = pa.StructArray.from_arrays(children, fields=child_fields, mask=image.is_null())
        fields[i] = fields[i].with_type(columns[i].type)
    if not changed:
        return rows
    batch = pa.RecordBatch.from_arrays(columns, schema=pa.schema(fields, metadata=data.schema.metadata))
    return TableRows(rows.db, rows.table, rows.key, batch)


class JsonSerializer:
    name: ClassVar[str] = "json"
    per_row: ClassVar[bool] = True
    content_type: ClassVar[str] = "application/json"

    def encode(self, rows: TableRows, pipeline: str, records: list[dict[str, Any]] | None = None) -> list[bytes]:
        return list(self.values(rows.records(pipeline) if records is None else records))

    @staticmethod
    def values(records: Iterable[dict[str, Any]]) -> Iterator[bytes]:
        """The values one at a time, as they are iterated: the Kafka sink produces each before the next is
        made, so each value's memory is freed and reused instead of a slice's values all held at once."""
        return map(encode_jsonb, records)

    @staticmethod
    def decode(value: bytes) -> dict[str, Any]:
        return json.loads(value)
