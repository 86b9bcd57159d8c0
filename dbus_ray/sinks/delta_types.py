"""The delta sink's type mapping: the Arrow type of a row image field -> the Delta Lake column type, applied
with Arrow casts (vectorised, no Python object per value).

MySQL/MariaDB column          Arrow type        Delta column (Arrow)      value in the Delta table
TINYINT                       int8              byte (int8)               the same integer
SMALLINT                      int16             short (int16)
TINYINT UNSIGNED              uint8             short (int16)
MEDIUMINT, INT                int32             integer (int32)
SMALLINT UNSIGNED, YEAR       uint16            integer (int32)
BIGINT                        int64             long (int64)
MEDIUMINT/INT UNSIGNED        uint32            long (int64)
BIGINT UNSIGNED               uint64            decimal(20,0)             exact (Delta has no unsigned types)
DECIMAL(p,s), p <= 38         decimal(p,s)      decimal(p,s)              exact
DECIMAL(p,s), p > 38          decimal256(p,s)   string                    the exact decimal as text
                                                                          as MySQL shows it (`0.000`, `-999.9`;
                                                                          Delta's decimals end at 38 digits)
FLOAT                         float32           float (float32)           the same float32
DOUBLE                        float64           double (float64)          the same float64
DATE, DATETIME, TIMESTAMP     string            string                    as the row change carries it: ISO 8601
                                                                          (`2024-01-02`, `2024-01-02T03:04:05.5`,
                                                                          TIMESTAMP in UTC `...+00:00`; zero
                                                                          dates as MySQL shows them)
TIME                          duration[us]      long (int64)              microseconds (signed; may exceed 24 h:
                                                                          Delta has no interval type)
CHAR, VARCHAR, TEXT, ENUM,    string            string                    the same text (SET: members joined by
SET, JSON                                                                 `,`; JSON: the text the source logged)
BINARY, VARBINARY, BLOB,      binary            binary                    the same bytes
BIT, GEOMETRY
(other sources) bool          bool              boolean
(other sources) date32        date32            date
(other sources) timestamp     timestamp         timestamp (UTC) / timestamp_ntz

NULL is null. A column whose type is null in the source's Arrow schema (no value seen) is a string column.
"""

from __future__ import annotations

import pyarrow as pa


def delta_type(arrow: pa.DataType, column: str) -> pa.DataType:
    """The Arrow type the Delta table stores for an Arrow image field (see the module's table)."""
    t = pa.types
    if t.is_int8(arrow) or t.is_int16(arrow) or t.is_int32(arrow) or t.is_int64(arrow):
        return arrow
    if t.is_uint8(arrow):
        return pa.int16()
    if t.is_uint16(arrow):
        return pa.int32()
    if t.is_uint32(arrow):
        return pa.int64()
    if t.is_uint64(arrow):
        return pa.decimal128(20, 0)
    if t.is_decimal(arrow):
        return pa.decimal128(arrow.precision, arrow.scale) if arrow.precision <= 38 else pa.string()
    if t.is_float32(arrow) or t.is_float64(arrow) or t.is_boolean(arrow):
        return arrow
    if t.is_string(arrow) or t.is_large_string(arrow) or t.is_null(arrow):
        return pa.string()
    if t.is_binary(arrow) or t.is_large_binary(arrow) or t.is_fixed_size_binary(arrow):
        return pa.binary()
    if t.is_duration(arrow):
        return pa.int64()
    if t.is_date(arrow):
        return pa.date32()
    if t.is_timestamp(arrow):
        return pa.timestamp("us", tz="UTC" if arrow.tz else None)
    raise ValueError(f"column {column}: no Delta Lake type for Arrow type {arrow}")


def to_delta(array: pa.Array, column: str) -> pa.Array:
    """One image column cast to its Delta type (durations in microseconds, wide decimals as exact text)."""
    target = delta_type(array.type, column)
    if array.type == target:
        return array
    if pa.types.is_decimal(array.type) and target == pa.string():  # as MySQL shows it: `0.000`, not `0E-3`
        return pa.array([None if v is None else format(v, "f") for v in array.to_pylist()], pa.string())
    if pa.types.is_duration(array.type) and array.type.unit != "us":
        array = array.cast(pa.duration("us"))
    if pa.types.is_timestamp(array.type) and array.type.tz:
        array = array.cast(pa.timestamp(array.type.unit, tz="UTC"))
    return array.cast(target)


def same_column(wanted: pa.DataType, have: pa.DataType) -> bool:
    """Whether an existing Delta column of type `have` stores the mapped type `wanted` as it is."""
    if wanted == have:
        return True
    strings = (pa.string(), pa.large_string(), pa.string_view())
    binaries = (pa.binary(), pa.large_binary(), pa.binary_view())
    return (wanted in strings and have in strings) or (wanted in binaries and have in binaries)
