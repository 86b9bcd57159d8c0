"""Row-change codecs by name: `json` (the documented JSON form), `avro` (fastavro, one record schema per
table), `arrow` (a whole run of rows as Arrow IPC, for peek, notebooks and parquet) and `debezium`
(Debezium's change-event envelope; its `messages` gives key, value and headers of each message, see
`dbus_ray.serializers.debezium`).

Every serializer has `encode(rows, pipeline, records=None) -> list[bytes]`: the message values for one
`TableRows` run. Per-row serializers (`per_row = True`: json, avro) return one value per row change, in
order; `arrow` returns one value for the whole run. `records`, when given, is `list(rows.records(pipeline))`
(the row changes' JSON form) already computed by the caller (the Kafka sink needs them for keys and headers
too); serializers do not modify them.

`get_serializer(name, **options)` returns a new serializer; `SERIALIZERS` lists the names.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol

from dbus_ray.model import TableRows


class Serializer(Protocol):
    name: ClassVar[str]
    per_row: ClassVar[bool]
    content_type: ClassVar[str]

    def encode(self, rows: TableRows, pipeline: str, records: list[dict[str, Any]] | None = None) -> list[bytes]:
        """The message values of one run of rows."""
        ...


SERIALIZERS = ("json", "avro", "arrow", "debezium")


def get_serializer(name: str, **options: Any) -> Serializer:
    """A serializer by name; `options` go to its constructor (e.g. avro's `schema_registry`)."""
    if name == "json":
        from dbus_ray.serializers.json import JsonSerializer

        return JsonSerializer(**options)
    if name == "avro":
        from dbus_ray.serializers.avro import AvroSerializer

        return AvroSerializer(**options)
    if name == "arrow":
        from dbus_ray.serializers.arrow import ArrowSerializer

        return ArrowSerializer(**options)
    if name == "debezium":
        from dbus_ray.serializers.debezium import DebeziumSerializer

        return DebeziumSerializer(**options)
    raise ValueError(f"unknown serializer {name!r} (known: {', '.join(SERIALIZERS)})")
