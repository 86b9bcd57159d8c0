"""The postgres sink's type mapping and the DDL it follows (`dbus_ray.sinks.postgres_types`), against the
table in its docstring and MySQL statements written out by hand."""

from __future__ import annotations

import pyarrow as pa
import pytest

from dbus_ray.sinks.postgres_types import alter_actions, compatible, pg_type


@pytest.mark.parametrize(("arrow", "pg"), [
    (pa.int8(), "smallint"), (pa.uint8(), "smallint"), (pa.int16(), "smallint"), (pa.uint16(), "integer"),
    (pa.int32(), "integer"), (pa.uint32(), "bigint"), (pa.int64(), "bigint"), (pa.uint64(), "numeric(20,0)"),
    (pa.decimal128(12, 3), "numeric(12,3)"), (pa.decimal256(65, 30), "numeric(65,30)"), (pa.float32(), "real"),
    (pa.float64(), "double precision"), (pa.string(), "text"), (pa.binary(), "bytea"),
    (pa.duration("us"), "interval"), (pa.bool_(), "boolean"), (pa.date32(), "date"),
    (pa.timestamp("us", "UTC"), "timestamp with time zone"),
])
def test_type_mapping(arrow: pa.DataType, pg: str) -> None:
    assert pg_type(arrow, "db.t.c") == pg


def test_unmapped_type_names_the_column() -> None:
    with pytest.raises(ValueError, match=r"column db\.t\.c: no PostgreSQL type for Arrow type list<item: int64>"):
        pg_type(pa.list_(pa.int64()), "db.t.c")


@pytest.mark.parametrize(("mapped", "existing", "ok"), [
    ("smallint", "bigint", True), ("bigint", "integer", False), ("bigint", "numeric", True),
    ("numeric(20,0)", "numeric(22,0)", True), ("numeric(20,0)", "numeric(20,2)", False),
    ("numeric(12,3)", "numeric(14,4)", True), ("numeric(12,3)", "numeric(12,2)", False),
    ("text", "character varying(10)", True), ("text", "jsonb", True), ("text", "integer", False),
    ("real", "double precision", True), ("double precision", "real", False), ("bytea", "bytea", True),
])
def test_compatible(mapped: str, existing: str, ok: bool) -> None:
    assert compatible(mapped, existing) is ok


@pytest.mark.parametrize(("sql", "actions"), [
    ("ALTER TABLE t ADD COLUMN c INT UNSIGNED NOT NULL DEFAULT 7 AFTER b",
     [("add", "c", "bigint", "7")]),
    ("alter table `db`.`t` add `c d` varchar(10) default 'it''s', drop column x",
     [("add", "c d", "text", "'it''s'"), ("drop", "x", None, None)]),
    ("ALTER TABLE t ADD c DECIMAL(8,2), ADD INDEX i (c), ALGORITHM=INPLACE", [("add", "c", "numeric(8,2)", None)]),
    ("ALTER TABLE t DROP x", [("drop", "x", None, None)]),
    ("CREATE TABLE t (id INT PRIMARY KEY)", []),
    ("CREATE INDEX i ON t (c)", []),
    ("CREATE DATABASE shop2", []),
    ("CREATE OR REPLACE VIEW v AS SELECT 1", []),
    ("ALTER TABLE t ALTER COLUMN c SET DEFAULT 3, COMMENT 'x', ENGINE=InnoDB", []),
    ("ALTER TABLE t RENAME INDEX a TO b, FORCE", []),
    ("ALTER TABLE t CONVERT TO CHARACTER SET latin1", None),
    ("DROP DATABASE shop", None),
    ("ALTER TABLE t MODIFY c BIGINT", None),
    ("ALTER TABLE t CHANGE c d INT", None),
    ("ALTER TABLE t ADD c DATETIME DEFAULT CURRENT_TIMESTAMP", None),
    # existing rows: MySQL fills a NOT NULL column added without a DEFAULT with its implicit one
    ("ALTER TABLE t ADD c INT NOT NULL, ADD d VARCHAR(5) NOT NULL, ADD e DECIMAL(5,2) NOT NULL",
     [("add", "c", "integer", "0"), ("add", "d", "text", "''"), ("add", "e", "numeric(5,2)", "0")]),
    ("ALTER TABLE t ADD c DATE NOT NULL", None),  # its zero date: not followed
    ("ALTER TABLE t ADD c ENUM('x','y') NOT NULL", None),  # its first member: not followed
    ("ALTER TABLE t ADD c INT NULL, ADD d DATE DEFAULT '2024-02-29'", [("add", "c", "integer", None),
                                                                       ("add", "d", "text", "'2024-02-29'")]),
    ("ALTER TABLE t ADD c DATE DEFAULT '0000-00-00'", None),
    ("ALTER TABLE t ADD c DATETIME DEFAULT '2024-01-01 00:00:00'", None),  # not the stream's text
    ("ALTER TABLE t ADD c INT AS (a + 1) VIRTUAL", None),  # MySQL computes it for the existing rows
    ("ALTER TABLE t ADD c INT GENERATED ALWAYS AS (a * 2) STORED", None),
    ("ALTER TABLE t DROP PRIMARY KEY", None),
    ("ALTER TABLE t ADD PRIMARY KEY (a)", None),
    ("ALTER TABLE t RENAME TO u", None),
    ("RENAME TABLE t TO u", None),
    ("TRUNCATE t", None),
    ("DROP TABLE t", None),
])
def test_alter_actions(sql: str, actions: list | None) -> None:
    assert alter_actions(sql) == actions
