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

Modules: `expressions` (the expression compiler of `filter.expr` and `route.expr`), `stage` (a run on its way,
the `Operator` base class, building and applying a config's operators), `rows` (operators choosing rows) and
`columns` (operators changing tables and columns).

Checkpoints: operators only choose which rows go where; every batch still reaches every sink (possibly with
no rows), so a filtered-out row counts as delivered and acknowledgements keep flowing.
"""


from __future__ import annotations

from dbus_ray.operators import columns, rows
from dbus_ray.operators.expressions import Expr, ExprError, compile_expr
from dbus_ray.operators.stage import Operator, Run, apply_operators, build_operators

__all__ = ["Expr", "ExprError", "Operator", "Run", "apply_operators", "build_operators", "columns", "compile_expr",
           "rows"]
