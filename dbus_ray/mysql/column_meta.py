"""The MySQL type of each image field, as Arrow field metadata, for consumers that need more than the Arrow
type (`format: debezium` tells DATE from DATETIME from VARCHAR, all Arrow strings).

Key `dbus.mysql` on every field of a row image the mysql source builds (binlog and snapshot alike), value
the column type in lower case: `tinyint`..`bigint` (+ ` unsigned`), `decimal(p,s)`, `float`, `double`,
`bit(n)`, `year`, `date`, `datetime(fsp)`, `timestamp(fsp)`, `time(fsp)`, `char`, `binary(n)`, `varchar`,
`text`, `blob`, `json`, `geometry`, `enum('a','b')`, `set('a','b')`; key `dbus.not_null` (`1`) on NOT NULL
columns.
"""

from __future__ import annotations

import pyarrow as pa

from dbus_ray.mysql import values as bt

KEY = b"dbus.mysql"
NOT_NULL = b"dbus.not_null"  # present (b"1") on a NOT NULL column

_NAMES = {bt.TINY: "tinyint", bt.SHORT: "smallint", bt.INT24: "mediumint", bt.LONG: "int", bt.LONGLONG: "bigint",
          bt.FLOAT: "float", bt.DOUBLE: "double", bt.YEAR: "year", bt.DATE: "date", bt.NEWDATE: "date",
          bt.JSON: "json", bt.GEOMETRY: "geometry"}


def _members(members: tuple[str, ...]) -> str:
    return ",".join("'" + m.replace("'", "''") + "'" for m in members)


def mysql_type(col: bt.ColumnDef) -> str:
    """The column's type as `dbus.mysql` names it (see the module docstring)."""
    t = col.type
    if t in (bt.TINY, bt.SHORT, bt.INT24, bt.LONG, bt.LONGLONG):
        return _NAMES[t] + (" unsigned" if col.unsigned else "")
    if t in (bt.NEWDECIMAL, bt.DECIMAL):
        return f"decimal({col.precision},{col.scale})"
    if t == bt.BIT:
        return f"bit({col.bits})"
    if t in (bt.DATETIME, bt.DATETIME2):
        return f"datetime({col.fsp})"
    if t in (bt.TIMESTAMP, bt.TIMESTAMP2):
        return f"timestamp({col.fsp})"
    if t in (bt.TIME, bt.TIME2):
        return f"time({col.fsp})"
    if t == bt.ENUM:
        return f"enum({_members(col.members)})"
    if t == bt.SET:
        return f"set({_members(col.members)})"
    binary = col.charset == "binary"
    if t == bt.STRING:
        return f"binary({col.max_length})" if binary else "char"
    if t in (bt.VARCHAR, bt.VAR_STRING):
        return "varbinary" if binary else "varchar"
    if t in (bt.BLOB, bt.TINY_BLOB, bt.MEDIUM_BLOB, bt.LONG_BLOB):
        return "blob" if binary else "text"
    return _NAMES.get(t, "unknown")


def column_field(col: bt.ColumnDef, arrow_type: pa.DataType) -> pa.Field:
    """The image field of `col`: its Arrow type, with its MySQL type as metadata."""
    meta = {KEY: mysql_type(col).encode()}
    if not col.nullable:
        meta[NOT_NULL] = b"1"
    return pa.field(col.name, arrow_type, metadata=meta)
