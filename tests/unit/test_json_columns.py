"""The `json` format's column-wise messages (`serializers/json_columns.py`) against the standard library's
encoder of each row change's documented JSON form (`RowChange.to_dict()`), byte for byte: values, message
keys and position headers, for MySQL's awkward values, strings that need escaping, keyless and composite-key
tables, and runs of one or many rows."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from dbus_ray.model import Position, RowChange, TableRows, json_default
from dbus_ray.serializers.json import decimals_as_text
from dbus_ray.serializers.json_columns import messages
from tests.unit.test_serializers import IMAGE, ROW_MAX, ROW_MIN, ROW_NULL, change

STDLIB = json.JSONEncoder(default=json_default, ensure_ascii=False, separators=(",", ":"))


@pytest.fixture(autouse=True)
def _column_wise_for_every_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """The column-wise path for the small runs here too (in use it starts at `MIN_ROWS` rows)."""
    monkeypatch.setattr("dbus_ray.serializers.json_columns.MIN_ROWS", 0)


def expected(rows: TableRows) -> tuple[list[bytes], list[bytes | None], list[bytes]]:
    changes = list(rows.changes("p"))
    return ([STDLIB.encode(c.to_dict()).encode() for c in changes],
            [STDLIB.encode(c.key).encode() if c.key else None for c in changes],
            [STDLIB.encode(c.position.to_dict()).encode() for c in changes])


def check(rows: TableRows) -> None:
    built = messages(rows, "p")
    assert built is not None
    values, keys, positions = expected(rows)
    assert built.values == values
    assert built.keys == keys
    assert built.positions == positions


def test_awkward_values_as_the_stdlib_encodes_them() -> None:
    rows = TableRows.from_changes([change("insert", None, ROW_MAX, 4), change("update", ROW_MAX, ROW_MIN, 5),
                                   change("delete", ROW_NULL, None, 6), change("insert", None, ROW_NULL, 7)],
                                  IMAGE)
    check(rows)
    check(decimals_as_text(rows))  # as the Kafka sink hands them over: DECIMAL columns as their text
    many = TableRows.from_changes([change("insert", None, {**ROW_MAX, "id": i}, i) for i in range(300)], IMAGE)
    check(many)  # many rows: file, op and GTID texts made once per distinct value


STRINGS = ["", "plain", 'quote " inside', "back\\slash", "new\nline\r\ttab", "\x00\x01\x1f\x7f bell\x07",
           "\b\f\x0b\\\"\\n", 'x"' * 30 + "\\" * 7,
           "\u2028\u2029 é€😀", "comma, [bracket] {brace}", None]


@pytest.mark.parametrize("repeat", [1, 40])
def test_strings_are_escaped_as_json_escapes_them(repeat: int) -> None:
    image = pa.struct([("id", pa.int64()), ("s", pa.string()), ("f", pa.float32()), ("d", pa.float64())])
    changes = []
    for i, s in enumerate(STRINGS * repeat):
        row = {"id": i, "s": s, "f": [0.1, None, 3.4028234663852886e38][i % 3], "d": [1e16, -0.0, 5e-324][i % 3]}
        changes.append(RowChange("p", "d\"b", "t\\n", "insert", {"id": i}, None, row,
                                 Position(f"bin\"log.{i % 2}", i, None, 0), s, 1.5e9, 0.1))
    rows = TableRows.from_changes(changes, image)
    check(rows)
    # slices (as the Kafka sink hands them), nulls among them
    for start, length in ((0, 2), (1, 3), (5, 20), (len(changes) - 2, 2)):
        check(TableRows(rows.db, rows.table, rows.key, rows.data.slice(start, length)))


def test_keyless_and_composite_keys() -> None:
    image = pa.struct([("a", pa.int32()), ("b", pa.string()), ("v", pa.int64())])
    rows = [{"a": 1, "b": "x", "v": 1}, {"a": 2, "b": None, "v": 2}]

    def run(key: dict, op: str, before: dict | None, after: dict | None, i: int) -> RowChange:
        return RowChange("p", "db", "t", op, key, before, after, Position("f", i, "0-1-1", i), None, 1.0, 2.0)

    composite = [run({"a": 1, "b": "x"}, "insert", None, rows[0], 0),
                 run({"a": 2, "b": None}, "update", rows[0], rows[1], 1),
                 run({"a": 2, "b": None}, "delete", rows[1], None, 2)]
    check(TableRows.from_changes(composite, image))
    for one in composite:  # runs of one kind of change: the key from the after image, or the before's alone
        check(TableRows.from_changes([one, one], image))
    keyless = [run({}, "insert", None, rows[0], 0), run({}, "delete", rows[0], None, 1)]
    built = TableRows.from_changes(keyless, image)
    assert built.key == ()
    check(built)


def test_a_key_column_the_images_lack_is_null() -> None:
    image = pa.struct([("a", pa.int32())])
    changes = [RowChange("p", "db", "t", "insert", {"id": None}, None, {"a": i}, Position("f", i, "0-1-1", i), None,
                         1.0, 2.0) for i in range(3)]
    built = TableRows.from_changes(changes, image)
    check(TableRows(built.db, built.table, ("id",), built.data))


def test_a_run_with_absent_columns_is_left_to_the_per_row_path() -> None:
    image = pa.struct([("id", pa.int64())])
    rows = TableRows.from_changes([change("insert", None, {"id": 1}, 4)], image)
    absent = pa.array([{"after": ["x"]}], pa.struct([("after", pa.list_(pa.string()))]))
    data = rows.data.append_column("absent", absent)
    assert messages(TableRows(rows.db, rows.table, rows.key, data), "p") is None
