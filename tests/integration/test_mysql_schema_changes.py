"""Online schema changes against the real MariaDB: gh-ost and pt-online-schema-change simulated by hand
with their SQL (shadow table, row copy, writes to both, atomic cut-over rename). The stream holds only the
table's own rows, with the old columns before the cut-over and the new ones after it, and the shadow
tables' rows are never decoded."""

from __future__ import annotations

import json
from typing import Any

import pytest

from dbus_ray.mysql.ddl import renamed_tables
from dbus_ray.mysql.source import MysqlOptions, MysqlSource
from tests.support.helpers import decoded_tables, drain, execute, position, table_name

pytestmark = pytest.mark.integration

DB = "dbus_test"


def read(mariadb: Any, start: str, **options: Any) -> list[dict[str, Any]]:
    src = MysqlSource("osc-test", MysqlOptions(dsn=mariadb.dsn, server_id=7301, start=start, **options))
    src.open(None)
    try:
        return [json.loads(c.to_json()) for b in drain(src) for c in b.changes()]
    finally:
        src.close()


def online_alter(root: Any, t: str, tool: str) -> None:
    """What gh-ost (or pt-osc) sends to the server to add column `b` to `t`, by hand."""
    new, old = (f"_{t}_gho", f"_{t}_del") if tool == "gh-ost" else (f"_{t}_new", f"_{t}_old")
    statements = [f"CREATE TABLE `{new}` LIKE `{t}`", f"ALTER TABLE `{new}` ADD COLUMN b INT NULL"]
    if tool == "gh-ost":
        statements += [
            f"CREATE TABLE `_{t}_ghc` (id BIGINT AUTO_INCREMENT PRIMARY KEY, hint VARCHAR(64), value TEXT)",
            f"INSERT INTO `_{t}_ghc` (hint, value) VALUES ('state', 'GhostTableMigrated')",
        ]
    statements += [
        f"INSERT INTO `{new}` (id, a) SELECT id, a FROM `{t}`",  # row copy
        "BEGIN",  # a write during the migration: to the table and (binlog applier / trigger) to the shadow
        f"INSERT INTO `{t}` VALUES (3, 'c')",
        f"INSERT INTO `{new}` (id, a) VALUES (3, 'c')",
        "COMMIT",
        f"UPDATE `{t}` SET a = 'bb' WHERE id = 2",
        f"UPDATE `{new}` SET a = 'bb' WHERE id = 2",
    ]
    if tool == "gh-ost":  # gh-ost's own cut-over statement, comment included
        statements.append(f"rename /* gh-ost */ table `{DB}`.`{t}` to `{DB}`.`{old}`, `{DB}`.`{new}` to `{DB}`.`{t}`")
    else:
        statements.append(f"RENAME TABLE `{DB}`.`{t}` TO `{DB}`.`{old}`, `{DB}`.`{new}` TO `{DB}`.`{t}`")
    statements += [f"INSERT INTO `{t}` VALUES (4, 'd', 40)", f"DROP TABLE IF EXISTS `{old}`"]
    if tool == "gh-ost":
        statements.append(f"DROP TABLE IF EXISTS `_{t}_ghc`")
    execute(root, *statements)


@pytest.mark.parametrize("tool", ["gh-ost", "pt-osc"])
def test_online_schema_change_keeps_the_table_name_and_skips_shadow_tables(
    mariadb: Any, root: Any, monkeypatch: Any, tool: str
) -> None:
    t = table_name("osc")
    execute(root, f"CREATE TABLE {t} (id INT PRIMARY KEY, a VARCHAR(10))")
    start = position(root)
    execute(root, f"INSERT INTO {t} VALUES (1, 'a'), (2, 'b')")
    online_alter(root, t, tool)
    decoded = decoded_tables(monkeypatch)
    rows = [r for r in read(mariadb, start) if t in r["table"]]
    assert {r["table"] for r in rows} == {t}, [(r["table"], r["op"]) for r in rows]
    assert set(decoded) == {t}
    assert [r["op"] for r in rows] == ["insert", "insert", "insert", "update", "ddl", "insert"]
    assert [r["after"] for r in rows[:3]] == [{"id": 1, "a": "a"}, {"id": 2, "a": "b"}, {"id": 3, "a": "c"}]
    assert rows[3]["before"] == {"id": 2, "a": "b"} and rows[3]["after"] == {"id": 2, "a": "bb"}
    assert rows[4]["after"]["sql"].lower().startswith("rename") and rows[4]["db"] == DB
    assert rows[5]["after"] == {"id": 4, "a": "d", "b": 40}
    assert rows[5]["key"] == {"id": 4}


def test_shadow_tables_are_read_when_asked(mariadb: Any, root: Any) -> None:
    t = table_name("oscon")
    execute(root, f"CREATE TABLE {t} (id INT PRIMARY KEY, a VARCHAR(10))")
    start = position(root)
    execute(root, f"INSERT INTO {t} VALUES (1, 'a'), (2, 'b')")
    online_alter(root, t, "gh-ost")
    rows = [r for r in read(mariadb, start, skip_osc_tables=False) if t in r["table"]]
    tables = [(r["table"], r["op"]) for r in rows]
    assert (f"_{t}_gho", "insert") in tables and (f"_{t}_ghc", "insert") in tables
    assert (f"_{t}_gho", "ddl") in tables  # its CREATE and ALTER
    assert [r["op"] for r in rows if r["table"] == t] == ["insert", "insert", "insert", "update", "ddl", "insert"]


def test_renamed_tables_parsing() -> None:
    assert renamed_tables("rename /* gh-ost */ table `d`.`t` to `d`.`_t_del`, `d`.`_t_gho` to `d`.`t`", "x") == [
        ("d", "t"), ("d", "_t_del"), ("d", "_t_gho"), ("d", "t")
    ]
    assert renamed_tables("RENAME TABLE t TO _t_old, _t_new TO t", "d") == [
        ("d", "t"), ("d", "_t_old"), ("d", "_t_new"), ("d", "t")
    ]
    assert renamed_tables("ALTER TABLE t ADD x INT", "d") == []
