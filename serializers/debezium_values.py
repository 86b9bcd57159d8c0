"""Column values and their Kafka Connect schemas as Debezium's MySQL connector maps them (for
`dbus_ray.serializers.debezium`), by the column's MySQL type from the image field's metadata (`dbus.mysql`,
`dbus.not_null`; see `dbus_ray.mysql.column_meta`), else by its Arrow type."""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

META_KEY = b"dbus.mysql"
NOT_NULL_KEY = b"dbus.not_null"
Convert = Callable[[Any], Any]
_EPOCH = dt.datetime(1970, 1, 1)
_EPOCH_DATE = dt.date(1970, 1, 1)
_MICRO = dt.timedelta(microseconds=1)
_DATE_RE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})")


def _days(text: str) -> int | None:
    m = _DATE_RE.match(text)
    if not m:
        return None
    try:
        return (dt.date(int(m[1]), int(m[2]), int(m[3])) - _EPOCH_DATE).days
    except ValueError:  # zero or partial date: Debezium writes null
        return None


def _datetime(text: str) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(text.replace(" ", "T"))
    except ValueError:
        return None


def _epoch_micros(text: str) -> int | None:
    value = _datetime(text)
    if value is None:
        return None
    return (value.replace(tzinfo=None) - _EPOCH) // _MICRO


#: exact for any MySQL DECIMAL (65 digits at most): moving the point by `scale` never rounds
_EXACT = decimal.Context(prec=200)


def _unscaled(value: decimal.Decimal, scale: int) -> bytes:
    """Kafka Connect's Decimal: the unscaled value (digits beyond `scale` cut off, toward zero), big-endian
    two's complement, shortest form."""
    n = int(value.scaleb(scale, _EXACT))
    return n.to_bytes(max(1, (n + (n < 0)).bit_length() // 8 + 1), "big", signed=True)


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


@dataclass
class Column:
    name: str
    schema: dict[str, Any]
    convert: Convert | None  # the image's value (not None) -> the payload's
    not_null: bool = False
    zero: str | None = None  # TIMESTAMP: a zero value is null in a snapshot, this (the epoch) in the binlog

    def payload(self, value: Any, snapshot: bool) -> Any:
        """The payload's value of the image's `value` (a snapshot's row: `snapshot`)."""
        if value is None or self.convert is None:
            return value
        out = self.convert(value)
        return self.zero if out is None and not snapshot else out


def server_id(gtid: str | None) -> int:
    """`source.server_id`: a MariaDB GTID's server (`domain-server-sequence`), else 0."""
    return int(gtid.split("-")[1]) if gtid and gtid.count("-") == 2 else 0


def named(type_: str, name: str, version: int | None = 1, parameters: dict[str, str] | None = None
           ) -> dict[str, Any]:
    out: dict[str, Any] = {"type": type_, "name": name}
    if version is not None:
        out["version"] = version
    if parameters:
        out["parameters"] = parameters
    return out


def _allowed(spec: str) -> str:
    body = spec[spec.index("(") + 1 : spec.rindex(")")]
    return ",".join(m.replace("''", "'") for m in re.findall(r"'((?:[^']|'')*)'", body))


class Mapper:
    """Columns by the options `o` (a DebeziumOptions)."""

    def __init__(self, o: Any) -> None:
        self.o = o

    def binary(self, pad: int = 0) -> tuple[dict[str, Any], Convert]:
        mode = self.o.binary_handling_mode

        def fill(v: bytes) -> bytes:
            return v + b"\x00" * (pad - len(v)) if len(v) < pad else v

        if mode == "bytes":
            return {"type": "bytes"}, lambda v: _b64(fill(v))
        if mode == "base64":
            return {"type": "string"}, lambda v: _b64(fill(v))
        if mode == "base64-url-safe":
            return {"type": "string"}, lambda v: base64.urlsafe_b64encode(fill(v)).decode("ascii")
        return {"type": "string"}, lambda v: fill(v).hex()

    def decimal(self, precision: int, scale: int, mode: str | None = None) -> tuple[dict[str, Any], Convert]:
        mode = mode or self.o.decimal_handling_mode
        if mode == "string":
            return {"type": "string"}, lambda v: format(decimal.Decimal(v), "f")
        if mode == "double":
            return {"type": "double"}, float
        params = {"scale": str(scale), "connect.decimal.precision": str(precision)}
        return (named("bytes", "org.apache.kafka.connect.data.Decimal", 1, params),
                lambda v: _b64(_unscaled(decimal.Decimal(v), scale)))

    def column(self, f: pa.Field) -> Column:
        meta = f.metadata or {}
        spec = meta.get(META_KEY, b"").decode()
        schema, convert = self.by_spec(spec) if spec else self.by_arrow(f.type)
        zero = convert("1970-01-01T00:00:00+00:00") if spec.startswith("timestamp") and convert else None
        return Column(f.name, schema, convert, NOT_NULL_KEY in meta, zero)

    def by_spec(self, spec: str) -> tuple[dict[str, Any], Convert | None]:
        base, _, args = spec.partition("(")
        arg = args.rstrip(")")
        tmode = self.o.time_precision_mode
        if base in ("tinyint", "tinyint unsigned", "smallint"):
            return {"type": "int16"}, None
        if base in ("smallint unsigned", "mediumint", "mediumint unsigned", "int"):
            return {"type": "int32"}, None
        if base in ("int unsigned", "bigint"):
            return {"type": "int64"}, None
        if base == "bigint unsigned":
            if self.o.bigint_unsigned_handling_mode == "precise":  # a Connect Decimal whatever decimal mode
                return self.decimal(20, 0, "precise")
            return {"type": "int64"}, lambda v: v - (1 << 64) if v >= 1 << 63 else v
        if base == "decimal":
            p, s = (int(x) for x in arg.split(","))
            return self.decimal(p, s)
        if base == "float":
            return {"type": "float"}, None
        if base == "double":
            return {"type": "double"}, None
        if base == "bit":
            bits = int(arg)
            if bits == 1:
                return {"type": "boolean"}, lambda v: any(v)
            size = (bits + 7) // 8
            return (named("bytes", "io.debezium.data.Bits", 1, {"length": str(bits)}),
                    lambda v: _b64(bytes(reversed(v.rjust(size, b"\x00")[-size:]))))
        if base == "year":  # YEAR 0000 is 1900 in Debezium's binlog reader (the stored byte + 1900)
            return named("int32", "io.debezium.time.Year"), lambda v: v or 1900
        if base == "date":
            name = "org.apache.kafka.connect.data.Date" if tmode == "connect" else "io.debezium.time.Date"
            return named("int32", name), _days
        if base == "datetime":
            fsp = int(arg or 0)
            if tmode == "connect":
                return named("int64", "org.apache.kafka.connect.data.Timestamp"), _millis(_epoch_micros)
            if fsp <= 3:
                return named("int64", "io.debezium.time.Timestamp"), _millis(_epoch_micros)
            return named("int64", "io.debezium.time.MicroTimestamp"), _epoch_micros
        if base == "timestamp":
            return named("string", "io.debezium.time.ZonedTimestamp"), _zoned(int(arg or 0))
        if base == "time":
            fsp = int(arg or 0)
            if tmode == "connect":  # a TIME outside 00:00 .. 24:00 has no Connect Time: null, as in Debezium
                return named("int32", "org.apache.kafka.connect.data.Time"), _connect_time
            return named("int64", "io.debezium.time.MicroTime"), lambda v: v // _MICRO
        if base == "enum":
            return named("string", "io.debezium.data.Enum", 1, {"allowed": _allowed(spec)}), None
        if base == "set":
            return named("string", "io.debezium.data.EnumSet", 1, {"allowed": _allowed(spec)}), None
        if base == "json":
            return named("string", "io.debezium.data.Json"), None
        if base == "geometry":
            schema = {"type": "struct", "fields": [{"type": "bytes", "optional": False, "field": "wkb"},
                                                   {"type": "int32", "optional": True, "field": "srid"}],
                      "name": "io.debezium.data.geometry.Geometry", "version": 1, "doc": "Geometry"}
            return schema, _geometry
        if base == "binary":
            return self.binary(int(arg or 0))
        if base in ("varbinary", "blob"):
            return self.binary()
        return {"type": "string"}, None  # char, varchar, text

    def by_arrow(self, t: pa.DataType) -> tuple[dict[str, Any], Convert | None]:
        if pa.types.is_boolean(t):
            return {"type": "boolean"}, None
        if pa.types.is_uint64(t):
            return self.by_spec("bigint unsigned")
        if pa.types.is_integer(t):
            width = t.bit_width * (2 if pa.types.is_unsigned_integer(t) else 1)
            return {"type": "int16" if width <= 16 else "int32" if width <= 32 else "int64"}, None
        if pa.types.is_float32(t):
            return {"type": "float"}, None
        if pa.types.is_floating(t):
            return {"type": "double"}, None
        if pa.types.is_decimal(t):
            return self.decimal(t.precision, t.scale)
        if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
            return self.binary()
        if pa.types.is_duration(t):
            return self.by_spec("time(6)")
        return {"type": "string"}, None


def _connect_time(v: dt.timedelta) -> int | None:
    return v // _MICRO // 1000 if dt.timedelta(0) <= v < dt.timedelta(days=1) else None


def _millis(fn: Callable[[str], int | None]) -> Convert:
    def convert(v: str) -> int | None:
        micros = fn(v)
        return None if micros is None else micros // 1000

    return convert


def _zoned(fsp: int) -> Convert:
    def convert(v: str) -> str | None:
        value = _datetime(v)
        if value is None:
            return None
        value = value.astimezone(dt.UTC) if value.tzinfo else value
        text = value.strftime("%Y-%m-%dT%H:%M:%S")
        if fsp:
            text += f".{value.microsecond:06d}"[: fsp + 1]
        return text + "Z"

    return convert


def _geometry(v: bytes) -> dict[str, Any]:
    srid = int.from_bytes(v[:4], "little")
    return {"wkb": _b64(v[4:]), "srid": srid or None}
