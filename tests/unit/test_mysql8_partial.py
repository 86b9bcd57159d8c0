"""MySQL 8 PARTIAL_UPDATE_ROWS_EVENT (binlog_row_value_options=PARTIAL_JSON): the JSON diffs of the after image
(REPLACE/INSERT/REMOVE at a path) applied to the before value give the full after value. Events come from the test
writer (MySQL's layout: sql/rpl_record.cc pack_row, sql/json_diff.cc), are read by our stream and by stock
python-mysql-replication (which returns only the first diff of a column, unapplied: its diffs are compared as
diffs); the expected after values are written by hand from MySQL's JSON_SET/JSON_INSERT/JSON_REMOVE semantics."""

from __future__ import annotations

import json
from typing import Any

import pytest

from dbus_ray.errors import DecodeError
from dbus_ray.mysql import events as et
from dbus_ray.mysql import json_diff as jd
from dbus_ray.mysql.decoder import Layout
from dbus_ray.mysql.offset import BinlogOffset
from dbus_ray.mysql.partial import read_partial_rows
from dbus_ray.mysql.values import JSON, LONG, VARCHAR, ColumnDef
from tests.support import mysql8_binlog as w
from tests.support.mysql8_stream import SERVER_UUID, open_stream, read_all, stock_events
from tests.unit.test_mysql8_json import agree

COLS = [w.col_long("id"), w.col_json("doc"), w.col_varchar("name", 160), w.col_json("meta")]
TABLE_ID = 77
DOC = {"a": 1, "b": [1, 2, 3], "c": {"d": "x"}}
META = {"v": 1}
DOC_DIFFS = [
    (w.REPLACE, "$.a", 2),
    (w.INSERT, "$.b[1]", "new"),
    (w.REMOVE, "$.c.d", None),
    (w.INSERT, "$.e", True),
    (w.INSERT, '$."key with space"', None),
    (w.REPLACE, "$.b[last]", 9.5),
]
DOC_AFTER = '{"a": 2, "b": [1, "new", 2, 9.5], "c": {}, "e": true, "key with space": null}'


def diff_bytes(diffs: list[tuple[int, str, Any]]) -> list[bytes]:
    return [w.json_diff(op, path, None if op == w.REMOVE else w.json_binary(value)) for op, path, value in diffs]


def full(values: list[Any]) -> list[Any]:
    return [v if i not in (1, 3) or v is None else w.json_binary(v) for i, v in enumerate(values)]


def partial_event_body() -> bytes:
    rows = b""
    # row 1: diffs on doc, name changed in full, meta unchanged (full value)
    rows += w.row_image(COLS, full([1, DOC, "one", META]))
    rows += w.partial_after_image(COLS, full([1, None, "uno", META]), {1: diff_bytes(DOC_DIFFS)})
    # row 2: no diff at all (value_options 0, no partial bits): a full after image
    rows += w.row_image(COLS, full([2, [1], "two", None]))
    rows += w.partial_after_image(COLS, full([2, [1, 2], "two", None]), {})
    # row 3: a diff on the second JSON column only
    rows += w.row_image(COLS, full([3, {"k": "v"}, "three", {"n": [True]}]))
    rows += w.partial_after_image(COLS, full([3, {"k": "v"}, "three", None]),
                                  {3: diff_bytes([(w.INSERT, "$.n[5]", False), (w.REPLACE, "$.n[0]", None)])})
    return w.rows_body(TABLE_ID, len(COLS), rows, bitmap2=True)


EXPECTED = [
    ({"id": 1, "doc": '{"a": 1, "b": [1, 2, 3], "c": {"d": "x"}}', "name": "one", "meta": '{"v": 1}'},
     {"id": 1, "doc": DOC_AFTER, "name": "uno", "meta": '{"v": 1}'}),
    ({"id": 2, "doc": "[1]", "name": "two", "meta": None}, {"id": 2, "doc": "[1, 2]", "name": "two", "meta": None}),
    ({"id": 3, "doc": '{"k": "v"}', "name": "three", "meta": '{"n": [true]}'},
     {"id": 3, "doc": '{"k": "v"}', "name": "three", "meta": '{"n": [null, false]}'}),
]


def binlog() -> bytes:
    f = w.BinlogFile()
    f.add(w.GTID_LOG_EVENT, w.gtid_body(SERVER_UUID, 1))
    f.add(w.QUERY_EVENT, w.query_body("BEGIN"))
    f.add(w.TABLE_MAP_EVENT, w.table_map_body(TABLE_ID, "shop", "docs", COLS, primary_key=(0,)))
    f.add(w.PARTIAL_UPDATE_ROWS_EVENT, partial_event_body())
    f.add(w.XID_EVENT, w.xid_body(5))
    return f.bytes()


def test_partial_update_is_decoded_not_refused() -> None:
    assert et.EVENT_TYPES[39].kind == et.DECODED and et.ROWS_OP[39] == "update"


def test_diffs_applied_give_the_full_after_values(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = read_all(open_stream(monkeypatch, {"binlog.000001": binlog()}, BinlogOffset("binlog.000001", 4)))
    assert [(r["op"], r["before"], r["after"]) for r in rows] == [("update", b, a) for b, a in EXPECTED]


def test_stock_reads_the_same_event(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stock agrees on every full value and on the first diff of each partial column (all it reads of one)."""
    events = [e for e in stock_events(binlog()) if type(e).__name__ == "PartialUpdateRowsEvent"]
    assert len(events) == 1
    stock_rows = events[0].rows
    assert len(stock_rows) == len(EXPECTED)
    for (before, after), srow in zip(EXPECTED, stock_rows):
        for ours, stock in ((before, srow["before_values"]), (after, srow["after_values"])):
            for name in ("id", "name"):
                assert ours[name] == stock[name]
            for name in ("doc", "meta"):
                value = stock[name]
                if type(value).__name__ == "JsonDiff":  # stock: the first diff, not applied
                    first = (DOC_DIFFS if name == "doc" else [(w.INSERT, "$.n[5]", False)])[0]
                    assert (value.op.value, value.path.decode()) == first[:2]
                    assert value.value == first[2]
                elif ours[name] is None:
                    assert value is None
                else:
                    agree(json.loads(ours[name]), value, name)


def test_json_paths_and_operations() -> None:
    assert jd.parse_path('$.a."b c"[2][last][last-1]') == ["a", "b c", 2, ("last", 0), ("last", 1)]
    assert jd.apply_vector("[1, 2]", b"".join(diff_bytes([(w.INSERT, "$[9]", 3)]))) == "[1, 2, 3]"  # appends
    assert jd.apply_vector('{"bb": 1}', b"".join(diff_bytes([(w.INSERT, "$.a", 1.5)]))) == '{"a": 1.5, "bb": 1}'
    assert jd.apply_vector("[1, 2, 3]", b"".join(diff_bytes([(w.REMOVE, "$[last-1]", None)]))) == "[1, 3]"
    with pytest.raises(ValueError, match=r"JSON diff path \$\.x\.y is not in the before value"):
        jd.apply_vector('{"a": 1}', b"".join(diff_bytes([(w.REPLACE, "$.x.y", 1)])))
    with pytest.raises(ValueError, match="the member exists"):
        jd.apply_vector('{"a": 1}', b"".join(diff_bytes([(w.INSERT, "$.a", 1)])))


def test_a_diff_without_a_before_value_is_refused() -> None:
    """binlog_row_image=MINIMAL: the before image lacks the JSON column, so the diff cannot be applied."""
    cols = [ColumnDef("id", LONG), ColumnDef("doc", JSON, length_size=4), ColumnDef("n", VARCHAR, max_length=40)]
    layout = Layout("shop", "docs", cols, ("id",))
    tcols = [w.col_long("id"), w.col_json("doc"), w.col_varchar("n", 40)]
    before = w.row_image(tcols, [1, None, None], [True, False, False])
    after = w.partial_after_image(tcols, [1, None, "x"], {1: diff_bytes([(w.REPLACE, "$.a", 1)])})
    with pytest.raises(DecodeError, match="^update rows event of shop.docs: partial JSON update of column doc "
                                          "without a before value"):
        read_partial_rows(layout, before + after, b"\x01", b"\x07", 0, len(before + after))


# ------------------------------------------------------------------------------------------ property

import copy  # noqa: E402
import re  # noqa: E402
from datetime import timedelta  # noqa: E402

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from dbus_ray.mysql.json_binary import to_text  # noqa: E402
from tests.unit.test_mysql8_json import DOCS  # noqa: E402

PROPERTY = settings(max_examples=100, deadline=timedelta(seconds=2), derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])
CONTAINERS = st.one_of(st.lists(DOCS, min_size=1, max_size=5), st.dictionaries(st.text(max_size=6), DOCS, min_size=1,
                                                                                 max_size=5))


def path_text(legs: list[Any]) -> str:
    out = "$"
    for leg in legs:
        if isinstance(leg, int):
            out += f"[{leg}]"
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", leg):
            out += "." + leg
        else:
            out += "." + json.dumps(leg, ensure_ascii=False)
    return out


@st.composite
def edits(draw: st.DrawFn) -> tuple[Any, list[tuple[int, list[Any], Any]], Any]:
    """(document, diffs as (op, path legs, value), the document after them), the after document computed here
    with Python lists and dicts as JSON_REPLACE / JSON_INSERT / JSON_ARRAY_INSERT / JSON_REMOVE define them."""
    doc = draw(CONTAINERS)
    after = copy.deepcopy(doc)
    diffs = []
    for _ in range(draw(st.integers(1, 4))):
        legs: list[Any] = []
        node = after
        while isinstance(node, (dict, list)) and node and draw(st.booleans()):
            leg = draw(st.sampled_from(sorted(node))) if isinstance(node, dict) else draw(
                st.integers(0, len(node) - 1))
            if not isinstance(node[leg], (dict, list)):
                break
            legs.append(leg)
            node = node[leg]
        op = draw(st.sampled_from([w.REPLACE, w.INSERT, w.REMOVE] if node else [w.INSERT]))
        value = draw(DOCS)
        if op == w.INSERT:
            if isinstance(node, dict):
                taken = set(node)
                key = draw(st.text(max_size=6).filter(lambda k, taken=taken: k not in taken))
                node[key] = copy.deepcopy(value)
                legs.append(key)
            else:
                index = draw(st.integers(0, len(node) + 2))
                node.insert(min(index, len(node)), copy.deepcopy(value))
                legs.append(index)
        else:
            leg = draw(st.sampled_from(sorted(node))) if isinstance(node, dict) else draw(st.integers(0, len(node) - 1))
            legs.append(leg)
            if op == w.REPLACE:
                node[leg] = copy.deepcopy(value)
            else:
                del node[leg]
        diffs.append((op, legs, None if op == w.REMOVE else value))
    return doc, diffs, after


@PROPERTY
@given(edits())
def test_applied_diffs_equal_the_edited_document(case: tuple[Any, list[tuple[int, list[Any], Any]], Any]) -> None:
    doc, diffs, after = case
    vector = b"".join(w.json_diff(op, path_text(legs), None if value is None and op == w.REMOVE
                                  else w.json_binary(value)) for op, legs, value in diffs)
    assert jd.apply_vector(to_text(w.json_binary(doc)), vector) == to_text(w.json_binary(after))
