"""The `kafka` sink's `key` (its message key columns) checked against a table's columns: a named column the
table does not have stops the pipeline with one line, instead of a key whose value is null for every row
(on a compacted topic, every row of the table would collapse into that one key). The table's columns are the
fields of its images' Arrow struct type (a table whose images have no struct fields has none). Used by the
sink before any message of a batch is produced (every format with a `key`) and by the `debezium` serializer
when it builds a table's key schema, so the check has one home.

`image_key` gives a row's key values when its images leave columns out (`absent`: binlog_row_image
MINIMAL/NOBLOB), each from the image that carries it; a key column no image carries stops the write with
one line naming it, the table, the op and the binlog position, instead of a null key value."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from dbus_ray.errors import DbusError
from dbus_ray.model import TableRows


def table_columns(rows: TableRows) -> list[str]:
    """The names of the table's columns: its `after` (else `before`) image's struct fields, in order."""
    schema = rows.data.schema
    for image in ("after", "before"):
        index = schema.get_field_index(image)
        if index >= 0 and pa.types.is_struct(schema.field(index).type):
            return [f.name for f in schema.field(index).type]
    return []


def check_key_columns(key: list[str] | tuple[str, ...] | None, rows: TableRows) -> None:
    """Raise a DbusError when a `key` column is not one of the table's (no-op for `key` None: the primary
    key). Its caller checks once per table and image type, not per row."""
    if not key:
        return
    columns = table_columns(rows)
    missing = [k for k in key if k not in columns]
    if missing:
        raise DbusError(f"sink key column(s) {missing} not in table {rows.name} (columns: "
                        f"{', '.join(columns) or 'none'}): every table the sink writes must have the key "
                        "columns (or leave key out for the primary key)")


def image_key(record: dict[str, Any], columns: Sequence[str], primary: Sequence[str] = (), old: bool = False
              ) -> dict[str, Any]:
    """The values of the key `columns` of a row change (its JSON form) whose images leave columns out
    (`record["absent"]`: image -> the columns not in it), each from the first image that carries it: the after
    image, else the before image (a column an update's after image leaves out is unchanged: its before value
    is the value after); with `old`, the before image only (the key the row had, whose tombstone an update
    sends). A column no such image carries has no value we know: a DbusError naming the column, the table,
    the op, the binlog position and the fix (`primary`: the run's key, for which FULL images are the fix).
    For records with `absent` only: the others' images carry every column."""
    absent = record.get("absent") or {}
    sides = ("before",) if old else ("after", "before")
    key: dict[str, Any] = {}
    for column in columns:
        for side in sides:
            image = record[side]
            if image is not None and column not in absent.get(side, ()):
                key[column] = image.get(column)
                break
        else:
            at = f"the {record['op']} at {record['pos']['file']}:{record['pos']['offset']}"
            where = f"not in the before image of {at}, whose old key the tombstone needs" if old \
                else f"in no row image of {at}"
            fix = "" if column in primary else ", or key the sink on primary-key columns"
            raise DbusError(f"sink key column {column!r} of table {record['db']}.{record['table']} is {where} "
                            f"(binlog_row_image MINIMAL/NOBLOB left it out): set binlog_row_image=FULL on the "
                            f"server{fix}")
    return key


class KeyColumns:
    """`check_key_columns` of each run of a sink's batches, once per table and image type (a schema change
    gives a new type, checked again). A run of DDL rows (`op: ddl`, whose images are the statement's, not the
    table's columns) and an empty run are not checked. The image type a table was last checked with is
    compared (`==`, well under a microsecond), not hashed (a struct type's hash costs ~75 us at 100 columns)."""

    def __init__(self, key: list[str] | None) -> None:
        self.key = key
        self._checked: dict[tuple[str, str], pa.DataType] = {}

    def check(self, rows: TableRows) -> None:
        if self.key is None or not rows.num_rows or rows.data.column("op")[0].as_py() == "ddl":
            return
        image = rows.data.schema.field("after").type
        if self._checked.get((rows.db, rows.table)) != image:
            check_key_columns(self.key, rows)
            self._checked[(rows.db, rows.table)] = image
