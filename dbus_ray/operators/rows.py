"""Operators that choose rows: `select` (tables), `filter` (an expression), `regex`, `route` (which sinks get
which rows), `split` (cut runs) and `count` (a metric). See `dbus_ray.operators` for the table."""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc

from dbus_ray.operators.expressions import Const, Expr, ExprError, compile_expr
from dbus_ray.operators.stage import Operator, Run
from dbus_ray.registry import operator
from dbus_ray.routing import TableMatcher
from dbus_ray.validation import Invalid, check_patterns


@dataclass
class SelectOptions:
    """Keep only the tables matching `include` and not matching `exclude` (db.table globs)."""

    include: list[str] = field(default_factory=lambda: ["*.*"])
    exclude: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_patterns(self.include, "include")
        check_patterns(self.exclude, "exclude")


@operator("select")
class Select(Operator):
    Options = SelectOptions

    def setup(self) -> None:
        self.matcher = TableMatcher(self.options.include, self.options.exclude)

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
class RouteOptions:
    """Send the rows of the tables `match` selects (and, with `expr`, for which it holds) only to `sinks`
    (names of this pipeline's sinks; each still applies its own `match`). Other rows are not affected."""

    sinks: list[str]
    match: list[str] = field(default_factory=lambda: ["*.*"])
    expr: str | None = None

    def __post_init__(self) -> None:
        if not self.sinks:
            raise Invalid("sinks", "must name at least one sink")
        check_patterns(self.match, "match")
        self.compiled = compile_expr(self.expr) if self.expr is not None else None


@operator("route")
class Route(Operator):
    Options = RouteOptions

    @classmethod
    def check_sinks(cls, options: RouteOptions, sink_names: list[str]) -> None:
        for i, name in enumerate(options.sinks):
            if name not in sink_names:
                raise Invalid(f"sinks[{i}]", f"unknown sink {name!r} (sinks: {', '.join(sink_names)})")

    def setup(self) -> None:
        self.matcher = TableMatcher(self.options.match)

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

    def setup(self) -> None:
        self.name = self.options.name or f"count{self.index}"
        self.counts: dict[tuple[str, str, str], int] = {}
        self._counter: Any = None

    @property
    def counter(self) -> Any:
        if self._counter is None:
            from ray.util import metrics  # Ray's metrics need a connected Ray: only in the router

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
