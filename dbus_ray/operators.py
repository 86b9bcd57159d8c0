"""Operators of the filter stage (`filters:` in a pipeline file), applied by the router in config order to
each table run of each batch, vectorised with `pyarrow.compute`.

| type | does |
|---|---|
| `select` | keeps the tables matching `include` and not `exclude` (`db.table` globs) |
| `filter` | keeps the rows for which `expr` is true (see "Expressions") |
| `regex` | keeps the rows whose `column` matches `pattern` (RE2 syntax, a search); `negate` keeps the others |
| `rename` | renames tables (`tables: {db.old: db.new}`) and columns (`columns: {old: new}`, both images) |
| `drop_columns` | removes `columns` from both images (and from the key) |
| `mask` | replaces `columns` in both images by their sha256 hex (`method: hash`, optional `salt`) or null (`blank`) |
| `route` | sends the rows matching `match` (and `expr`) only to `sinks`; the other rows are left alone |
| `split` | cuts runs at transaction boundaries (`by: txid`) or into runs of at most `rows` rows (`by: rows`) |
| `count` | counts rows by `by` (`db`, `table`, `op`) in the Ray metric `dbus_operator_rows` |

`rename`, `drop_columns` and `mask` act on the tables matching their `match` globs (default `*.*`).

Expressions (`filter.expr`, `route.expr`) are Python syntax restricted to: comparisons (`== != < <= > >=`,
chained), `in` / `not in` a list of literals, `is None` / `is not None`, `and` / `or` / `not`, literals (strings,
numbers, `True`, `False`, `None`), the names `op`, `db`, `table` and the other meta columns (`file`, `offset`,
`gtid`, `index`, `txid`, `ts`, `read_ts`), and `before.X` / `after.X` for column X of an image (`before` /
`after` alone is the whole image, for `after is None`). They are parsed once, at config time, and evaluated
on whole Arrow columns. A comparison with a missing image, a missing column or a NULL value is unknown, and
rows whose result is unknown are dropped (as in SQL's WHERE).

Checkpoints: operators only choose which rows go where; every batch still reaches every sink (possibly with
no rows), so a filtered-out row counts as delivered and acknowledgements keep flowing.
"""

from __future__ import annotations

import ast
import hashlib
import operator as pyop
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import pyarrow as pa
import pyarrow.compute as pc

from dbus_ray.config import FILTERS, Invalid, SelectFilter
from dbus_ray.errors import DbusError
from dbus_ray.model import META_COLUMNS, TableRows
from dbus_ray.routing import TableMatcher, check_pattern

# ============================================================================================ expressions


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


# ============================================================================================ runs


@dataclass(slots=True)
class Run:
    """A table run on its way through the operators, with, per sink name, a mask of the rows `route`
    keeps from that sink (absent: the sink gets every row its `match` selects)."""

    rows: TableRows
    hidden: dict[str, pa.BooleanArray] = field(default_factory=dict)

    @property
    def num_rows(self) -> int:
        return self.rows.data.num_rows

    def take(self, mask: pa.BooleanArray) -> Run | None:
        """The rows where `mask` (no nulls) is true; None when there are none."""
        kept = pc.sum(mask).as_py() or 0
        if kept == 0:
            return None
        if kept == self.num_rows:
            return self
        r = self.rows
        data = r.data.filter(mask)
        return Run(TableRows(r.db, r.table, r.key, data), {s: m.filter(mask) for s, m in self.hidden.items()})

    def slice(self, offset: int, length: int) -> Run:
        r = self.rows
        return Run(TableRows(r.db, r.table, r.key, r.data.slice(offset, length)),
                   {s: m.slice(offset, length) for s, m in self.hidden.items()})

    def replace(self, db: str, table: str, key: tuple[str, ...], data: pa.RecordBatch) -> Run:
        return Run(TableRows(db, table, key, data), self.hidden)

    def for_sink(self, sink: str) -> TableRows | None:
        """The rows `sink` receives (None: none)."""
        hidden = self.hidden.get(sink)
        if hidden is None:
            return self.rows
        kept = self.take(pc.invert(hidden))
        return None if kept is None else kept.rows


def map_images(data: pa.RecordBatch, fn: Callable[[pa.StructArray], pa.StructArray]) -> pa.RecordBatch:
    """`data` with `fn` applied to its `before` and `after` struct columns."""
    arrays = list(data.columns)
    fields = list(data.schema)
    for name in ("before", "after"):
        i = data.schema.get_field_index(name)
        column = data.column(i)
        if not pa.types.is_struct(column.type):
            continue
        arrays[i] = fn(column)
        fields[i] = pa.field(name, arrays[i].type)
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields, metadata=data.schema.metadata))


def rebuild_struct(column: pa.StructArray, children: list[tuple[pa.Field, pa.Array]]) -> pa.StructArray:
    """A struct column with the same nulls as `column` and these children."""
    if not children:  # every column dropped: an empty image (rare: per row is fine)
        return pa.array([None if null else {} for null in column.is_null().to_pylist()], pa.struct([]))
    mask = column.is_null() if column.null_count else None
    return pa.StructArray.from_arrays([a for _, a in children], fields=[f for f, _ in children], mask=mask)


# ============================================================================================ operators

OPERATORS: dict[str, type[Operator]] = {}


def operator(type_name: str) -> Callable[[type[Operator]], type[Operator]]:
    def register(cls: type[Operator]) -> type[Operator]:
        cls.type_name = type_name
        OPERATORS[type_name] = cls
        FILTERS[type_name] = cls.Options
        return cls

    return register


class Operator:
    """One entry of `filters:`. `apply` maps one run to the runs that continue (none, itself, or others)."""

    type_name: ClassVar[str]
    Options: ClassVar[type]

    def __init__(self, options: Any, pipeline: str = "", index: int = 0) -> None:
        self.options = options
        self.pipeline = pipeline
        self.index = index

    def apply(self, run: Run) -> list[Run]:
        raise NotImplementedError


def _check_patterns(patterns: list[str], key: str) -> None:
    for i, pattern in enumerate(patterns):
        reason = check_pattern(pattern)
        if reason:
            raise Invalid(f"{key}[{i}]", reason)


def _check_columns(columns: list[str], key: str = "columns") -> None:
    if not columns:
        raise Invalid(key, "must name at least one column")
    for i, c in enumerate(columns):
        if not c:
            raise Invalid(f"{key}[{i}]", "must not be empty")


@operator("select")
class Select(Operator):
    Options = SelectFilter

    def __init__(self, options: SelectFilter, pipeline: str = "", index: int = 0) -> None:
        super().__init__(options, pipeline, index)
        self.matcher = TableMatcher(options.include, options.exclude)

    def apply(self, run: Run) -> list[Run]:
        return [run] if self.matcher(run.rows.db, run.rows.table) else []


@dataclass
class FilterOptions:
    """Keep the rows for which `expr` holds."""

    expr: str

    def __post_init__(self) -> None:
        self.compiled = compile_expr(self.expr)


@operator("filter")
class Filter(Operator):
    Options = FilterOptions

    def apply(self, run: Run) -> list[Run]:
        kept = run.take(self.options.compiled.mask(run.rows.data, run.rows.db, run.rows.table))
        return [kept] if kept is not None else []


@dataclass
class RegexOptions:
    """Keep the rows whose `column` (`after.name`, `before.name`, `op`, `db`, `table`, a meta column) matches
    `pattern` (RE2, searched anywhere; anchor with ^ $); `negate: true` keeps the rows that do not match."""

    column: str
    pattern: str
    negate: bool = False
    ignore_case: bool = False

    def __post_init__(self) -> None:
        try:
            node = ast.parse(self.column.strip(), mode="eval").body
        except SyntaxError:
            node = None
        if not isinstance(node, (ast.Name, ast.Attribute)):
            raise Invalid("column", f"bad column {self.column!r}: expected after.NAME, before.NAME or a meta column")
        try:
            self.value = Expr(self.column)
        except ExprError as exc:
            raise Invalid("column", str(exc)) from None
        try:
            pc.match_substring_regex(pa.array([""], pa.string()), self.pattern, ignore_case=self.ignore_case)
        except pa.ArrowInvalid as exc:
            raise Invalid("pattern", f"bad pattern {self.pattern!r}: {str(exc).splitlines()[0]}") from None


@operator("regex")
class Regex(Operator):
    Options = RegexOptions

    def apply(self, run: Run) -> list[Run]:
        o: RegexOptions = self.options
        r = run.rows
        value = o.value.evaluate(r.data, r.db, r.table)
        n = r.num_rows
        if isinstance(value, Const):
            hit = value.value is not None and pc.match_substring_regex(
                pa.array([str(value.value)]), o.pattern, ignore_case=o.ignore_case)[0].as_py()
            if hit != o.negate:
                return [run]
            return []
        if pa.types.is_null(value.type):
            matched = pa.array([False] * n, pa.bool_())
        else:
            if not (pa.types.is_string(value.type) or pa.types.is_large_string(value.type)):
                value = pc.cast(value, pa.string())
            matched = pc.fill_null(pc.match_substring_regex(value, o.pattern, ignore_case=o.ignore_case), False)
        kept = run.take(pc.invert(matched) if o.negate else matched)
        return [kept] if kept is not None else []


@dataclass
class RenameOptions:
    """Rename tables (`tables: {db.old: db.new}`, exact names) and, in the tables `match` selects (by their
    names before this rename), columns in both images and the key (`columns: {old: new}`)."""

    tables: dict[str, str] = field(default_factory=dict)
    columns: dict[str, str] = field(default_factory=dict)
    match: list[str] = field(default_factory=lambda: ["*.*"])

    def __post_init__(self) -> None:
        if not self.tables and not self.columns:
            raise Invalid("", "rename needs tables or columns")
        for old, new in self.tables.items():
            for name in (old, new):
                if name.count(".") != 1 or name.startswith(".") or name.endswith(".") or any(c in name for c in "*?["):
                    raise Invalid(f"tables.{old}", f"bad table name {name!r}: expected db.table (no globs)")
        for old, new in self.columns.items():
            if not new:
                raise Invalid(f"columns.{old}", "must not be empty")
        if len(set(self.columns.values())) != len(self.columns):
            raise Invalid("columns", "two columns renamed to the same name")
        _check_patterns(self.match, "match")


@operator("rename")
class Rename(Operator):
    Options = RenameOptions

    def __init__(self, options: RenameOptions, pipeline: str = "", index: int = 0) -> None:
        super().__init__(options, pipeline, index)
        self.matcher = TableMatcher(options.match)
        self.tables = {tuple(k.split(".")): tuple(v.split(".")) for k, v in options.tables.items()}

    def apply(self, run: Run) -> list[Run]:
        r = run.rows
        data, key = r.data, r.key
        columns = self.options.columns
        if columns and self.matcher(r.db, r.table):

            def rename(column: pa.StructArray) -> pa.StructArray:
                t = column.type
                children = [(t.field(i).with_name(columns.get(t.field(i).name, t.field(i).name)), column.field(i))
                            for i in range(t.num_fields)]
                return rebuild_struct(column, children)

            data = map_images(data, rename)
            key = tuple(columns.get(k, k) for k in key)
        db, table = self.tables.get((r.db, r.table), (r.db, r.table))
        if data is r.data and (db, table) == (r.db, r.table):
            return [run]
        return [run.replace(db, table, key, data)]


@dataclass
class DropColumnsOptions:
    """Remove `columns` from both images (and from the key) of the tables `match` selects."""

    columns: list[str]
    match: list[str] = field(default_factory=lambda: ["*.*"])

    def __post_init__(self) -> None:
        _check_columns(self.columns)
        _check_patterns(self.match, "match")


@operator("drop_columns")
class DropColumns(Operator):
    Options = DropColumnsOptions

    def __init__(self, options: DropColumnsOptions, pipeline: str = "", index: int = 0) -> None:
        super().__init__(options, pipeline, index)
        self.matcher = TableMatcher(options.match)
        self.drop = set(options.columns)

    def apply(self, run: Run) -> list[Run]:
        r = run.rows
        if not self.matcher(r.db, r.table):
            return [run]

        def drop(column: pa.StructArray) -> pa.StructArray:
            t = column.type
            return rebuild_struct(column, [(t.field(i), column.field(i)) for i in range(t.num_fields)
                                           if t.field(i).name not in self.drop])

        key = tuple(k for k in r.key if k not in self.drop)
        return [run.replace(r.db, r.table, key, map_images(r.data, drop))]


@dataclass
class MaskOptions:
    """Replace `columns` (both images) of the tables `match` selects: `hash` -> sha256 hex of the value's text
    (of `salt` + the value: its bytes for binary columns, its UTF-8 text otherwise), `blank` -> null."""

    columns: list[str]
    method: Literal["hash", "blank"] = "hash"
    salt: str = ""
    match: list[str] = field(default_factory=lambda: ["*.*"])

    def __post_init__(self) -> None:
        _check_columns(self.columns)
        _check_patterns(self.match, "match")
        if self.salt and self.method != "hash":
            raise Invalid("salt", "is for method hash only")


def sha256_hex(values: pa.Array, salt: bytes = b"") -> pa.Array:
    """sha256 hex of each value (null stays null). Python's hashlib per DISTINCT value: repeated values (the
    common case for masked columns across updates) are hashed once."""
    if not (pa.types.is_binary(values.type) or pa.types.is_string(values.type)
            or pa.types.is_large_string(values.type) or pa.types.is_large_binary(values.type)):
        values = pc.cast(values, pa.string())
    encoded = pc.dictionary_encode(values)
    digests = [None if v is None else hashlib.sha256(salt + (v.encode() if isinstance(v, str) else v)).hexdigest()
               for v in encoded.dictionary.to_pylist()]
    return pc.take(pa.array(digests, pa.string()), encoded.indices)


@operator("mask")
class Mask(Operator):
    Options = MaskOptions

    def __init__(self, options: MaskOptions, pipeline: str = "", index: int = 0) -> None:
        super().__init__(options, pipeline, index)
        self.matcher = TableMatcher(options.match)
        self.columns = set(options.columns)
        self.salt = options.salt.encode()

    def _mask(self, child: pa.Array) -> tuple[pa.DataType, pa.Array]:
        if self.options.method == "blank":
            return child.type, pa.nulls(len(child), child.type)
        return pa.string(), sha256_hex(child, self.salt)

    def apply(self, run: Run) -> list[Run]:
        r = run.rows
        if not self.matcher(r.db, r.table):
            return [run]

        def mask(column: pa.StructArray) -> pa.StructArray:
            t = column.type
            children = []
            for i in range(t.num_fields):
                f, child = t.field(i), column.field(i)
                if f.name in self.columns:
                    typ, child = self._mask(child)
                    f = f.with_type(typ).with_nullable(True)
                children.append((f, child))
            return rebuild_struct(column, children)

        return [run.replace(r.db, r.table, r.key, map_images(r.data, mask))]


@dataclass
class RouteOptions:
    """Send the rows of the tables `match` selects (and, with `expr`, for which it holds) only to `sinks`
    (names of this pipeline's sinks; each still applies its own `match`). Other rows are not affected."""

    sinks: list[str]
    match: list[str] = field(default_factory=lambda: ["*.*"])
    expr: str | None = None

    def __post_init__(self) -> None:
        if not self.sinks:
            raise Invalid("sinks", "must name at least one sink")
        _check_patterns(self.match, "match")
        self.compiled = compile_expr(self.expr) if self.expr is not None else None

    def check_sinks(self, names: list[str]) -> None:
        """Called by the config loader once the sinks are known."""
        for i, name in enumerate(self.sinks):
            if name not in names:
                raise Invalid(f"sinks[{i}]", f"unknown sink {name!r} (sinks: {', '.join(names)})")


@operator("route")
class Route(Operator):
    Options = RouteOptions

    def __init__(self, options: RouteOptions, pipeline: str = "", index: int = 0,
                 sink_names: list[str] | None = None) -> None:
        super().__init__(options, pipeline, index)
        self.matcher = TableMatcher(options.match)
        self.sink_names = sink_names or []

    def apply(self, run: Run) -> list[Run]:
        r = run.rows
        if not self.matcher(r.db, r.table):
            return [run]
        compiled = self.options.compiled
        if compiled is None:
            mask = pa.array([True] * r.num_rows, pa.bool_())
        else:
            mask = compiled.mask(r.data, r.db, r.table)
        hidden = dict(run.hidden)
        for sink in self.sink_names:
            if sink not in self.options.sinks:
                previous = hidden.get(sink)
                hidden[sink] = mask if previous is None else pc.or_(previous, mask)
        return [Run(r, hidden)]


@dataclass
class SplitOptions:
    """Cut runs so no part holds two transactions (`by: txid`) or more than `rows` rows (`by: rows`). A run
    never spans two tables anyway, so "per table" needs no operator."""

    by: Literal["txid", "rows"] = "txid"
    rows: int = 1

    def __post_init__(self) -> None:
        if self.rows < 1:
            raise Invalid("rows", "must be at least 1")
        if self.by == "txid" and self.rows != 1:
            raise Invalid("rows", "is for by: rows only")


@operator("split")
class Split(Operator):
    Options = SplitOptions

    def apply(self, run: Run) -> list[Run]:
        n = run.num_rows
        if self.options.by == "rows":
            size = self.options.rows
            if n <= size:
                return [run]
            return [run.slice(i, min(size, n - i)) for i in range(0, n, size)]
        if n <= 1:
            return [run]
        txid = run.rows.data.column("txid")
        changed = pc.not_equal(txid.slice(1), txid.slice(0, n - 1))
        # a null txid next to a non-null one is a boundary too
        changed = pc.fill_null(pc.or_kleene(changed, pc.not_equal(pc.is_null(txid.slice(1)),
                                                                    pc.is_null(txid.slice(0, n - 1)))), False)
        starts = [0, *(i + 1 for i in pc.indices_nonzero(changed).to_pylist()), n]
        if len(starts) == 2:
            return [run]
        return [run.slice(a, b - a) for a, b in zip(starts, starts[1:])]


@dataclass
class CountOptions:
    """Count the rows that reach this point in the Ray metric `dbus_operator_rows`, tagged by pipeline,
    `name` (default `count<i>`) and the keys in `by` (`db`, `table`, `op`; the others are tagged '')."""

    by: list[Literal["db", "table", "op"]] = field(default_factory=lambda: ["db", "table", "op"])
    name: str = ""

    def __post_init__(self) -> None:
        if len(set(self.by)) != len(self.by):
            raise Invalid("by", "names a key twice")


@operator("count")
class Count(Operator):
    Options = CountOptions
    TAGS = ("pipeline", "operator", "db", "table", "op")

    def __init__(self, options: CountOptions, pipeline: str = "", index: int = 0) -> None:
        super().__init__(options, pipeline, index)
        self.name = options.name or f"count{index}"
        self.counts: dict[tuple[str, str, str], int] = {}
        self._counter: Any = None

    @property
    def counter(self) -> Any:
        if self._counter is None:
            from ray.util import metrics

            self._counter = metrics.Counter("dbus_operator_rows", "Rows counted by a count operator", self.TAGS)
            self._counter.set_default_tags({"pipeline": self.pipeline, "operator": self.name})
        return self._counter

    def apply(self, run: Run) -> list[Run]:
        r = run.rows
        by = self.options.by
        db = r.db if "db" in by else ""
        table = r.table if "table" in by else ""
        if "op" in by:
            counted = pc.value_counts(r.data.column("op"))
            pairs = [(v["values"], v["counts"]) for v in counted.to_pylist()]
        else:
            pairs = [("", r.num_rows)]
        for op, n in pairs:
            key = (db, table, op or "")
            self.counts[key] = self.counts.get(key, 0) + n
            self.counter.inc(n, {"db": db, "table": table, "op": op or ""})
        return [run]


# ============================================================================================ the stage


def build_operators(filters: list[Any], pipeline: str = "", sink_names: list[str] | None = None) -> list[Operator]:
    """The operators of a config's `filters` list (`FilterConfig`s), in order."""
    ops: list[Operator] = []
    for i, f in enumerate(filters):
        cls = OPERATORS[f.type]
        if cls is Route:
            ops.append(Route(f.options, pipeline, i, sink_names))
        else:
            ops.append(cls(f.options, pipeline, i))
    return ops


def apply_operators(parts: list[TableRows], ops: list[Operator]) -> list[Run]:
    """Every table run through every operator, in order; runs without rows are dropped."""
    runs = [Run(p) for p in parts if p.data.num_rows]
    for op in ops:
        runs = [out for run in runs for out in op.apply(run) if out.num_rows]
    return runs
