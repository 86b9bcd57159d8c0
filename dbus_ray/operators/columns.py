"""Operators that change tables and columns: `rename`, `drop_columns` and `mask`, each on the tables its
`match` globs select. See `dbus_ray.operators` for the table."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc

from dbus_ray.errors import DbusError
from dbus_ray.operators.stage import Operator, Run, map_images, rebuild_struct
from dbus_ray.registry import operator
from dbus_ray.routing import TableMatcher
from dbus_ray.validation import Invalid, check_columns, check_patterns


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
        check_patterns(self.match, "match")


@operator("rename")
class Rename(Operator):
    Options = RenameOptions

    def setup(self) -> None:
        self.matcher = TableMatcher(self.options.match)
        self.tables = {tuple(k.split(".")): tuple(v.split(".")) for k, v in self.options.tables.items()}

    def apply(self, run: Run) -> list[Run]:
        r = run.rows
        data, key = r.data, r.key
        columns = self.options.columns
        if columns and self.matcher(r.db, r.table):

            def rename(column: pa.StructArray) -> pa.StructArray:
                t = column.type
                children = [(t.field(i).with_name(columns.get(t.field(i).name, t.field(i).name)), column.field(i))
                            for i in range(t.num_fields)]
                names = [f.name for f, _ in children]
                twice = sorted({n for n in names if names.count(n) > 1})
                if twice:  # two columns of one name: a sink would keep one value of the two
                    raise DbusError(f"rename: table {r.db}.{r.table} would have two columns named "
                                    f"{', '.join(twice)} (a column is renamed to a name the table has): rename "
                                    "that one too, or leave the table out (match)")
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
        check_columns(self.columns)
        check_patterns(self.match, "match")


@operator("drop_columns")
class DropColumns(Operator):
    Options = DropColumnsOptions

    def setup(self) -> None:
        self.matcher = TableMatcher(self.options.match)
        self.drop = set(self.options.columns)

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
        check_columns(self.columns)
        check_patterns(self.match, "match")
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

    def setup(self) -> None:
        self.matcher = TableMatcher(self.options.match)
        self.columns = set(self.options.columns)
        self.salt = self.options.salt.encode()

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
