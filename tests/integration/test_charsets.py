"""Text in other character sets: decoded exactly or refused, never replaced. Expected values from the server's
own SELECT (the client asks for utf8mb4, the server converts), rows read from the binlog."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from dbus_ray.cli import app
from dbus_ray.devstack import MariaDB
from tests.support.helpers import execute, position, table_name

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_session")]

#: column -> (charset, text with non-ASCII characters that charset holds)
COLUMNS = {
    "u2": ("ucs2", "∆˚ø¨´˚∆ƒ¬ß∂µ≤˜π∑ˆ"),
    "u16": ("utf16", "Ab1 äö 𝄞"),
    "u16le": ("utf16le", "Ab1 äö 𝄞"),
    "u32": ("utf32", "Ab1 äö 𝄞"),
    "l2": ("latin2", "Żółć gęślą"),
    "c1251": ("cp1251", "Съешь же ещё"),
    "gk": ("greek", "αβγ ΩΨ"),
}


def run(tmp_path: Path, mariadb: MariaDB, table: str, start: str) -> Any:
    out = tmp_path / "out.jsonl"
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({
        "name": f"cs-{table[-6:]}", "data_dir": str(tmp_path / "data"),
        "source": {"type": "mysql", "dsn": mariadb.dsn, "start": start, "include": [f"dbus_test.{table}"]},
        "sinks": [{"name": "f", "type": "jsonl", "path": str(out)}]}))
    result = CliRunner().invoke(app, ["run", str(path), "--until-caught-up"])
    rows = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    return result, rows


def test_text_in_other_charsets_arrives_as_select_shows_it(tmp_path: Path, mariadb: MariaDB) -> None:
    table = table_name("charsets")
    conn = mariadb.root_connect("dbus_test")
    try:
        cols = ", ".join(f"{c} VARCHAR(40) CHARACTER SET {cs}, t_{c} TEXT CHARACTER SET {cs}"
                         for c, (cs, _) in COLUMNS.items())
        execute(conn, f"CREATE TABLE {table} (id INT PRIMARY KEY, {cols})")
        start = position(conn)
        values = [v for _, v in COLUMNS.values() for _ in (0, 1)]
        execute(conn, f"INSERT INTO {table} VALUES (1, {', '.join(['%s'] * len(values))})", args=values)
        with conn.cursor() as cur:
            cur.execute(f"SELECT * FROM {table}")
            names = [d[0] for d in cur.description]
            expected = dict(zip(names, cur.fetchone()))
    finally:
        conn.close()
    assert expected["u2"] == COLUMNS["u2"][1]  # the server holds the text
    result, rows = run(tmp_path, mariadb, table, start)
    assert result.exit_code == 0, result.output
    assert [r["after"] for r in rows if r["op"] == "insert"] == [expected]


def test_a_charset_without_an_exact_decoder_refuses_its_table_in_one_line(tmp_path: Path) -> None:
    table = table_name("swe7")
    # a server of its own: a refused table in the session server's binlog would stop every reader from `earliest`
    with MariaDB() as own:
        conn = own.root_connect("dbus_test")
        try:
            execute(conn, f"CREATE TABLE {table} (id INT PRIMARY KEY, s VARCHAR(20) CHARACTER SET swe7)")
            start = position(conn)
            execute(conn, f"INSERT INTO {table} VALUES (1, 'Ab1')")
        finally:
            conn.close()
        result, rows = run(tmp_path, own, table, start)
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.output
    assert f"cannot read the table map event of dbus_test.{table}: character set swe7 has no exact decoder" in errors[0]
    assert not [r for r in rows if r["op"] == "insert"], "no row of the refused table may arrive"


def test_a_statement_sent_in_latin1_arrives_as_the_server_holds_it(tmp_path: Path, mariadb: MariaDB) -> None:
    """The binlog keeps a statement in its client's character set: a latin1 `é` is byte 0xE9, not UTF-8."""
    table = table_name("latin1ddl")
    conn = mariadb.root_connect("dbus_test", charset="latin1")
    try:
        start = position(conn)
        execute(conn, f"CREATE TABLE {table} (id INT PRIMARY KEY) COMMENT 'café, señor'")
        with conn.cursor() as cur:
            cur.execute("SELECT TABLE_COMMENT FROM information_schema.TABLES WHERE TABLE_NAME = %s", (table,))
            (comment,) = cur.fetchone()
    finally:
        conn.close()
    assert comment == "café, señor"  # the server holds the text
    result, rows = run(tmp_path, mariadb, table, start)
    assert result.exit_code == 0, result.output
    [ddl] = [r for r in rows if r["op"] == "ddl"]
    assert ddl["after"]["sql"].endswith(f"COMMENT '{comment}'"), ddl["after"]["sql"]
