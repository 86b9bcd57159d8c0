"""The filter stage's frame: a table run on its way through the operators (`Run`), the `Operator` base class,
building a config's operators and applying them in order. Operators register with `@operator(type)`
(`dbus_ray.registry`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.compute as pc

from dbus_ray import registry
from dbus_ray.model import TableRows


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


class Operator:
    """One entry of `filters:`. `apply` maps one run to the runs that continue (none, itself, or others).
    Every operator gets its options, the pipeline name, its index in `filters:` and the pipeline's sink
    names; `setup` prepares what `apply` needs."""

    type_name: ClassVar[str]
    Options: ClassVar[type]

    def __init__(self, options: Any, pipeline: str = "", index: int = 0, sink_names: list[str] | None = None) -> None:
        self.options = options
        self.pipeline = pipeline
        self.index = index
        self.sink_names = list(sink_names or [])
        self.setup()

    def setup(self) -> None:
        pass

    @classmethod
    def check_sinks(cls, options: Any, sink_names: list[str]) -> None:
        """Called by the config loader once the pipeline's sinks are known (raises `Invalid`)."""

    def apply(self, run: Run) -> list[Run]:
        raise NotImplementedError


def build_operators(filters: list[Any], pipeline: str = "", sink_names: list[str] | None = None) -> list[Operator]:
    """The operators of a config's `filters` list (`FilterConfig`s), in order."""
    return [registry.plugin_class(registry.OPERATOR, f.type)(f.options, pipeline, i, sink_names)
            for i, f in enumerate(filters)]


def apply_operators(parts: list[TableRows], ops: list[Operator]) -> list[Run]:
    """Every table run through every operator, in order; runs without rows are dropped."""
    runs = [Run(p) for p in parts if p.data.num_rows]
    for op in ops:
        runs = [out for run in runs for out in op.apply(run) if out.num_rows]
    return runs
