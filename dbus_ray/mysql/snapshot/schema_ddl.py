"""The statements that describe the snapshotted tables' schema, as Debezium's MySQL/MariaDB connector writes
them to its schema change topic before a snapshot's rows: the server's charset (`SET character_set_server=...,
collation_server=...`), `DROP TABLE IF EXISTS` of every table, then per database `DROP DATABASE IF EXISTS`,
`CREATE DATABASE` with its charset and collation, `USE`, and each table's `SHOW CREATE TABLE`.

The snapshot puts them on the start markers (`ddl`, JSON text: a list of `{"db", "table", "sql", "change"}`,
`change` as a DDL row's, see `dbus_ray.mysql.ddl.DdlLayout`): the first table's marker carries the charset
and every DROP TABLE, the first table of each database its database's statements, and every table its
CREATE TABLE. Read as the snapshot begins (with the tables' columns, before any row)."""

from __future__ import annotations

import json
from typing import Any

from dbus_ray.mysql.schema import table_definition


def quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _statement(db: str, table: str, sql: str, change: dict[str, Any] | None = None) -> dict[str, Any]:
    text = None if change is None else json.dumps(change, separators=(",", ":"), default=str)
    return {"db": db, "table": table, "sql": sql, "change": text}


def snapshot_ddl(conn: Any, tables: list[tuple[str, str]]) -> dict[str, str]:
    """`db.table` -> its start marker's `ddl` (JSON text) for the tables in snapshot order."""
    if not tables:
        return {}
    with conn.cursor() as cur:
        cur.execute("SHOW VARIABLES WHERE Variable_name IN ('character_set_server', 'collation_server')")
        server = dict(cur.fetchall())
        cur.execute("SELECT SCHEMA_NAME, DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME "
                    "FROM information_schema.SCHEMATA")
        locales = {str(db): (cs, coll) for db, cs, coll in cur.fetchall()}
        out: dict[str, list[dict[str, Any]]] = {}
        first = f"{tables[0][0]}.{tables[0][1]}"
        out[first] = [_statement("", "", "SET " + ", ".join(
            f"{name}={server[name]}" for name in ("character_set_server", "collation_server") if name in server))]
        out[first] += [_statement(db, t, f"DROP TABLE IF EXISTS {quote(db)}.{quote(t)}", {"type": "DROP"})
                       for db, t in tables]
        seen: set[str] = set()
        for db, t in tables:
            mine = out.setdefault(f"{db}.{t}", [])
            if db not in seen:
                seen.add(db)
                create = f"CREATE DATABASE {quote(db)}"
                charset, collation = locales.get(db, (None, None))
                if charset:
                    create += f" CHARSET {charset}"
                if collation:
                    create += f" COLLATE {collation}"
                mine += [_statement(db, "", f"DROP DATABASE IF EXISTS {quote(db)}"), _statement(db, "", create),
                         _statement(db, "", f"USE {quote(db)}")]
            cur.execute(f"SHOW CREATE TABLE {quote(db)}.{quote(t)}")
            found = cur.fetchone()
            if found is None:
                continue
            definition = table_definition(cur, db, t) or {}
            mine.append(_statement(db, t, str(found[1]), {"type": "CREATE", **definition}))
    return {name: json.dumps(statements, separators=(",", ":")) for name, statements in out.items()}
