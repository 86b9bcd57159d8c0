"""The DDL statements the `mysql` source understands: which table or database a statement changes
(`ddl_target`, `renamed_tables`), the shadow tables of online schema change tools (`OSC_RE`), and the
image of an `op: ddl` row (`DdlLayout`)."""

from __future__ import annotations

import re
from typing import Any

import pyarrow as pa

DDL_RE = re.compile(r"^\s*(?:/\*.*?\*/\s*)*(CREATE|ALTER|DROP|RENAME|TRUNCATE)\b\s*(.*)$", re.I | re.S)
NAME = r"(`(?:[^`]|``)+`|[\w$]+)(?:\s*\.\s*(`(?:[^`]|``)+`|[\w$]+))?"
OBJECT_RE = re.compile(
    r"^(?:(?:OR\s+REPLACE|TEMPORARY|ONLINE|OFFLINE|IGNORE|UNIQUE|FULLTEXT|SPATIAL)\s+)*"
    r"(TABLES?|DATABASE|SCHEMA|INDEX|VIEW)\b\s*(?:IF\s+(?:NOT\s+)?EXISTS\s+)?" + NAME,
    re.I | re.S,
)
ON_RE = re.compile(r"\bON\s+" + NAME, re.I | re.S)
RENAME_PAIR_RE = re.compile(NAME + r"\s+TO\s+" + NAME, re.I | re.S)
COMMENT_RE = re.compile(r"/\*(?!!).*?\*/", re.S)
#: Shadow tables of online schema change tools: gh-ost `_t_gho` (the new table), `_t_ghc` (its changelog),
#: `_t_del` (the old table after the cut-over, also `_t_<timestamp>_del`); pt-online-schema-change `_t_new`
#: and `_t_old`.
OSC_RE = re.compile(r"^_.+_(gho|ghc|del|new|old)$")


def _ident(text: str | None) -> str | None:
    if text is None:
        return None
    return text[1:-1].replace("``", "`") if text.startswith("`") else text


def ddl_target(sql: str, default_db: str) -> tuple[str, str] | None:
    """(db, table) a DDL statement changes (table "" for a database), None when it is not a DDL on a
    table or database."""
    m = DDL_RE.match(sql)
    if not m:
        return None
    verb, rest = m.group(1).upper(), COMMENT_RE.sub(" ", m.group(2)).lstrip()
    if verb == "TRUNCATE" and not re.match(r"TABLE\b", rest, re.I):
        rest = "TABLE " + rest
    obj = OBJECT_RE.match(rest)
    if not obj:
        return None
    kind = obj.group(1).upper()
    first, second = _ident(obj.group(2)), _ident(obj.group(3))
    if kind in ("DATABASE", "SCHEMA"):
        return first or default_db, ""
    if kind == "INDEX":
        on = ON_RE.search(rest)
        if not on:
            return None
        first, second = _ident(on.group(1)), _ident(on.group(2))
    if second is None:
        return default_db, first or ""
    return first or default_db, second


def renamed_tables(sql: str, default_db: str) -> list[tuple[str, str]]:
    """Every (db, table) a `RENAME TABLE a TO b, c TO d` names, in order; [] for other statements."""
    m = DDL_RE.match(sql)
    if not m or m.group(1).upper() != "RENAME":
        return []
    out: list[tuple[str, str]] = []
    for pair in RENAME_PAIR_RE.finditer(COMMENT_RE.sub(" ", m.group(2))):
        for first, second in ((pair.group(1), pair.group(2)), (pair.group(3), pair.group(4))):
            out.append((default_db, _ident(first) or "") if second is None else
                       (_ident(first) or default_db, _ident(second) or ""))
    return out


def tables_changed(sql: str, default_db: str) -> list[tuple[str, str]]:
    """The tables a DDL statement on a table changes (`ddl_target`, and every table a RENAME names); [] for
    other statements and a database's DDL."""
    target = ddl_target(sql, default_db)
    if target is None or not target[1]:
        return []
    return [target, *renamed_tables(sql, default_db)]


def change_type(sql: str) -> str | None:
    """What a DDL statement on a table does to it, as Debezium's `tableChanges.type` names it: CREATE (a
    CREATE TABLE), DROP (a DROP TABLE), ALTER (any other statement on a table, index ones and RENAME included);
    None for TRUNCATE and statements that are not DDL."""
    m = DDL_RE.match(sql)
    if not m or m.group(1).upper() == "TRUNCATE":
        return None
    verb, rest = m.group(1).upper(), COMMENT_RE.sub(" ", m.group(2)).lstrip()
    obj = OBJECT_RE.match(rest)
    if obj and obj.group(1).upper() in ("TABLE", "TABLES") and verb in ("CREATE", "DROP"):
        return verb
    return "ALTER"


class DdlLayout:
    """The image of an `op: ddl` row: {"sql": statement, "change": JSON text or null}. `change` describes the
    table a table DDL changed (null for a database's): {"type": CREATE/ALTER/DROP} and, when information_schema
    had the table as the DDL was read (`TableSchema.definition`): "charset", "comment", "primary_key" and
    "columns" (information_schema.COLUMNS rows, see there)."""

    image_type = pa.struct([pa.field("sql", pa.string()), pa.field("change", pa.string())])
    key: tuple[str, ...] = ()

    def __init__(self, db: str, table: str) -> None:
        self.db = db
        self.table = table

    def struct(self, columns: list[list[Any]] | None, n: int, mask: list[bool] | None = None) -> pa.StructArray:
        if columns is None:
            return pa.array([None] * n, self.image_type)
        sql = columns[0]
        change = columns[1] if len(columns) > 1 else [None] * len(sql)
        if mask is not None:
            sql = [None if m else v for v, m in zip(sql, mask)]
        return pa.array([None if v is None else {"sql": v, "change": c} for v, c in zip(sql, change)],
                        self.image_type)
