"""`decimals_as_text` (the Kafka sink's json path): the DECIMAL columns cast to text by Arrow give the same
JSON as the rows with Python Decimals, for every scale MySQL has (0..30) and precision (decimal128 and
decimal256), nulls, null images and sliced runs; a column where Arrow would write scientific notation
keeps its Decimals. The expected text is Python's `format(Decimal, "f")`, not Arrow's."""

from __future__ import annotations

import json
import random
from decimal import Decimal

import pyarrow as pa
import pytest

from dbus_ray.model import META_SCHEMA, TableRows, dumpb
from dbus_ray.serializers.json import decimals_as_text

TYPES = [(1, 0), (5, 2), (12, 2), (10, 6), (10, 7), (20, 10), (30, 30), (38, 0), (38, 38), (40, 20), (65, 30),
         (65, 0)]


def run_of(kind: pa.DataType, values: list[Decimal | None]) -> TableRows:
    n = len(values)
    meta = [pa.array(["insert"] * n), pa.array(["binlog.000001"] * n), pa.array(range(n), pa.int64()),
            pa.nulls(n, pa.string()), pa.array([0] * n, pa.int32()), pa.nulls(n, pa.string()),
            pa.array([1.5] * n), pa.array([2.5] * n)]
    image = pa.struct([pa.field("id", pa.int64()), pa.field("d", kind, metadata={b"dbus.mysql": b"decimal"})])
    after = pa.array([{"id": i, "d": v} if i % 7 else None for i, v in enumerate(values)], image)
    before = pa.array([{"id": i, "d": v} if i % 3 == 0 else None for i, v in enumerate(values)], image)
    batch = pa.RecordBatch.from_arrays([*meta, before, after], names=[*META_SCHEMA.names, "before", "after"])
    return TableRows("db", "t", ("d",), batch)


@pytest.mark.parametrize(("precision", "scale"), TYPES)
def test_same_json_as_decimals(precision: int, scale: int) -> None:
    kind = pa.decimal128(precision, scale) if precision <= 38 else pa.decimal256(precision, scale)
    rng = random.Random(precision * 100 + scale)
    unscaled = [0, 10 ** precision - 1, -(10 ** precision - 1)]
    for _ in range(500):
        digits = rng.randint(1, precision)
        unscaled.append(rng.randint(-(10 ** digits - 1), 10 ** digits - 1))
    values: list[Decimal | None] = [None, *(Decimal(f"{u}E-{scale}") for u in unscaled)]  # exact, any precision
    rows = run_of(kind, values)
    for start, length in ((0, len(values)), (3, 200), (250, 1000)):
        part = TableRows(rows.db, rows.table, rows.key, rows.data.slice(start, length))
        converted = decimals_as_text(part)
        got = [dumpb(r) for r in converted.records("p")]
        assert got == [dumpb(r) for r in part.records("p")]
        for i, text in enumerate(got, start):  # the expected text, from Python's decimal
            value = values[i] if i % 7 or i % 3 == 0 else None  # a row without any image has a null key
            assert json.loads(text)["key"]["d"] == (None if value is None else format(value, "f"))


def test_scientific_notation_keeps_decimals() -> None:
    """Arrow writes 0 at scale 10 as `0E-10`: that column of `after` stays Decimal (JSON `0.0000000000`);
    `before` (the first row alone: 1.0000000000) is cast."""
    rows = run_of(pa.decimal128(20, 10), [Decimal("1.0000000000"), Decimal("0E-10"), Decimal("1E-9")])
    converted = decimals_as_text(rows)
    assert converted.data.schema.field("after").type.field("d").type == pa.decimal128(20, 10)
    assert converted.data.schema.field("before").type.field("d").type == pa.string()
    assert [json.loads(dumpb(r))["key"]["d"] for r in converted.records("p")] == [
        "1.0000000000", "0.0000000000", "0.0000000010"]


def test_small_scale_is_cast() -> None:
    rows = run_of(pa.decimal128(12, 2), [Decimal("-0.05"), Decimal("0.00"), Decimal("1234567890.12")])
    converted = decimals_as_text(rows)
    assert converted.data.schema.field("after").type.field("d").type == pa.string()
    assert [json.loads(dumpb(r))["key"]["d"] for r in converted.records("p")] == ["-0.05", "0.00", "1234567890.12"]


def test_no_decimal_column_is_untouched() -> None:
    data = run_of(pa.decimal128(5, 2), [Decimal("1.00")]).data
    image = pa.struct([("id", pa.int64())])
    nodec = data.set_column(8, "before", pa.array([None], image)).set_column(9, "after", pa.array([{"id": 1}], image))
    rows = TableRows("db", "t", ("id",), nodec)
    assert decimals_as_text(rows) is rows
