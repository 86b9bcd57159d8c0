"""Expressions (`filter.expr`, `route.expr`) are Python syntax restricted to: comparisons (`== != < <= > >=`,
chained), `in` / `not in` a list of literals, `is None` / `is not None`, `and` / `or` / `not`, literals (strings,
numbers, `True`, `False`, `None`), the names `op`, `db`, `table` and the other meta columns (`file`, `offset`,
`gtid`, `index`, `txid`, `ts`, `read_ts`), and `before.X` / `after.X` for column X of an image (`before` /
`after` alone is the whole image, for `after is None`). They are parsed once, at config time, and evaluated
on whole Arrow columns. A comparison with a missing image, a missing column or a NULL value is unknown, and
rows whose result is unknown are dropped (as in SQL's WHERE).
"""

from __future__ import annotations

import ast
import operator as pyop
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from dbus_ray.errors import DbusError
from dbus_ray.model import META_COLUMNS
from dbus_ray.validation import Invalid


class ExprError(ValueError):
    """An expression that is not allowed or does not parse; str() is the one-line reason."""


@dataclass(frozen=True, slots=True)
class Const:
    value: Any


Value = Any  # pa.Array | Const
Evaluator = Callable[[pa.RecordBatch, str, str], Value]

_CMP = {
    ast.Eq: ("equal", pyop.eq), ast.NotEq: ("not_equal", pyop.ne), ast.Lt: ("less", pyop.lt),
    ast.LtE: ("less_equal", pyop.le), ast.Gt: ("greater", pyop.gt), ast.GtE: ("greater_equal", pyop.ge),
}
_CMP_TEXT = {ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.In: "in",
             ast.NotIn: "not in", ast.Is: "is", ast.IsNot: "is not"}
NAMES = ("db", "table", *META_COLUMNS, "before", "after")


class Expr:
    """A compiled expression: `mask(data, db, table)` is a boolean array (no nulls) of the rows it holds for."""

    def __init__(self, text: str) -> None:
        self.text = text
        try:
            tree = ast.parse(text.strip(), mode="eval")
        except SyntaxError as exc:
            raise ExprError(f"bad expression {text!r}: {exc.msg} at column {exc.offset or 0}") from None
        self.evaluate = self._compile(tree.body)

    def __reduce__(self) -> tuple[Any, ...]:  # closures do not pickle: ship the text, recompile
        return (Expr, (self.text,))

    def mask(self, data: pa.RecordBatch, db: str, table: str) -> pa.BooleanArray:
        n = data.num_rows
        result = self.evaluate(data, db, table)
        if isinstance(result, Const):
            return pa.array([result.value is True] * n, pa.bool_()) if n else pa.array([], pa.bool_())
        if not pa.types.is_boolean(result.type):
            raise DbusError(f"expression {self.text!r} is {result.type}, not true/false, for table {db}.{table}")
        return pc.fill_null(result, False)

    # ------------------------------------------------------------------ compiling
    def _fail(self, node: ast.AST, what: str) -> ExprError:
        snippet = ast.get_source_segment(self.text.strip(), node) or type(node).__name__
        return ExprError(f"bad expression {self.text!r}: {what} ({snippet!r}); allowed: comparisons, in, is None, "
                         "and/or/not, literals, op/db/table and before.X/after.X")

    def _compile(self, node: ast.AST) -> Evaluator:
        if isinstance(node, ast.BoolOp):
            parts = [self._compile(v) for v in node.values]
            combine = _and if isinstance(node.op, ast.And) else _or
            return lambda d, db, t: _fold(combine, [p(d, db, t) for p in parts])
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            inner = self._compile(node.operand)
            return lambda d, db, t: _not(inner(d, db, t))
        if isinstance(node, ast.Compare):
            left = self._compile(node.left)
            steps = []
            for i, (op, right_node) in enumerate(zip(node.ops, node.comparators)):
                steps.append(self._comparison(op, left, right_node))
                if i + 1 < len(node.ops):
                    left = self._compile(right_node)
            if len(steps) == 1:
                return steps[0]
            return lambda d, db, t: _fold(_and, [s(d, db, t) for s in steps])
        if isinstance(node, (ast.Constant, ast.UnaryOp)):
            value = self._literal(node)
            return lambda d, db, t: Const(value)
        if isinstance(node, ast.Name):
            return self._name(node)
        if isinstance(node, ast.Attribute):
            return self._column(node)
        raise self._fail(node, f"{type(node).__name__} is not allowed")

    def _literal(self, node: ast.AST) -> Any:
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            value = self._literal(node.operand)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise self._fail(node, "a sign needs a number")
            return -value if isinstance(node.op, ast.USub) else value
        if isinstance(node, ast.Constant) and isinstance(node.value, (str, int, float, bool, bytes, type(None))):
            return node.value
        raise self._fail(node, "expected a literal")

    def _name(self, node: ast.Name) -> Evaluator:
        name = node.id
        if name == "db":
            return lambda d, db, t: Const(db)
        if name == "table":
            return lambda d, db, t: Const(t)
        if name in NAMES:
            return lambda d, db, t: d.column(name)
        if name in ("True", "False", "None"):
            return lambda d, db, t: Const({"True": True, "False": False, "None": None}[name])
        raise self._fail(node, f"unknown name {name!r} (known: {', '.join(NAMES)})")

    def _column(self, node: ast.Attribute) -> Evaluator:
        base = node.value
        if not (isinstance(base, ast.Name) and base.id in ("before", "after")):
            raise self._fail(node, "attributes are only before.COLUMN or after.COLUMN")
        image, column = base.id, node.attr

        def evaluate(d: pa.RecordBatch, db: str, t: str) -> Value:
            struct = d.column(image)
            if not pa.types.is_struct(struct.type) or struct.type.get_field_index(column) < 0:
                return pa.nulls(d.num_rows, pa.null())  # a column the table does not have: unknown
            return pc.struct_field(struct, column)

        return evaluate

    def _comparison(self, op: ast.cmpop, left: Evaluator, right_node: ast.AST) -> Evaluator:
        text = _CMP_TEXT.get(type(op), type(op).__name__)
        if isinstance(op, (ast.In, ast.NotIn)):
            if not isinstance(right_node, (ast.Tuple, ast.List, ast.Set)):
                raise self._fail(right_node, f"'{text}' needs a list of literals")
            values = [self._literal(e) for e in right_node.elts]
            negate = isinstance(op, ast.NotIn)
            return lambda d, db, t: _is_in(left(d, db, t), values, negate, self.text)
        if isinstance(op, (ast.Is, ast.IsNot)):
            if not (isinstance(right_node, ast.Constant) and right_node.value is None):
                raise self._fail(right_node, f"'{text}' is only for None")
            negate = isinstance(op, ast.IsNot)
            return lambda d, db, t: _is_null(left(d, db, t), negate)
        if type(op) not in _CMP:
            raise self._fail(right_node, f"operator {text} is not allowed")
        right = self._compile(right_node)
        kernel, python = _CMP[type(op)]
        return lambda d, db, t: _compare(kernel, python, left(d, db, t), right(d, db, t), self.text)


def _array(value: Value, like: Value) -> Any:
    return pa.scalar(value.value, pa.bool_()) if isinstance(value, Const) else value


def _compare(kernel: str, python: Callable[[Any, Any], bool], a: Value, b: Value, text: str) -> Value:
    if isinstance(a, Const) and isinstance(b, Const):
        if a.value is None or b.value is None:
            return Const(None)
        try:
            return Const(python(a.value, b.value))
        except TypeError:
            raise DbusError(f"expression {text!r}: cannot compare {a.value!r} with {b.value!r}") from None
    for x, y in ((a, b), (b, a)):
        if isinstance(x, Const) and not isinstance(y, Const) and x.value is None:
            return pa.nulls(len(y), pa.bool_())
        if not isinstance(x, Const) and pa.types.is_null(x.type):
            return pa.nulls(len(x), pa.bool_())
    left, right = a.value if isinstance(a, Const) else a, b.value if isinstance(b, Const) else b
    try:
        return getattr(pc, kernel)(left, right)
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid, pa.ArrowTypeError):
        pass
    # a literal of another type than the column (e.g. '12.50' against a DECIMAL): cast the literal, but
    # never a number to text (`after.status > 3` is a mistake, not a string comparison)
    try:
        const, column = (a, b) if isinstance(a, Const) else (b, a)
        if isinstance(const, Const) and not isinstance(const.value, str) and _is_text(column.type):
            raise pa.ArrowInvalid("number against text")
        if isinstance(a, Const):
            left = pa.scalar(a.value).cast(b.type)
        elif isinstance(b, Const):
            right = pa.scalar(b.value).cast(a.type)
        return getattr(pc, kernel)(left, right)
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid, pa.ArrowTypeError):
        types = [v.type if not isinstance(v, Const) else type(v.value).__name__ for v in (a, b)]
        raise DbusError(f"expression {text!r}: cannot compare {types[0]} with {types[1]}") from None


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t)


def _is_in(value: Value, values: list[Any], negate: bool, text: str) -> Value:
    if isinstance(value, Const):
        if value.value is None:
            return Const(None)
        return Const((value.value in values) != negate)
    if pa.types.is_null(value.type):
        return pa.nulls(len(value), pa.bool_())
    try:
        found = pc.is_in(value, value_set=pa.array(values).cast(value.type))
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid, pa.ArrowTypeError):
        raise DbusError(f"expression {text!r}: cannot look up {values!r} in a {value.type} column") from None
    if negate:
        found = pc.invert(found)
    return pc.if_else(pc.is_valid(value), found, pa.scalar(None, pa.bool_()))


def _is_null(value: Value, negate: bool) -> Value:
    if isinstance(value, Const):
        return Const((value.value is None) != negate)
    return pc.is_valid(value) if negate else pc.is_null(value)


def _not(value: Value) -> Value:
    if isinstance(value, Const):
        return Const(None if value.value is None else not value.value)
    return pc.invert(value)


def _and(a: Value, b: Value) -> Value:
    if isinstance(a, Const) and isinstance(b, Const):
        if a.value is False or b.value is False:
            return Const(False)
        return Const(None if a.value is None or b.value is None else True)
    for x, y in ((a, b), (b, a)):
        if isinstance(x, Const) and x.value is True:
            return y
        if isinstance(x, Const) and x.value is False:
            return Const(False)
    return pc.and_kleene(_array(a, b), _array(b, a))


def _or(a: Value, b: Value) -> Value:
    if isinstance(a, Const) and isinstance(b, Const):
        if a.value is True or b.value is True:
            return Const(True)
        return Const(None if a.value is None or b.value is None else False)
    for x, y in ((a, b), (b, a)):
        if isinstance(x, Const) and x.value is True:
            return Const(True)
        if isinstance(x, Const) and x.value is False:
            return y
    return pc.or_kleene(_array(a, b), _array(b, a))


def _fold(combine: Callable[[Value, Value], Value], values: list[Value]) -> Value:
    result = values[0]
    for v in values[1:]:
        result = combine(result, v)
    return result


def compile_expr(text: str, key: str = "expr") -> Expr:
    """An `Expr`, or `Invalid(key, reason)` for the config loader."""
    if not isinstance(text, str) or not text.strip():
        raise Invalid(key, "must not be empty")
    try:
        return Expr(text)
    except ExprError as exc:
        raise Invalid(key, str(exc)) from None
