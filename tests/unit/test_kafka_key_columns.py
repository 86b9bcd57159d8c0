"""The kafka sink's `key` checked against a table's columns (`dbus_ray.kafka.key_columns`), without a broker:
the one line, a table without struct images (no columns), and the check once per table and image type,
skipping DDL and empty runs. What the sink does with it against a broker: tests/integration/
test_kafka_key_columns.py."""

from __future__ import annotations

import pyarrow as pa
import pytest

from dbus_ray.errors import DbusError
from dbus_ray.kafka import key_columns
from dbus_ray.kafka.key_columns import KeyColumns, check_key_columns, table_columns
from dbus_ray.model import META_SCHEMA, TableRows


def rows(image: pa.DataType, values: list, op: str = "insert", table: str = "orders") -> TableRows:
    n = len(values)
    meta = [pa.array([op] * n), pa.array(["f"] * n), pa.array([4] * n, pa.int64()), pa.nulls(n, pa.string()),
            pa.array(range(n), pa.int32()), pa.array(["x"] * n), pa.array([1.0] * n), pa.array([1.0] * n)]
    schema = META_SCHEMA.append(pa.field("before", image)).append(pa.field("after", image))
    data = pa.RecordBatch.from_arrays([*meta, pa.nulls(n, image), pa.array(values, image)], schema=schema)
    return TableRows("shop", table, ("id",), data)


ORDERS = pa.struct([("id", pa.int64()), ("name", pa.string())])


def test_the_line_names_the_option_the_columns_the_table_and_its_columns() -> None:
    part = rows(ORDERS, [{"id": 1, "name": "a"}])
    assert table_columns(part) == ["id", "name"]
    with pytest.raises(DbusError) as info:
        check_key_columns(["tenant", "id", "region"], part)
    assert str(info.value) == (
        "sink key column(s) ['tenant', 'region'] not in table shop.orders (columns: id, name): every table the sink "
        "writes must have the key columns (or leave key out for the primary key)")
    check_key_columns(["name", "id"], part)
    check_key_columns(None, part)  # the primary key: nothing to check


def test_a_table_whose_images_have_no_struct_fields_has_no_columns() -> None:
    part = rows(pa.null(), [None])
    assert table_columns(part) == []
    with pytest.raises(DbusError, match=r"^sink key column\(s\) \['id'\] not in table shop.orders \(columns: none\): "):
        check_key_columns(["id"], part)


def test_checked_once_per_table_and_image_type_ddl_and_empty_runs_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    check = key_columns.check_key_columns
    monkeypatch.setattr(key_columns, "check_key_columns", lambda key, r: (calls.append(r.name), check(key, r)))
    keys = KeyColumns(["name"])
    for _ in range(3):
        keys.check(rows(ORDERS, [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]))
    assert calls == ["shop.orders"]
    ddl = pa.struct([("sql", pa.string()), ("change", pa.string())])
    keys.check(rows(ddl, [{"sql": "ALTER TABLE orders ADD c INT", "change": None}], op="ddl"))
    keys.check(rows(ORDERS, []))
    assert calls == ["shop.orders"]
    wider = pa.struct([("id", pa.int64()), ("name", pa.string()), ("c", pa.int32())])
    keys.check(rows(wider, [{"id": 1, "name": "a", "c": 1}]))  # a schema change: checked again
    dropped = pa.struct([("id", pa.int64())])
    with pytest.raises(DbusError, match=r"\['name'\] not in table shop.orders \(columns: id\)"):
        keys.check(rows(dropped, [{"id": 1}]))
    with pytest.raises(DbusError, match=r"table shop.items \(columns: id\)"):
        keys.check(rows(dropped, [{"id": 1}], table="items"))
    assert calls == ["shop.orders"] * 3 + ["shop.items"]
    KeyColumns(None).check(rows(dropped, [{"id": 1}]))  # no `key`: the primary key, nothing checked
