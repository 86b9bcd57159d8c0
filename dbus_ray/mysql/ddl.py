"""The statements the `mysql` source understands: which table or database a DDL statement changes
(`ddl_target`, `renamed_tables`, `dropped_tables`), the shadow tables of online schema change tools
(`OSC_RE`), the image of an `op: ddl` row (`DdlLayout`), and the row changes logged as statements, whose rows
the binlog does not carry (`dml_tables`)."""

from __future__ import annotations

import re
from typing import Any

import pyarrow as pa

from dbus_ray.mysql.events import RefusedEvent

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


def _table(first: str | None, second: str | None, default_db: str) -> tuple[str, str]:
    """(db, table) of a NAME match's two groups: `t` (in `default_db`) or `db.t`, unquoted."""
    if second is None:
        return default_db, _ident(first) or ""
    return _ident(first) or default_db, _ident(second) or ""


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
    if kind in ("DATABASE", "SCHEMA"):
        return _ident(obj.group(2)) or default_db, ""
    if kind == "INDEX":
        on = ON_RE.search(rest)
        if not on:
            return None
        return _table(on.group(1), on.group(2), default_db)
    return _table(obj.group(2), obj.group(3), default_db)


def renamed_tables(sql: str, default_db: str) -> list[tuple[str, str]]:
    """Every (db, table) a `RENAME TABLE a TO b, c TO d` names, in order; [] for other statements."""
    m = DDL_RE.match(sql)
    if not m or m.group(1).upper() != "RENAME":
        return []
    out: list[tuple[str, str]] = []
    for pair in RENAME_PAIR_RE.finditer(COMMENT_RE.sub(" ", m.group(2))):
        out += [_table(pair.group(1), pair.group(2), default_db), _table(pair.group(3), pair.group(4), default_db)]
    return out


def dropped_tables(sql: str, default_db: str) -> list[tuple[str, str]]:
    """Every (db, table) a `DROP TABLE a, b` names after the first (which `ddl_target` gives), in order; []
    for other statements."""
    m = DDL_RE.match(sql)
    if not m or m.group(1).upper() != "DROP":
        return []
    rest = COMMENT_RE.sub(" ", m.group(2)).lstrip()
    obj = OBJECT_RE.match(rest)
    if not obj or obj.group(1).upper() not in ("TABLE", "TABLES"):
        return []
    out: list[tuple[str, str]] = []
    more = _MORE_RE.match(rest, obj.end())
    while more:
        out.append(_table(more.group(1), more.group(2), default_db))
        more = _MORE_RE.match(rest, more.end())
    return out


_MORE_RE = re.compile(r"\s*,\s*" + NAME, re.S)  # the next table of a list


def tables_changed(sql: str, default_db: str) -> list[tuple[str, str]]:
    """The tables a DDL statement on a table changes (`ddl_target`, every table a RENAME names and the others
    a DROP TABLE names); [] for other statements and a database's DDL."""
    target = ddl_target(sql, default_db)
    if target is None or not target[1]:
        return []
    return [target, *renamed_tables(sql, default_db), *dropped_tables(sql, default_db)]


DML_RE = re.compile(r"^\s*(?:/\*.*?\*/\s*)*(INSERT|REPLACE|UPDATE|DELETE)\b\s*(.*)$", re.I | re.S)
_MODIFIERS = r"(?:(?:LOW_PRIORITY|DELAYED|HIGH_PRIORITY|QUICK|IGNORE)\s+)*"
_ALIAS = r"(?:\s+(?:AS\s+)?(?!(?:SET|WHERE|ORDER|LIMIT|RETURNING|PARTITION|USING)\b)[\w$]+)?"
#: the single-table forms: INSERT/REPLACE [INTO] t ..., UPDATE t [alias] SET ..., DELETE FROM t [alias] [WHERE ...]
DML_TABLE_RE = {
    "INSERT": re.compile(_MODIFIERS + r"(?:INTO\s+)?" + NAME, re.I | re.S),
    "UPDATE": re.compile(_MODIFIERS + NAME + _ALIAS + r"\s+SET\b", re.I | re.S),
    "DELETE": re.compile(_MODIFIERS + r"FROM\s+" + NAME + _ALIAS
                         + r"\s*(?:(?:WHERE|ORDER|LIMIT|RETURNING|PARTITION)\b|;|$)", re.I | re.S),
}


def dml_tables(sql: str, default_db: str) -> list[tuple[str, str]] | None:
    """The table a row change logged as a statement changes (an INSERT, REPLACE, UPDATE or DELETE, written so
    when its session had binlog_format=STATEMENT or MIXED, or by the server emptying a MEMORY table after a
    restart): [(db, table)] for the single-table forms, [] for any other form (several tables, a join); None
    when the statement is not one."""
    m = DML_RE.match(sql)
    if not m:
        return None
    verb, rest = m.group(1).upper(), COMMENT_RE.sub(" ", m.group(2)).lstrip()
    one = DML_TABLE_RE["INSERT" if verb == "REPLACE" else verb].match(rest)
    if not one:
        return []
    return [_table(one.group(1), one.group(2), default_db)]


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


def refuse_dml(sql: str, default_db: str, matcher: Any, file: str, offset: int) -> None:
    """A row change logged as a statement (`dml_tables`) on a table the pipeline includes, or on tables this
    cannot tell, stops the stream with one line: its rows are not in the binlog. On a table left out it passes."""
    tables = dml_tables(sql, default_db)
    if tables is None or tables and not any(matcher(db, table) for db, table in tables):
        return
    what = f"on {tables[0][0]}.{tables[0][1]}" if tables else f"`{' '.join(sql.split())[:60]}`"
    raise RefusedEvent(
        f"binlog {file}:{offset}: a row change logged as a statement ({what}), whose rows the binlog does not "
        "carry: binlog_format=STATEMENT or MIXED in the writing session, or a MEMORY table emptied by a server "
        "restart; the pipeline stops before it (write with binlog_format=ROW, then snapshot the table again)"
    )
