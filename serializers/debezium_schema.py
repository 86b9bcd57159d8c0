"""Debezium's schema change topic for `format: debezium` (`include_schema_changes`): one message per DDL
statement, as Debezium's MySQL/MariaDB connector writes it to the topic named `<topic_prefix>`:
key `{"databaseName": db}`, value `source`, `ts_ms`, `databaseName`, `schemaName` (null), `ddl` and
`tableChanges` (`type` CREATE/ALTER/DROP, `id` `"db"."table"`, `table`: `defaultCharsetName`,
`primaryKeyColumnNames`, `columns`, `comment`; null for a DROP).

The table after the statement comes from the DDL row's `change` (see `dbus_ray.mysql.ddl.DdlLayout`), which
the mysql source reads from information_schema; its columns are mapped here to Debezium's column form
(`jdbcType` is java.sql.Types, `typeName` the MySQL type in capitals with UNSIGNED, `length`/`scale` as the
server writes the type). A snapshot's statements (`snapshot_statements`) come from the tables' start
markers, with their `change` in the same form."""

from __future__ import annotations

import json
import re
import time
from typing import Any

from dbus_ray.model import dumpb

#: java.sql.Types of each MySQL DATA_TYPE, as Debezium's MySQL DDL parser assigns them.
JDBC_TYPES = {
    "tinyint": 5, "smallint": 5, "mediumint": 4, "int": 4, "integer": 4, "bigint": -5, "decimal": 3,
    "numeric": 3, "float": 6, "double": 8, "real": 8, "bit": -7, "bool": -7, "boolean": -7, "date": 91,
    "datetime": 93, "timestamp": 2014, "time": 92, "year": 4, "char": 1, "varchar": 12, "tinytext": 12,
    "text": 12, "mediumtext": 12, "longtext": 12, "json": 12, "binary": -2, "varbinary": -3, "tinyblob": 2004,
    "blob": 2004, "mediumblob": 2004, "longblob": 2004, "enum": 1, "set": 1,
}
OTHER = 1111  # geometry types and anything else
WIDTH_RE = re.compile(r"\((\d+)(?:\s*,\s*(\d+))?\)")
OPTION_RE = re.compile(r"'(?:[^']|'')*'")
CURRENT_TIMESTAMP_RE = re.compile(r"current_timestamp(?:\(\d*\))?", re.I)


def _s(type_: str, field: str, optional: bool = True) -> dict[str, Any]:
    return {"type": type_, "optional": optional, "field": field}


def _strings(field: str) -> dict[str, Any]:
    return {"type": "array", "items": {"type": "string", "optional": False}, "optional": True, "field": field}


COLUMN_SCHEMA = {"type": "struct", "fields": [
    _s("string", "name", False), _s("int32", "jdbcType", False), _s("int32", "nativeType"),
    _s("string", "typeName", False), _s("string", "typeExpression"), _s("string", "charsetName"),
    _s("int32", "length"), _s("int32", "scale"), _s("int32", "position", False), _s("boolean", "optional"),
    _s("boolean", "autoIncremented"), _s("boolean", "generated"), _s("string", "comment"),
    _s("string", "defaultValueExpression"), _strings("enumValues"),
], "optional": False, "name": "io.debezium.connector.schema.Column", "version": 1}

TABLE_SCHEMA = {"type": "struct", "fields": [
    _s("string", "defaultCharsetName"), _strings("primaryKeyColumnNames"),
    {"type": "array", "items": COLUMN_SCHEMA, "optional": False, "field": "columns"}, _s("string", "comment"),
], "optional": True, "name": "io.debezium.connector.schema.Table", "version": 1, "field": "table"}

CHANGES_SCHEMA = {"type": "array", "items": {"type": "struct", "fields": [
    _s("string", "type", False), _s("string", "id", False), TABLE_SCHEMA,
], "optional": False, "name": "io.debezium.connector.schema.Change", "version": 1}, "optional": False,
    "field": "tableChanges"}


def key_schema(connector: str) -> dict[str, Any]:
    return {"type": "struct", "fields": [_s("string", "databaseName", False)], "optional": False,
            "name": f"io.debezium.connector.{connector}.SchemaChangeKey", "version": 1}


def value_schema(connector: str, source_schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "struct", "fields": [
        source_schema, _s("int64", "ts_ms", False), _s("string", "databaseName"), _s("string", "schemaName"),
        _s("string", "ddl"), CHANGES_SCHEMA,
    ], "optional": False, "name": f"io.debezium.connector.{connector}.SchemaChangeValue", "version": 1}


def column(row: list[Any]) -> dict[str, Any]:
    """Debezium's form of a column from its information_schema.COLUMNS row (see
    `dbus_ray.mysql.schema.TableSchema.definition` for the order)."""
    (name, position, default, nullable, data_type, column_type, charset, _chars, _precision, scale, _dt,
     extra, comment) = row
    data_type = str(data_type).lower()
    original = str(column_type)
    column_type = original.lower()
    type_name = data_type.upper() + (" UNSIGNED" if " unsigned" in column_type else "")
    length: int | None = None
    options = None
    width = WIDTH_RE.search(column_type)
    if data_type in ("enum", "set"):
        options = OPTION_RE.findall(original)
        length = 1 if data_type == "enum" else max(0, len(options) * 2 - 1)
        width = None
    elif width:
        length = int(width.group(1))
    if data_type not in ("decimal", "numeric"):
        scale = int(width.group(2)) if width and width.group(2) else None
    auto = "auto_increment" in str(extra or "").lower()
    return {
        "name": name, "jdbcType": JDBC_TYPES.get(data_type, OTHER), "nativeType": None, "typeName": type_name,
        "typeExpression": type_name, "charsetName": charset, "length": length,
        "scale": None if scale is None else int(scale), "position": int(position), "optional": nullable == "YES",
        "autoIncremented": auto, "generated": auto, "comment": comment or None,
        "defaultValueExpression": _default(default), "enumValues": options,
    }


def _default(text: Any) -> str | None:
    """COLUMN_DEFAULT as MariaDB writes it (a quoted literal, a number, NULL, an expression) -> the value."""
    if text is None or text == "NULL":
        return None
    text = str(text)
    if CURRENT_TIMESTAMP_RE.fullmatch(text):  # Debezium's DDL parser writes this default as the epoch
        return "1970-01-01 00:00:00"
    if len(text) >= 2 and text[0] == text[-1] == "'":
        return text[1:-1].replace("''", "'")
    return text


def table_changes(db: str, table: str, change: str | None) -> list[dict[str, Any]]:
    """`tableChanges` of a DDL row's `change` (JSON text, see `DdlLayout`): [] for a database's statement,
    and for a CREATE/ALTER whose table information_schema no longer had when the DDL was read."""
    if not change:
        return []
    found = json.loads(change)
    kind = found["type"]
    ident = f'"{db}"."{table}"'
    if kind == "DROP":
        return [{"type": "DROP", "id": ident, "table": None}]
    if "columns" not in found:
        return []
    return [{"type": kind, "id": ident, "table": {
        "defaultCharsetName": found.get("charset"), "primaryKeyColumnNames": found.get("primary_key") or [],
        "columns": [column(c) for c in found["columns"]], "comment": found.get("comment"),
    }}]


def snapshot_statements(ddl: str) -> list[tuple[str, str, str, list[dict[str, Any]]]]:
    """(db, table, statement, tableChanges) of a snapshot start marker's `ddl` (see
    `dbus_ray.mysql.snapshot.schema_ddl`)."""
    return [(s["db"], s["table"], s["sql"], table_changes(s["db"], s["table"], s["change"])) for s in json.loads(ddl)]


def message(connector: str, schemas_enable: bool, source_schema: dict[str, Any], source: dict[str, Any], db: str,
            ddl: str, changes: list[dict[str, Any]]) -> tuple[bytes, bytes]:
    """Key and value of a schema change message (JsonConverter's form, with or without the schemas)."""
    value = {"source": source, "ts_ms": time.time_ns() // 1_000_000, "databaseName": db, "schemaName": None,
             "ddl": ddl, "tableChanges": changes}
    key = {"databaseName": db}
    if schemas_enable:
        return (dumpb({"schema": key_schema(connector), "payload": key}),
                dumpb({"schema": value_schema(connector, source_schema), "payload": value}))
    return dumpb(key), dumpb(value)
