"""The postgres sink's type mapping (Arrow type of a row image field -> PostgreSQL column type), the check of
an existing target column against it, and the source DDL statements the sink can follow.

Type mapping (the `mysql` source's column types, see `dbus_ray.mysql.values`, travel as Arrow types):

MySQL/MariaDB column          Arrow type        PostgreSQL column     value in PostgreSQL
TINYINT, SMALLINT             int8, int16       smallint              the same integer
TINYINT UNSIGNED              uint8             smallint
SMALLINT UNSIGNED, YEAR       uint16            integer
MEDIUMINT, INT                int32             integer
MEDIUMINT/INT UNSIGNED        uint32            bigint
BIGINT                        int64             bigint
BIGINT UNSIGNED               uint64            numeric(20,0)
DECIMAL(p,s)                  decimal(p,s)      numeric(p,s)          exact
FLOAT                         float32           real                  the same float32
DOUBLE                        float64           double precision      the same float64
DATE, DATETIME, TIMESTAMP     string            text                  as the row change carries it: ISO 8601
                                                                      (`2024-01-02`, `2024-01-02T03:04:05.5`,
                                                                      TIMESTAMP in UTC `...+00:00`); text,
                                                                      since PostgreSQL has no zero dates
TIME                          duration[us]      interval              the same duration (may exceed 24 h)
CHAR, VARCHAR, TEXT, ENUM,    string            text                  the same text (SET: members joined by
SET, JSON                                                             `,`; JSON: the text the source logged)
BINARY, VARBINARY, BLOB,      binary            bytea                 the same bytes
BIT, GEOMETRY
(other sources) bool          bool              boolean
(other sources) date32        date32            date
(other sources) timestamp     timestamp         timestamp[tz]

NULL is NULL. Text holding a NUL character cannot be stored in PostgreSQL: the batch fails naming it.
An existing target column is accepted when its type holds every value of the mapped one (an integer column
at least as wide, `numeric` for any integer or decimal, `text`/`varchar`/`json(b)` for strings, `double
precision` for floats).
"""

from __future__ import annotations

import re

import pyarrow as pa

#: PostgreSQL types (as `format_type` names them) that hold every value of each mapped type
WIDER = {
    "smallint": {"smallint", "integer", "bigint", "numeric"},
    "integer": {"integer", "bigint", "numeric"},
    "bigint": {"bigint", "numeric"},
    "real": {"real", "double precision"},
    "double precision": {"double precision"},
    "text": {"text", "character varying", "json", "jsonb"},
    "bytea": {"bytea"},
    "interval": {"interval"},
    "boolean": {"boolean"},
    "date": {"date", "timestamp without time zone", "timestamp with time zone"},
}


def pg_type(arrow: pa.DataType, column: str) -> str:
    """The PostgreSQL column type of an Arrow image field (see the module's table)."""
    t = pa.types
    if t.is_int8(arrow) or t.is_int16(arrow) or t.is_uint8(arrow):
        return "smallint"
    if t.is_int32(arrow) or t.is_uint16(arrow):
        return "integer"
    if t.is_int64(arrow) or t.is_uint32(arrow):
        return "bigint"
    if t.is_uint64(arrow):
        return "numeric(20,0)"
    if t.is_decimal(arrow):
        return f"numeric({arrow.precision},{arrow.scale})"
    if t.is_float32(arrow):
        return "real"
    if t.is_float64(arrow):
        return "double precision"
    if t.is_string(arrow) or t.is_large_string(arrow) or t.is_null(arrow):
        return "text"
    if t.is_binary(arrow) or t.is_large_binary(arrow) or t.is_fixed_size_binary(arrow):
        return "bytea"
    if t.is_duration(arrow):
        return "interval"
    if t.is_boolean(arrow):
        return "boolean"
    if t.is_date(arrow):
        return "date"
    if t.is_timestamp(arrow):
        return "timestamp with time zone" if arrow.tz else "timestamp without time zone"
    raise ValueError(f"column {column}: no PostgreSQL type for Arrow type {arrow}")


def compatible(mapped: str, existing: str) -> bool:
    """Whether an existing column of type `existing` (format_type) holds every value of type `mapped`."""
    base = existing.split("(")[0].strip()
    if mapped.startswith("numeric"):
        if base != "numeric":
            return False
        if "(" not in existing:
            return True  # unconstrained numeric holds any
        p, s = (int(x) for x in mapped[8:-1].split(","))
        ep, es = (int(x) for x in existing[existing.index("(") + 1:-1].split(","))
        return es >= s and ep - es >= p - s
    if mapped.startswith("timestamp"):
        return base == mapped
    return base in WIDER.get(mapped, {mapped})


# ------------------------------------------------------------------ DDL

ALTER_RE = re.compile(r"^\s*ALTER\s+(?:ONLINE\s+|IGNORE\s+)*TABLE\s+\S+\s+(.*)$", re.I | re.S)
CREATE_TABLE_RE = re.compile(r"^\s*CREATE\s+(?:OR\s+REPLACE\s+)?TABLE\b", re.I)
INDEX_RE = re.compile(r"^\s*(CREATE\s+(?:UNIQUE\s+|FULLTEXT\s+|SPATIAL\s+)?INDEX|DROP\s+INDEX)\b", re.I)
#: statements that change no table's rows or columns: databases created, views
NO_ROWS_RE = re.compile(r"^\s*(CREATE\s+(DATABASE|SCHEMA)|(CREATE|ALTER|DROP)\s+(OR\s+REPLACE\s+)?"
                        r"(ALGORITHM\s*=\s*\w+\s+)?(DEFINER\s*=\s*\S+\s+)?(SQL\s+SECURITY\s+\w+\s+)?VIEW)\b", re.I)
IDENT = r"(`(?:[^`]|``)+`|[\w$]+)"
ADD_RE = re.compile(r"^ADD\s+(?:COLUMN\s+)?(?:IF\s+NOT\s+EXISTS\s+)?" + IDENT + r"\s+(.*)$", re.I | re.S)
DROP_RE = re.compile(r"^DROP\s+(?:COLUMN\s+)?(?:IF\s+EXISTS\s+)?" + IDENT + r"\s*$", re.I | re.S)
HARMLESS_RE = re.compile(r"^(ADD|DROP)\s+(INDEX|KEY|UNIQUE|FULLTEXT|SPATIAL|FOREIGN\s+KEY|CONSTRAINT)\b|"
                         r"^RENAME\s+(INDEX|KEY)\b|^(FORCE|ENABLE\s+KEYS|DISABLE\s+KEYS)$|"
                         r"^ALTER\s+(COLUMN\s+)?\S+\s+(SET\s+DEFAULT|DROP\s+DEFAULT)\b|"
                         r"^(ALGORITHM|LOCK|ENGINE|AUTO_INCREMENT|COMMENT|ROW_FORMAT|KEY_BLOCK_SIZE)\b", re.I)
TYPE_RE = re.compile(r"^(\w+)\s*(?:\(([^)]*)\))?\s*(UNSIGNED)?", re.I)
DEFAULT_RE = re.compile(r"\bDEFAULT\s+('(?:[^'\\]|''|\\.)*'|-?\d+(?:\.\d+)?|NULL)", re.I)
FUNCTION_DEFAULT_RE = re.compile(r"\bDEFAULT\s+(?!'|-?\d|NULL\b)", re.I)
GENERATED_RE = re.compile(r"\b(?:GENERATED\s+ALWAYS\s+)?AS\s*\(", re.I)
NOT_NULL_RE = re.compile(r"\bNOT\s+NULL\b", re.I)
VALID_DATE_RE = re.compile(r"^'(?!0000)\d{4}-(?!00)\d{2}-(?!00)\d{2}'$")
#: the value MySQL gives the existing rows of a NOT NULL column added without a DEFAULT, by MySQL type (the
#: others: DATE/DATETIME/TIME/YEAR zeros, ENUM's first member, JSON, binary strings, are not followed)
IMPLICIT_DEFAULTS = {**{name: "0" for name in ("tinyint", "bool", "boolean", "smallint", "mediumint", "int",
                                               "integer", "bigint", "float", "double", "real", "decimal",
                                               "numeric", "dec", "fixed")},
                     **{name: "''" for name in ("char", "varchar", "tinytext", "text", "mediumtext", "longtext",
                                                "set")}}

MYSQL_TYPES = {
    "tinyint": ("smallint", "smallint"), "bool": ("smallint", "smallint"), "boolean": ("smallint", "smallint"),
    "smallint": ("smallint", "integer"), "mediumint": ("integer", "bigint"), "int": ("integer", "bigint"),
    "integer": ("integer", "bigint"), "bigint": ("bigint", "numeric(20,0)"),
    "float": ("real", "real"), "double": ("double precision", "double precision"),
    "real": ("double precision", "double precision"), "year": ("integer", "integer"),
    "time": ("interval", "interval"),
}
TEXT_TYPES = {"date", "datetime", "timestamp", "char", "varchar", "tinytext", "text", "mediumtext", "longtext",
              "enum", "set", "json"}
BYTES_TYPES = {"binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob", "bit", "geometry", "point",
               "linestring", "polygon"}


def split_clauses(text: str) -> list[str]:
    """An ALTER TABLE's clauses: split at commas outside parentheses and quotes."""
    out, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"`":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append(text[start:i].strip())
            start = i + 1
    out.append(text[start:].strip().rstrip(";").strip())
    return [c for c in out if c]


def unquote(name: str) -> str:
    return name[1:-1].replace("``", "`") if name.startswith("`") else name


def column_type(definition: str) -> tuple[str, str | None] | None:
    """(PostgreSQL type, DEFAULT literal or None) of a MySQL column definition, None when not understood or
    when the target's existing rows would not get the value MySQL gives its existing rows: a generated
    column (MySQL computes it), a DATETIME/TIMESTAMP/TIME default (its text is not the stream's), a NOT NULL
    column without a DEFAULT whose implicit one is not 0 or '' (MySQL fills those in)."""
    m = TYPE_RE.match(definition.strip())
    if not m or FUNCTION_DEFAULT_RE.search(definition) or GENERATED_RE.search(definition):
        return None
    name, args, unsigned = m.group(1).lower(), m.group(2), bool(m.group(3))
    if name in MYSQL_TYPES:
        pg = MYSQL_TYPES[name][1 if unsigned else 0]
    elif name in ("decimal", "numeric", "dec", "fixed"):
        parts = [int(x) for x in (args or "10,0").split(",")]
        pg = f"numeric({parts[0]},{parts[1] if len(parts) > 1 else 0})"
    elif name in TEXT_TYPES:
        pg = "text"
    elif name in BYTES_TYPES:
        pg = "bytea"
    else:
        return None
    d = DEFAULT_RE.search(definition)
    default = None if d is None or d.group(1).upper() == "NULL" else d.group(1)
    if default is not None and (name in ("datetime", "timestamp", "time")
                                or name == "date" and not VALID_DATE_RE.match(default)):
        return None
    if d is None and NOT_NULL_RE.search(definition):  # the existing rows get MySQL's implicit default
        default = IMPLICIT_DEFAULTS.get(name)
        if default is None:
            return None
    if default is not None and default.startswith("'"):
        default = "'" + default[1:-1].replace("\\'", "''").replace("\\\\", "\\") + "'"
    if default is not None and pg == "bytea":
        return None  # a binary default's bytes depend on the column's padding: not followed
    return pg, default


def alter_actions(sql: str) -> list[tuple[str, str, str | None, str | None]] | None:
    """What a source DDL statement asks of the target: a list of ("add", column, pg type, default) and
    ("drop", column, None, None); [] when it changes no column (CREATE TABLE, indexes); None when it is a DDL
    the sink cannot follow."""
    if CREATE_TABLE_RE.match(sql) or INDEX_RE.match(sql) or NO_ROWS_RE.match(sql):
        return []
    m = ALTER_RE.match(sql)
    if not m:
        return None
    actions: list[tuple[str, str, str | None, str | None]] = []
    for clause in split_clauses(m.group(1)):
        if HARMLESS_RE.match(clause):
            continue
        if re.match(r"^DROP\s+(?:COLUMN\s+)?(?:IF\s+EXISTS\s+)?(PRIMARY|INDEX|KEY)\b", clause, re.I):
            return None  # DROP PRIMARY KEY changes the key
        drop = DROP_RE.match(clause)
        if drop:
            actions.append(("drop", unquote(drop.group(1)), None, None))
            continue
        add = ADD_RE.match(clause)
        if add and not re.match(r"^ADD\s+(PRIMARY|COLUMN\s*\()", clause, re.I):
            typed = column_type(re.sub(r"\s+(FIRST|AFTER\s+\S+)\s*$", "", add.group(2), flags=re.I))
            if typed is None:
                return None
            actions.append(("add", unquote(add.group(1)), typed[0], typed[1]))
            continue
        return None
    return actions
