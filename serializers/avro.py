"""Serializer `avro` (fastavro): each row change as one Avro record, with one record schema per table
derived from the Arrow type of the table's images (`TableRows.data`'s `before`/`after` struct type).

The record has the fields of the JSON form (`RowChange.to_dict()`): `pipeline`, `db`, `table`, `op`,
`key` (a record of the primary-key columns), `before` and `after` (null or the `Image` record of the
table's columns, every column nullable), `pos` (`file`, `offset`, `gtid`, `index`), `txid`, `ts`,
`read_ts`; no `absent`: a run whose images leave columns out (binlog_row_image MINIMAL/NOBLOB) is refused
with one line before any of its values is built (`dbus_ray.serializers.require_full_images`), as Avro would
write those columns as null. Names: `dbus.<db>.<table>.Change` (`Image`, `Key`, `Position` beside it); a
column name that is not a valid Avro name is rewritten (`[^A-Za-z0-9_]` -> `_`, leading digit -> `_`, collisions get
a `_2` ...) and the original is kept in the field's `dbus.column` property.

Arrow -> Avro types:
- bool -> boolean; int8/16/32, uint8/16 -> int; int64, uint32 -> long; float16/32 -> float; float64 ->
  double; string -> string; binary/fixed-size binary -> bytes; null -> null.
- **uint64 -> bytes with logical type decimal(20, 0)**: every unsigned BIGINT value (0 .. 2**64-1) fits
  without overflow and stays a number for Avro readers; decoded back to a Python int.
- decimal128/256(p, s) -> bytes decimal(p, s) (MySQL DECIMAL up to 65 digits).
- date32/date64 -> int date; time32/time64 -> long time-micros; timestamp (any unit) -> long
  timestamp-micros (naive timestamps, MySQL DATETIME, are written as if UTC and read back naive);
  duration (MySQL TIME outside 0..24h) -> long microseconds with property `dbus.type: duration-micros`.
- struct -> record, list -> array, map with string keys -> map, dictionary -> its value type.

Encoding is schemaless (the bare Avro body) by default. With `schema_registry` set (a Confluent Schema
Registry URL, or any registry serving its API, e.g. Apicurio's `/apis/ccompat/v6`) each value is written by
confluent-kafka's own `confluent_kafka.schema_registry.avro.AvroSerializer` through its
`SchemaRegistryClient`: the Confluent wire format (magic byte 0, the 4-byte big-endian schema id, then the
body, the same body as the schemaless form). The schema is registered once per subject, named by
`subject_name_strategy` (confluent-kafka's strategies): `topic` (default, `<topic>-value`), `record`
(`dbus.<db>.<table>.Change`) or `topic_record` (`<topic>-dbus.<db>.<table>.Change`). The values handed to
it are this module's Avro-ready records (e.g. an unsigned BIGINT as a `Decimal`), so its bytes are exactly
the schemaless body behind the 5-byte header. A registry that cannot be reached or refuses the schema fails
the first encode with one line naming the registry URL and the subject.
"""

from __future__ import annotations

import datetime as dt
import decimal
import io
import json
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import fastavro
import pyarrow as pa

from dbus_ray.model import TableRows
from dbus_ray.serializers import require_full_images

Convert = Callable[[Any], Any] | None

_NAME_BAD = re.compile(r"[^A-Za-z0-9_]")
_MICRO = dt.timedelta(microseconds=1)
UINT64_SCHEMA = {"type": "bytes", "logicalType": "decimal", "precision": 20, "scale": 0}


def avro_name(name: str) -> str:
    """A valid Avro name for `name` (which may be any MySQL identifier)."""
    out = _NAME_BAD.sub("_", name) or "_"
    return "_" + out if out[0].isdigit() else out


def _unique(names: list[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for name in names:
        candidate, n = name, 1
        while candidate in seen:
            n += 1
            candidate = f"{name}_{n}"
        seen.add(candidate)
        out.append(candidate)
    return out


@dataclass
class _Type:
    schema: Any
    encode: Convert = None  # Python value (as Arrow's to_pylist gives it) -> what fastavro writes
    decode: Convert = None  # what fastavro reads -> the Python value


class _Builder:
    """Arrow type -> Avro schema plus value converters; names nested records uniquely."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.records: set[str] = set()

    def record_name(self, hint: str) -> str:
        name = avro_name(hint)
        candidate, n = name, 1
        while candidate in self.records:
            n += 1
            candidate = f"{name}_{n}"
        self.records.add(candidate)
        return candidate

    def build(self, t: pa.DataType, hint: str) -> _Type:
        if pa.types.is_dictionary(t):
            return self.build(t.value_type, hint)
        if pa.types.is_null(t):
            return _Type("null")
        if pa.types.is_boolean(t):
            return _Type("boolean")
        if pa.types.is_uint64(t):
            return _Type(dict(UINT64_SCHEMA), decimal.Decimal, int)
        if pa.types.is_integer(t):
            small = t.bit_width < 32 or (t.bit_width == 32 and pa.types.is_signed_integer(t))
            return _Type("int" if small else "long")
        if pa.types.is_float16(t) or pa.types.is_float32(t):
            return _Type("float")
        if pa.types.is_float64(t):
            return _Type("double")
        if pa.types.is_decimal(t):
            return _Type({"type": "bytes", "logicalType": "decimal", "precision": t.precision, "scale": t.scale})
        if pa.types.is_string(t) or pa.types.is_large_string(t) or _is_string_view(t):
            return _Type("string")
        if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
            return _Type("bytes")
        if pa.types.is_date(t):
            return _Type({"type": "int", "logicalType": "date"})
        if pa.types.is_time(t):
            return _Type({"type": "long", "logicalType": "time-micros"})
        if pa.types.is_timestamp(t):
            if t.tz is None:
                return _Type({"type": "long", "logicalType": "timestamp-micros"}, None, _naive)
            return _Type({"type": "long", "logicalType": "timestamp-micros"})
        if pa.types.is_duration(t):
            return _Type({"type": "long", "dbus.type": "duration-micros"}, _micros, _timedelta)
        if pa.types.is_struct(t):
            return self.record([t.field(i) for i in range(t.num_fields)], hint)
        if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
            item = self.build(t.value_type, hint + "_item")
            schema = {"type": "array", "items": _nullable(item.schema)}
            enc = None if item.encode is None else _list_of(item.encode)
            dec = None if item.decode is None else _list_of(item.decode)
            return _Type(schema, enc, dec)
        if pa.types.is_map(t) and (pa.types.is_string(t.key_type) or pa.types.is_large_string(t.key_type)):
            item = self.build(t.item_type, hint + "_value")
            schema = {"type": "map", "values": _nullable(item.schema)}
            return _Type(schema, _map_encode(item.encode), _map_decode(item.decode))
        raise ValueError(f"column {hint}: Arrow type {t} has no Avro mapping")

    def record(self, fields: list[pa.Field], hint: str, name: str | None = None) -> _Type:
        names = _unique([avro_name(f.name) for f in fields])
        built = [self.build(f.type, f"{hint}_{f.name}") for f in fields]
        avro_fields = []
        for f, aname, b in zip(fields, names, built):
            field: dict[str, Any] = {"name": aname, "type": _nullable(b.schema), "default": None}
            if aname != f.name:
                field["dbus.column"] = f.name
            avro_fields.append(field)
        schema = {"type": "record", "name": name or self.record_name(hint), "fields": avro_fields}
        plan = [(f.name, aname, b.encode, b.decode) for f, aname, b in zip(fields, names, built)]
        plain = all(orig == aname for orig, aname, _, _ in plan)
        if plain and all(b.encode is None for b in built):
            enc = None
        else:
            enc = _record_encode([(orig, aname, e) for orig, aname, e, _ in plan])
        if plain and all(b.decode is None for b in built):
            dec = None
        else:
            dec = _record_decode([(orig, aname, d) for orig, aname, _, d in plan])
        return _Type(schema, enc, dec)


def _is_string_view(t: pa.DataType) -> bool:
    check = getattr(pa.types, "is_string_view", None)
    return bool(check and check(t))


def _nullable(schema: Any) -> Any:
    return "null" if schema == "null" else ["null", schema]


def _naive(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=None)


def _micros(value: Any) -> int:
    if isinstance(value, dt.timedelta):
        return value // _MICRO
    return int(value)


def _timedelta(value: int) -> dt.timedelta:
    return dt.timedelta(microseconds=value)


def _list_of(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda items: [None if v is None else fn(v) for v in items]


def _map_encode(fn: Convert) -> Callable[[Any], Any]:
    if fn is None:
        return lambda pairs: dict(pairs)
    return lambda pairs: {k: None if v is None else fn(v) for k, v in pairs}


def _map_decode(fn: Convert) -> Callable[[Any], Any]:
    if fn is None:
        return lambda mapping: list(mapping.items())
    return lambda mapping: [(k, None if v is None else fn(v)) for k, v in mapping.items()]


def _record_encode(plan: list[tuple[str, str, Convert]]) -> Callable[[dict], dict]:
    def encode(row: dict) -> dict:
        out = {}
        for orig, aname, fn in plan:
            v = row.get(orig)
            out[aname] = v if v is None or fn is None else fn(v)
        return out

    return encode


def _record_decode(plan: list[tuple[str, str, Convert]]) -> Callable[[dict], dict]:
    def decode(rec: dict) -> dict:
        out = {}
        for orig, aname, fn in plan:
            v = rec.get(aname)
            out[orig] = v if v is None or fn is None else fn(v)
        return out

    return decode


@dataclass
class TableSchema:
    """The Avro schema of one table's row changes, parsed, with its converters."""

    schema: dict[str, Any]
    parsed: Any
    image: _Type
    key: _Type
    #: with a registry: topic (None for the record strategy) -> (confluent-kafka AvroSerializer, context, id)
    writers: dict[str | None, tuple[Any, Any, int]] = field(default_factory=dict)


#: `subject_name_strategy` values -> confluent_kafka.schema_registry's subject name strategy functions.
SUBJECT_STRATEGIES = {
    "topic": "topic_subject_name_strategy",
    "record": "record_subject_name_strategy",
    "topic_record": "topic_record_subject_name_strategy",
}


class AvroSerializer:
    name: ClassVar[str] = "avro"
    per_row: ClassVar[bool] = True
    content_type: ClassVar[str] = "application/avro"

    def __init__(self, schema_registry: str | None = None, timeout: float = 10.0,
                 subject_name_strategy: str = "topic") -> None:
        if subject_name_strategy not in SUBJECT_STRATEGIES:
            raise ValueError(f"subject_name_strategy: expected one of {', '.join(SUBJECT_STRATEGIES)}, "
                             f"got {subject_name_strategy!r}")
        self.schema_registry = schema_registry.rstrip("/") if schema_registry else None
        self.timeout = timeout
        self.subject_name_strategy = subject_name_strategy
        self._schemas: dict[tuple[str, str, tuple[str, ...], pa.DataType], TableSchema] = {}
        self._by_id: dict[int, TableSchema] = {}
        self._client: Any = None  # confluent_kafka.schema_registry.SchemaRegistryClient, made on first use

    # ------------------------------------------------------------------ schemas
    def table_schema(self, rows: TableRows) -> TableSchema:
        image_type = rows.data.schema.field("after").type
        cache_key = (rows.db, rows.table, rows.key, image_type)
        found = self._schemas.get(cache_key)
        if found is None:
            found = self._schemas[cache_key] = self._build(rows.db, rows.table, rows.key, image_type)
        return found

    def schema(self, rows: TableRows) -> dict[str, Any]:
        """The Avro schema (JSON form) of the row changes of `rows`' table."""
        return self.table_schema(rows).schema

    def subject(self, ts: TableSchema, topic: str | None) -> str:
        """The registry subject of `ts`'s schema for messages to `topic` (by `subject_name_strategy`)."""
        from confluent_kafka import schema_registry
        from confluent_kafka.serialization import MessageField, SerializationContext

        if topic is None and self.subject_name_strategy != "record":
            raise ValueError(f"subject_name_strategy {self.subject_name_strategy} needs the topic of the messages")
        strategy = getattr(schema_registry, SUBJECT_STRATEGIES[self.subject_name_strategy])
        record_name = f"{ts.schema['namespace']}.{ts.schema['name']}"
        return strategy(SerializationContext(topic or "", MessageField.VALUE), record_name)

    def _writer(self, ts: TableSchema, topic: str | None) -> tuple[Any, Any, int]:
        """confluent-kafka's AvroSerializer of `ts` for messages to `topic`, its serialization context and the
        schema id, the schema registered under the topic's subject on first use.

        One serializer per subject: it keeps one schema id, and registries other than Confluent's (Apicurio)
        may give the same schema different ids under different subjects."""
        if self.subject_name_strategy == "record":
            topic = None
        found = ts.writers.get(topic)
        if found is not None:
            return found
        from confluent_kafka import schema_registry
        from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
        from confluent_kafka.schema_registry.avro import AvroSerializer as ConfluentAvroSerializer
        from confluent_kafka.serialization import MessageField, SerializationContext

        subject = self.subject(ts, topic)
        schema = Schema(json.dumps(ts.schema), "AVRO")
        try:
            if self._client is None:
                self._client = SchemaRegistryClient({"url": self.schema_registry, "timeout": self.timeout})
            # registered here rather than on the serializer's first call, so that this error is the registry's
            # alone; the client caches the answer, so the serializer's own registration sends no request
            schema_id = int(self._client.register_schema(subject, schema))
        except Exception as exc:  # any failure of the HTTP exchange: refused, unreachable, malformed answer
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise ValueError(f"schema registry {self.schema_registry}: cannot register {subject}: {reason}") \
                from None
        strategy = getattr(schema_registry, SUBJECT_STRATEGIES[self.subject_name_strategy])
        writer = ConfluentAvroSerializer(self._client, schema.schema_str,
                                         conf={"auto.register.schemas": True, "subject.name.strategy": strategy})
        context = SerializationContext(topic or "", MessageField.VALUE)
        found = ts.writers[topic] = (writer, context, schema_id)
        self._by_id[schema_id] = ts
        return found

    @staticmethod
    def _build(db: str, table: str, key: tuple[str, ...], image_type: pa.DataType) -> TableSchema:
        if not pa.types.is_struct(image_type):
            raise ValueError(f"{db}.{table}: image type {image_type} is not a struct")
        namespace = f"dbus.{avro_name(db)}.{avro_name(table)}"
        builder = _Builder(namespace)
        builder.records.update({"Change", "Image", "Key", "Position"})
        columns = [image_type.field(i) for i in range(image_type.num_fields)]
        image = builder.record(columns, "Image", name="Image")
        by_name = {f.name: f for f in columns}
        key_fields = [by_name.get(k, pa.field(k, pa.null())) for k in key]
        key_t = builder.record(key_fields, "Key", name="Key")
        position = {
            "type": "record",
            "name": "Position",
            "fields": [
                {"name": "file", "type": "string"},
                {"name": "offset", "type": "long"},
                {"name": "gtid", "type": ["null", "string"], "default": None},
                {"name": "index", "type": "int"},
            ],
        }
        schema = {
            "type": "record",
            "name": "Change",
            "namespace": namespace,
            "doc": f"Row change of {db}.{table} (dbus-ray)",
            "fields": [
                {"name": "pipeline", "type": "string"},
                {"name": "db", "type": "string"},
                {"name": "table", "type": "string"},
                {"name": "op", "type": "string"},
                {"name": "key", "type": key_t.schema},
                {"name": "before", "type": ["null", image.schema], "default": None},
                {"name": "after", "type": ["null", "Image"], "default": None},
                {"name": "pos", "type": position},
                {"name": "txid", "type": ["null", "string"], "default": None},
                {"name": "ts", "type": "double"},
                {"name": "read_ts", "type": "double"},
            ],
        }
        parsed = fastavro.parse_schema(json.loads(json.dumps(schema)))
        return TableSchema(schema, parsed, image, key_t)

    # ------------------------------------------------------------------ encode / decode
    def encode(self, rows: TableRows, pipeline: str, records: list[dict[str, Any]] | None = None,
               topic: str | None = None) -> list[bytes]:
        """The values of `rows`' changes; `topic` (where they go) names the registry subject of the `topic`
        and `topic_record` strategies (the kafka sink passes it). A run with absent columns: a DbusError."""
        require_full_images(rows, self.name)
        ts = self.table_schema(rows)
        if records is None:
            records = rows.records(pipeline)
        enc_image = ts.image.encode
        enc_key = ts.key.encode
        if self.schema_registry:
            confluent, context, _ = self._writer(ts, topic)
            write = lambda record: confluent(record, context)  # noqa: E731
        else:
            parsed, schemaless = ts.parsed, fastavro.schemaless_writer

            def write(record: dict[str, Any]) -> bytes:
                buf = io.BytesIO()
                schemaless(buf, parsed, record)
                return buf.getvalue()

        # an image as fastavro's tuple notation (the union branch by name): fastavro writes it without first
        # checking the record against each branch of ["null", Image] (the same bytes, ~25 % less time)
        image = f"{ts.schema['namespace']}.Image"
        out = []
        for r in records:
            record = dict(r)  # the caller's record stays as it is
            before, after = record["before"], record["after"]
            if before is not None:
                record["before"] = (image, before if enc_image is None else enc_image(before))
            if after is not None:
                record["after"] = (image, after if enc_image is None else enc_image(after))
            if enc_key is not None:
                record["key"] = enc_key(record["key"])
            out.append(write(record))
        return out

    def decode(self, value: bytes, rows: TableRows | None = None) -> dict[str, Any]:
        """A value back as the JSON form's dict, holding the Python values of the source (ints, Decimal,
        datetime ...). Schemaless values need `rows` (a run of the same table and type) for the schema;
        Confluent wire-format values name their schema by id (known once encoded by this serializer)."""
        if self.schema_registry and value[:1] == b"\x00" and len(value) >= 5:
            schema_id = struct.unpack(">I", value[1:5])[0]
            ts = self._by_id.get(schema_id)
            if ts is None:
                if rows is None:
                    raise ValueError(f"unknown schema id {schema_id}")
                ts = self.table_schema(rows)
            body = value[5:]
        else:
            if rows is None:
                raise ValueError("schemaless Avro needs the table's rows to know its schema")
            ts = self.table_schema(rows)
            body = value
        record = fastavro.schemaless_reader(io.BytesIO(body), ts.parsed, None)
        dec_image, dec_key = ts.image.decode, ts.key.decode
        if dec_image is not None:
            for side in ("before", "after"):
                if record[side] is not None:
                    record[side] = dec_image(record[side])
        if dec_key is not None:
            record["key"] = dec_key(record["key"])
        return record
