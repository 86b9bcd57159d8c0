"""Debezium's schema change topic without a database: the DDL row's `change` (information_schema rows, as
the mysql source reads them) mapped to Debezium's `tableChanges`, and the message's key and value. Expected
values are what Debezium 3.5's MariaDB connector wrote for the same statements (recorded from a run of
tests/peer: `CREATE TABLE extra (id BIGINT(20) NOT NULL AUTO_INCREMENT PRIMARY KEY, label VARCHAR(30) NOT
NULL DEFAULT 'x', size ENUM('s','m','l'), price DECIMAL(8,3) UNSIGNED, at DATETIME(3), body TEXT COMMENT
'text', flags SET('a','b')) DEFAULT CHARSET=latin1`)."""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

from dbus_ray.model import META_SCHEMA, TableRows
from dbus_ray.mysql.ddl import DdlLayout, change_type
from dbus_ray.serializers.debezium import DebeziumOptions, DebeziumSerializer
from dbus_ray.serializers.debezium_schema import table_changes

SQL = "CREATE TABLE shop.extra (...)"
#: information_schema.COLUMNS rows of the table above as MariaDB 11 gives them (TableSchema.definition's order)
COLUMNS = [
    ["id", 1, None, "NO", "bigint", "bigint(20)", None, None, 19, 0, None, "auto_increment", ""],
    ["label", 2, "'x'", "NO", "varchar", "varchar(30)", "latin1", 30, None, None, None, "", ""],
    ["size", 3, "NULL", "YES", "enum", "enum('s','m','l')", "latin1", 1, None, None, None, "", ""],
    ["price", 4, "NULL", "YES", "decimal", "decimal(8,3) unsigned", None, None, 8, 3, None, "", ""],
    ["at", 5, "NULL", "YES", "datetime", "datetime(3)", None, None, None, None, 3, "", ""],
    ["body", 6, "NULL", "YES", "text", "text", "latin1", 65535, None, None, None, "", "text"],
    ["flags", 7, "NULL", "YES", "set", "set('a','b')", "latin1", 3, None, None, None, "", ""],
]
CHANGE = json.dumps({"type": "CREATE", "charset": "latin1", "comment": None, "primary_key": ["id"],
                     "columns": COLUMNS})


def col(name: str, jdbc: int, type_name: str, charset: str | None, length: int | None, scale: int | None,
        position: int, optional: bool, auto: bool = False, comment: str | None = None, default: str | None = None,
        enum: list[str] | None = None) -> dict[str, Any]:
    return {"name": name, "jdbcType": jdbc, "nativeType": None, "typeName": type_name, "typeExpression": type_name,
            "charsetName": charset, "length": length, "scale": scale, "position": position, "optional": optional,
            "autoIncremented": auto, "generated": auto, "comment": comment, "defaultValueExpression": default,
            "enumValues": enum}


#: Debezium's tableChanges for the statement.
DEBEZIUM = [{"type": "CREATE", "id": '"shop"."extra"', "table": {
    "defaultCharsetName": "latin1", "primaryKeyColumnNames": ["id"], "comment": None, "columns": [
        col("id", -5, "BIGINT", None, 20, None, 1, False, auto=True),
        col("label", 12, "VARCHAR", "latin1", 30, None, 2, False, default="x"),
        col("size", 1, "ENUM", "latin1", 1, None, 3, True, enum=["'s'", "'m'", "'l'"]),
        col("price", 3, "DECIMAL UNSIGNED", None, 8, 3, 4, True),
        col("at", 93, "DATETIME", None, 3, None, 5, True),
        col("body", 12, "TEXT", "latin1", None, None, 6, True, comment="text"),
        col("flags", 1, "SET", "latin1", 3, None, 7, True, enum=["'a'", "'b'"]),
    ]}}]


def ddl_rows(sql: str, change: str | None, db: str = "shop", table: str = "extra") -> TableRows:
    layout = DdlLayout(db, table)
    arrays = [pa.array(["ddl"]), pa.array(["binlog.000001"]), pa.array([12021], pa.int64()), pa.array(["0-1-17"]),
              pa.array([0], pa.int32()), pa.array(["0-1-17"]), pa.array([1_700_000_000.0]), pa.array([1.0])]
    schema = META_SCHEMA.append(pa.field("before", layout.image_type)).append(pa.field("after", layout.image_type))
    after = layout.struct([[sql], [change]], 1)
    return TableRows(db, table, (), pa.RecordBatch.from_arrays(
        [*arrays, pa.nulls(1, layout.image_type), after], schema=schema))


def test_columns_as_debezium_maps_them() -> None:
    assert table_changes("shop", "extra", CHANGE) == DEBEZIUM


def test_drop_database_and_unknown_table() -> None:
    assert table_changes("shop", "t", json.dumps({"type": "DROP"})) == [
        {"type": "DROP", "id": '"shop"."t"', "table": None}]
    assert table_changes("shop", "", None) == []
    assert table_changes("shop", "t", json.dumps({"type": "ALTER"})) == []  # information_schema had no table


def test_change_types() -> None:
    assert change_type("CREATE TABLE t (a INT)") == "CREATE"
    assert change_type("/* x */ drop table if exists t") == "DROP"
    assert change_type("ALTER TABLE t ADD b INT") == "ALTER"
    assert change_type("CREATE INDEX i ON t (a)") == "ALTER"
    assert change_type("RENAME TABLE a TO b") == "ALTER"
    assert change_type("TRUNCATE t") is None


def test_schema_change_message_key_value_and_topic() -> None:
    ser = DebeziumSerializer(DebeziumOptions(topic_prefix="srv", connector="mariadb"))
    [(key, value, headers, op)] = ser.messages(ddl_rows(SQL, CHANGE), "pipe")
    key, value = json.loads(key), json.loads(value)
    assert op == "schema" and headers is None and ser.schema_topic() == "srv"
    assert key == {"schema": {"type": "struct", "fields": [{"type": "string", "optional": False,
                                                            "field": "databaseName"}],
                              "optional": False, "name": "io.debezium.connector.mariadb.SchemaChangeKey",
                              "version": 1}, "payload": {"databaseName": "shop"}}
    assert value["schema"]["name"] == "io.debezium.connector.mariadb.SchemaChangeValue"
    assert [f["field"] for f in value["schema"]["fields"]] == [
        "source", "ts_ms", "databaseName", "schemaName", "ddl", "tableChanges"]
    payload = value["payload"]
    assert payload["ddl"] == SQL and payload["databaseName"] == "shop" and payload["schemaName"] is None
    assert payload["tableChanges"] == DEBEZIUM
    assert {k: payload["source"][k] for k in ("snapshot", "db", "table", "server_id", "gtid", "file", "pos",
                                              "row")} == {
        "snapshot": "false", "db": "shop", "table": "extra", "server_id": 1, "gtid": "0-1-17",
        "file": "binlog.000001", "pos": 12021, "row": 0}


def test_schemas_off_option_off_truncate_and_database() -> None:
    plain = DebeziumSerializer(DebeziumOptions(topic_prefix="srv", schemas_enable=False))
    [(key, value, _, _)] = plain.messages(ddl_rows("CREATE DATABASE x", None, "x", ""), "pipe")
    assert json.loads(key) == {"databaseName": "x"}
    assert json.loads(value)["tableChanges"] == [] and json.loads(value)["source"]["table"] is None
    assert plain.messages(ddl_rows("TRUNCATE TABLE shop.extra", None), "pipe") == []
    off = DebeziumSerializer(DebeziumOptions(topic_prefix="srv", include_schema_changes=False))
    assert off.messages(ddl_rows(SQL, CHANGE), "pipe") == []


MARKER = pa.struct([("snapshot", pa.string()), ("table", pa.string()), ("rows", pa.int64()), ("ddl", pa.string())])


def marker_rows(what: str, ddl: list[dict[str, Any]] | None) -> TableRows:
    """A snapshot marker of shop.extra as the mysql source's snapshot writes it (`ddl` on a start marker)."""
    arrays = [pa.array(["ddl"]), pa.array(["binlog.000001"]), pa.array([6400], pa.int64()), pa.nulls(1, pa.string()),
              pa.array([0], pa.int32()), pa.array(["snapshot:binlog.000001:6400"]), pa.array([1_700_000_000.0]),
              pa.array([1.0])]
    after = pa.array([{"snapshot": what, "table": "shop.extra", "rows": None,
                       "ddl": None if ddl is None else json.dumps(ddl)}], MARKER)
    schema = META_SCHEMA.append(pa.field("before", MARKER)).append(pa.field("after", MARKER))
    return TableRows("shop", "extra", (), pa.RecordBatch.from_arrays([*arrays, pa.nulls(1, MARKER), after],
                                                                    schema=schema))


#: A start marker's statements (`dbus_ray.mysql.snapshot.schema_ddl`) and, for each, what Debezium 3.5 wrote for
#: it in its snapshot (recorded from tests/peer): key databaseName, source db and table, tableChanges.
SNAPSHOT_DDL = [
    {"db": "", "table": "", "sql": "SET character_set_server=utf8mb4, collation_server=utf8mb4_general_ci",
     "change": None},
    {"db": "shop", "table": "extra", "sql": "DROP TABLE IF EXISTS `shop`.`extra`", "change": '{"type":"DROP"}'},
    {"db": "shop", "table": "", "sql": "USE `shop`", "change": None},
    {"db": "shop", "table": "extra", "sql": "CREATE TABLE `extra` (...)", "change": CHANGE},
]
SNAPSHOT_EXPECTED = [
    ("", None, []),
    ("shop", "extra", [{"type": "DROP", "id": '"shop"."extra"', "table": None}]),
    ("shop", None, []),
    ("shop", "extra", DEBEZIUM),
]


def test_snapshot_start_marker_statements_as_debezium_writes_them() -> None:
    ser = DebeziumSerializer(DebeziumOptions(topic_prefix="srv", connector="mariadb",
                                             provide_transaction_metadata=True))
    out = ser.messages(marker_rows("start", SNAPSHOT_DDL), "pipe")
    assert [op for *_, op in out] == ["schema"] * 4  # no transaction message in a snapshot
    for (key, value, headers, _), statement, (db, table, changes) in zip(out, SNAPSHOT_DDL, SNAPSHOT_EXPECTED):
        payload = json.loads(value)["payload"]
        assert json.loads(key)["payload"] == {"databaseName": db} and headers is None
        assert (payload["databaseName"], payload["ddl"], payload["tableChanges"]) == (db, statement["sql"], changes)
        assert {k: payload["source"][k] for k in ("snapshot", "db", "table", "server_id", "gtid", "file", "pos",
                                                  "row", "thread", "query")} == {
            "snapshot": "true", "db": db, "table": table, "server_id": 0, "gtid": None, "file": "binlog.000001",
            "pos": 6400, "row": 0, "thread": None, "query": None}


def test_snapshot_markers_without_statements_or_option_give_no_message() -> None:
    ser = DebeziumSerializer(DebeziumOptions(topic_prefix="srv"))
    assert ser.messages(marker_rows("start", None), "pipe") == []  # (a backfill's start marker)
    assert ser.messages(marker_rows("end", None), "pipe") == []
    off = DebeziumSerializer(DebeziumOptions(topic_prefix="srv", include_schema_changes=False))
    assert off.messages(marker_rows("start", SNAPSHOT_DDL), "pipe") == []
