"""Row-change codecs by name: `json` (the documented JSON form), `avro` (fastavro, one record schema per
table), `arrow` (a whole run of rows as one Arrow IPC stream: the kafka sink's `format: arrow`) and
`debezium` (Debezium's change-event envelope; its `messages` gives key, value and headers of each
message, see `dbus_ray.serializers.debezium`).

Every serializer has `encode(rows, pipeline, records=None) -> list[bytes]`: the message values for one
`TableRows` run. Per-row serializers (`per_row = True`: json, avro) return one value per row change, in
order; `arrow` returns one value for the whole run. `records`, when given, is `list(rows.records(pipeline))`
(the row changes' JSON form) already computed by the caller (the Kafka sink needs them for keys and headers
too); serializers do not modify them.

`get_serializer(name, **options)` returns a new serializer; `SERIALIZERS` lists the names.

Only `json` (and `arrow`, which carries the column) tells a column the row image left out (`absent`:
binlog_row_image MINIMAL/NOBLOB) from SQL NULL: the formats of `FULL_IMAGE_FORMATS` (`avro`, `debezium`) have no
such field, so they refuse a run with absent columns (`require_full_images`: one line, a DbusError) before
building any of its messages, instead of writing the columns as null; the kafka sink checks its batch's runs
with it before producing any of the batch.
"""

from __future__ import annotations

import importlib
from typing import Any, ClassVar, Protocol

from dbus_ray.errors import DbusError
from dbus_ray.model import TableRows


class Serializer(Protocol):
    name: ClassVar[str]
    per_row: ClassVar[bool]
    content_type: ClassVar[str]

    def encode(self, rows: TableRows, pipeline: str, records: list[dict[str, Any]] | None = None) -> list[bytes]:
        """The message values of one run of rows."""
        ...


#: name -> (module, class): a serializer's module is imported only when it is asked for (avro needs fastavro).
_CLASSES = {
    "json": ("dbus_ray.serializers.json", "JsonSerializer"),
    "avro": ("dbus_ray.serializers.avro", "AvroSerializer"),
    "arrow": ("dbus_ray.serializers.arrow", "ArrowSerializer"),
    "debezium": ("dbus_ray.serializers.debezium", "DebeziumSerializer"),
}
SERIALIZERS = tuple(_CLASSES)


def get_serializer(name: str, **options: Any) -> Serializer:
    """A serializer by name; `options` go to its constructor (e.g. avro's `schema_registry`)."""
    if name not in _CLASSES:
        raise ValueError(f"unknown serializer {name!r} (known: {', '.join(SERIALIZERS)})")
    module, cls = _CLASSES[name]
    return getattr(importlib.import_module(module), cls)(**options)


#: the formats with no field for the columns a row image leaves out: they refuse runs that have some
FULL_IMAGE_FORMATS = ("avro", "debezium")


def require_full_images(rows: TableRows, fmt: str) -> None:
    """Raise a DbusError (one line) when a row of the run has an image without some columns (a non-empty entry
    of the `absent` column, `dbus_ray.model.ABSENT_TYPE`): format `fmt` would write them as SQL NULL. A run
    without an `absent` column costs one schema lookup."""
    index = rows.data.schema.get_field_index("absent")
    if index < 0:
        return
    if any(names for entry in rows.data.column(index).to_pylist() if entry for names in entry.values()):
        raise DbusError(f"format {fmt}: table {rows.name} has row images without some columns (binlog_row_image "
                        "MINIMAL/NOBLOB): the format needs binlog_row_image=FULL (format json names them in absent)")
