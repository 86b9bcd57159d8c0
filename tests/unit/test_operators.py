"""Operators of the filter stage, without Ray: each on a small run, the router's `route()` with them, and
their config errors."""

from __future__ import annotations

import copy
import hashlib
from decimal import Decimal

import pyarrow as pa
import pytest

from dbus_ray.actors.router import build_routes, route
from dbus_ray.config import ConfigError, parse_config
from dbus_ray.model import Position, RowBatch, RowChange, TableRows
from dbus_ray.operators import Expr, apply_operators

IMAGE = pa.struct([("id", pa.int64()), ("status", pa.string()), ("amount", pa.decimal128(10, 2)),
                   ("email", pa.string())])


def orders(rows: list[tuple[str, dict | None, dict | None, str]], db: str = "shop", table: str = "orders"):
    changes = [RowChange("p", db, table, op, {"id": None}, before, after, Position("f", i, None, 0), txid, 1.0, 2.0)
               for i, (op, before, after, txid) in enumerate(rows)]
    return TableRows.from_changes(changes, IMAGE)


def img(id: int, status: str, amount: str, email: str = "a@x") -> dict:
    return {"id": id, "status": status, "amount": Decimal(amount), "email": email}


SAMPLE = [
    ("insert", None, img(1, "NEW", "50.00"), "t1"),
    ("update", img(1, "NEW", "50.00"), img(1, "PAID", "150.00"), "t2"),
    ("update", img(2, "NEW", "99.00"), img(2, "NEW", "101.00"), "t2"),
    ("delete", img(3, "PAID", "5.00"), None, "t3"),
    ("insert", None, img(4, "PAID", "700.00", "b@y"), "t3"),
]

BASE = {"name": "p", "source": {"type": "mock"},
        "sinks": [{"name": "a", "type": "null"}, {"name": "b", "type": "null"}]}


def cfg(filters: list[dict], sinks: list[dict] | None = None):
    raw = copy.deepcopy(BASE)
    raw["filters"] = filters
    if sinks is not None:
        raw["sinks"] = sinks
    return parse_config(raw, "x.yaml", {})


def run(filters: list[dict], parts: list[TableRows] | None = None) -> list[RowBatch]:
    ops, sinks = build_routes(cfg(filters))
    return route(RowBatch("p", 7, parts if parts is not None else [orders(SAMPLE)], {"next": 9}, 1.0), ops, sinks)


def offsets(batch: RowBatch) -> list[int]:
    return [c.position.offset for c in batch.changes()]


# ------------------------------------------------------------------ expressions
@pytest.mark.parametrize("expr, expected", [
    ("after.status == 'PAID'", [1, 4]),
    ("op in ('insert', 'update')", [0, 1, 2, 4]),
    ("op not in ['insert']", [1, 2, 3]),
    ("after.amount > 100 and before.amount <= 100", [1, 2]),
    ("after.amount > 100 or op == 'delete'", [1, 2, 3, 4]),
    ("not after.status == 'PAID'", [0, 2]),  # the delete has no after: unknown, dropped
    ("after is None", [3]),
    ("before is not None and before.status != after.status", [1]),
    ("100 < after.amount <= 200", [1, 2]),
    ("table == 'orders' and db == 'shop'", [0, 1, 2, 3, 4]),
    ("table == 'other'", []),
    ("after.nope == 1", []),  # a column the table does not have: unknown
    ("offset >= 3 and txid == 't3'", [3, 4]),
    ("after.id == -1 or after.amount == '700.00'", [4]),  # a string literal cast to the column's type
])
def test_filter_expressions(expr: str, expected: list[int]) -> None:
    a, b = run([{"type": "filter", "expr": expr}])
    assert offsets(a) == expected == offsets(b)
    assert a.seq == 7 and a.checkpoint == {"next": 9}


@pytest.mark.parametrize("expr, reason", [
    ("after.status ==", "bad expression 'after.status ==': invalid syntax at column"),
    ("__import__('os').system('x')", "Call is not allowed"),
    ("after.amount + 1 > 2", "BinOp is not allowed"),
    ("secret == 1", "unknown name 'secret'"),
    ("after.a.b == 1", "attributes are only before.COLUMN or after.COLUMN"),
    ("op in after.x", "'in' needs a list of literals"),
    ("after.x is 1", "'is' is only for None"),
    ("lambda: 1", "Lambda is not allowed"),
])
def test_bad_expression_is_one_config_line(expr: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        cfg([{"type": "select"}, {"type": "filter", "expr": expr}])
    message = str(info.value)
    assert message.startswith("x.yaml: filters[1].expr: "), message
    assert reason in message and "\n" not in message


def test_unknown_operator_and_bad_options() -> None:
    with pytest.raises(ConfigError, match=r"^x.yaml: filters\[0\].type: unknown filter type 'grep' \(known: count, "
                                          r"drop_columns, filter, mask, regex, rename, route, select, split\)$"):
        cfg([{"type": "grep"}])
    for filters, message in [
        ([{"type": "regex", "column": "after.x", "pattern": "("}], "filters[0].pattern: bad pattern '('"),
        ([{"type": "regex", "column": "after.x +", "pattern": "a"}], "filters[0].column: bad column"),
        ([{"type": "route", "sinks": ["zz"]}], "filters[0].sinks[0]: unknown sink 'zz' (sinks: a, b)"),
        ([{"type": "rename", "tables": {"shop.*": "x.y"}}], "filters[0].tables.shop.*: bad table name"),
        ([{"type": "mask", "columns": []}], "filters[0].columns: must name at least one column"),
        ([{"type": "split", "by": "table"}], "filters[0].by: expected one of 'txid', 'rows'"),
        ([{"type": "count", "by": ["colour"]}], "filters[0].by[0]: expected one of 'db', 'table', 'op'"),
        ([{"type": "filter"}], "filters[0].expr: field required"),
    ]:
        with pytest.raises(ConfigError) as info:
            cfg(filters)
        assert str(info.value).startswith(f"x.yaml: {message}"), str(info.value)


def test_expression_pickles_as_text() -> None:
    import pickle

    expr = pickle.loads(pickle.dumps(Expr("after.status == 'PAID'")))
    assert expr.mask(orders(SAMPLE).data, "shop", "orders").to_pylist() == [False, True, False, False, True]


def test_type_mismatch_is_a_clear_runtime_error() -> None:
    from dbus_ray.errors import DbusError

    with pytest.raises(DbusError, match=r"cannot compare string with"):
        run([{"type": "filter", "expr": "after.status > 3"}])


# ------------------------------------------------------------------ operators
def test_select_keeps_tables_and_empty_batches_still_reach_every_sink() -> None:
    a, b = run([{"type": "select", "include": ["other.*"]}])
    assert a.parts == [] and b.parts == []
    assert (a.seq, a.checkpoint) == (b.seq, b.checkpoint) == (7, {"next": 9})


def test_regex() -> None:
    a, _ = run([{"type": "regex", "column": "after.email", "pattern": "@y$"}])
    assert offsets(a) == [4]
    a, _ = run([{"type": "regex", "column": "after.status", "pattern": "^p", "ignore_case": True, "negate": True}])
    assert offsets(a) == [0, 2, 3]
    a, _ = run([{"type": "regex", "column": "after.amount", "pattern": r"^\d{3}\."}])  # non-strings as text
    assert offsets(a) == [1, 2, 4]
    a, _ = run([{"type": "regex", "column": "table", "pattern": "^ord"}])
    assert offsets(a) == [0, 1, 2, 3, 4]


def test_rename_tables_and_columns() -> None:
    a, _ = run([{"type": "rename", "tables": {"shop.orders": "sales.orders_v2"}, "columns": {"status": "state"}}])
    part = a.parts[0]
    assert part.name == "sales.orders_v2"
    rows = [c.to_dict() for c in a.changes()]
    assert rows[1]["after"]["state"] == "PAID" and "status" not in rows[1]["after"]
    assert rows[1]["before"]["state"] == "NEW"
    assert rows[0]["before"] is None and rows[3]["after"] is None  # image nulls kept
    # columns only in the tables `match` selects
    a, _ = run([{"type": "rename", "columns": {"status": "state"}, "match": ["other.*"]}])
    assert "status" in next(a.changes()).after


def test_rename_key_column() -> None:
    a, _ = run([{"type": "rename", "columns": {"id": "order_id"}}])
    assert a.parts[0].key == ("order_id",)
    assert [c.key for c in a.changes()][:2] == [{"order_id": 1}, {"order_id": 1}]


def test_rename_onto_a_column_the_table_has_is_refused() -> None:
    """Two columns of one name: a sink would keep one of the two values; one line instead."""
    from dbus_ray.errors import DbusError

    with pytest.raises(DbusError, match=r"^rename: table shop.orders would have two columns named status "):
        run([{"type": "rename", "columns": {"email": "status"}}])
    a, _ = run([{"type": "rename", "columns": {"email": "status", "status": "email"}}])  # a swap is fine
    assert next(c for c in a.changes() if c.after is not None).after["email"] in ("NEW", "PAID")


def test_drop_columns() -> None:
    a, _ = run([{"type": "drop_columns", "columns": ["email", "amount"]}])
    rows = list(a.changes())
    assert rows[1].after == {"id": 1, "status": "PAID"} and rows[1].before == {"id": 1, "status": "NEW"}
    assert rows[0].before is None


def test_mask_hash_and_blank() -> None:
    a, _ = run([{"type": "mask", "columns": ["email"], "salt": "s"}])
    rows = list(a.changes())
    want = hashlib.sha256(b"sa@x").hexdigest()
    assert rows[0].after["email"] == want and rows[1].before["email"] == want
    assert rows[4].after["email"] == hashlib.sha256(b"sb@y").hexdigest()
    assert rows[0].before is None
    a, _ = run([{"type": "mask", "columns": ["amount"], "method": "blank"}])
    rows = list(a.changes())
    assert rows[1].after["amount"] is None and rows[1].after["status"] == "PAID"
    assert a.parts[0].data.schema.field("after").type.field("amount").type == pa.decimal128(10, 2)


def test_route_sends_matching_rows_only_to_named_sinks_in_order() -> None:
    a, b = run([{"type": "route", "sinks": ["b"], "expr": "after.status == 'PAID'"}])
    assert offsets(a) == [0, 2, 3]
    assert offsets(b) == [0, 1, 2, 3, 4]  # b keeps every row, in order
    # two routes: a row matching both goes to the sinks both name
    a, b = run([{"type": "route", "sinks": ["b"], "expr": "op == 'delete'"},
                {"type": "route", "sinks": ["a"], "expr": "op == 'insert'"}])
    assert offsets(a) == [0, 1, 2, 4] and offsets(b) == [1, 2, 3]
    # by table: a run routed elsewhere; a filter after a route keeps the masks aligned
    a, b = run([{"type": "route", "sinks": ["a"], "match": ["shop.orders"]},
                {"type": "filter", "expr": "op != 'update'"}])
    assert offsets(a) == [0, 3, 4] and offsets(b) == []


def test_route_honours_the_sinks_match() -> None:
    raw_sinks = [{"name": "a", "type": "null", "match": ["shop.other"]}, {"name": "b", "type": "null"}]
    ops, sinks = build_routes(cfg([{"type": "route", "sinks": ["a"]}], raw_sinks))
    a, b = route(RowBatch("p", 1, [orders(SAMPLE)], None, 0.0), ops, sinks)
    assert a.parts == [] and b.parts == []


def test_split_by_txid_and_rows() -> None:
    a, _ = run([{"type": "split"}])
    assert [p.num_rows for p in a.parts] == [1, 2, 2]
    assert [{c.txid for c in p.changes("p")} for p in a.parts] == [{"t1"}, {"t2"}, {"t3"}]
    a, _ = run([{"type": "split", "by": "rows", "rows": 2}])
    assert [p.num_rows for p in a.parts] == [2, 2, 1]
    assert offsets(a) == [0, 1, 2, 3, 4]


def test_count_by_table_and_op() -> None:
    ops, _ = build_routes(cfg([{"type": "count", "by": ["table", "op"]},
                               {"type": "filter", "expr": "op == 'insert'"},
                               {"type": "count", "name": "inserts", "by": ["db"]}]))
    apply_operators([orders(SAMPLE), orders(SAMPLE[:2], table="items")], ops)
    assert ops[0].counts == {("", "orders", "insert"): 2, ("", "orders", "update"): 2, ("", "orders", "delete"): 1,
                             ("", "items", "insert"): 1, ("", "items", "update"): 1}
    assert ops[2].name == "inserts" and ops[2].counts == {("shop", "", ""): 3}


def test_operators_apply_in_config_order() -> None:
    # rename first, then select on the new name; mask after rename uses the new column name
    a, _ = run([{"type": "rename", "tables": {"shop.orders": "shop.sales"}, "columns": {"email": "mail"}},
                {"type": "select", "include": ["shop.sales"]},
                {"type": "mask", "columns": ["mail"], "method": "blank"}])
    assert a.parts[0].name == "shop.sales" and next(a.changes()).after["mail"] is None
    a, _ = run([{"type": "select", "include": ["shop.sales"]},
                {"type": "rename", "tables": {"shop.orders": "shop.sales"}}])
    assert a.parts == []


def test_mock_source_batch_through_every_operator() -> None:
    from dbus_ray.sources.mock import MockOptions, MockSource

    source = MockSource("p", MockOptions(rows=3000, keys=100, tables=3))
    source.open(None)
    batch = source.poll(3000, 1)
    ops, sinks = build_routes(cfg([
        {"type": "filter", "expr": "op in ('insert', 'update') and after.amount > 50000"},
        {"type": "regex", "column": "after.name", "pattern": "^item-"},
        {"type": "mask", "columns": ["name"]},
        {"type": "drop_columns", "columns": ["seq"]},
        {"type": "rename", "tables": {"mock.items_0": "mock.zero"}, "columns": {"amount": "total"}},
        {"type": "route", "sinks": ["a"], "match": ["mock.zero"]},
        {"type": "split", "by": "rows", "rows": 100},
        {"type": "count"},
    ]))
    a, b = route(batch, ops, sinks)
    rows_a = list(a.changes())
    assert rows_a and all(r.op in ("insert", "update") and r.after["total"] > 50000 for r in rows_a)
    assert all(len(r.after["name"]) == 64 and "seq" not in r.after for r in rows_a)
    assert {p.table for p in b.parts} == {"items_1", "items_2"}
    assert all(p.num_rows <= 100 for p in a.parts)
    assert sum(ops[-1].counts.values()) == len(rows_a)
