"""Text in every character set the server lists (`SHOW CHARACTER SET`): CHAR, VARCHAR, TEXT, TEXT COMPRESSED,
ENUM and SET columns arrive as the server's own SELECT shows them (the client asks for utf8mb4, the server
converts), from the binlog, from a binlog with log_bin_compress=ON and from a snapshot. The text of each
charset is every character the server defines in it (single-byte: every byte; two- and three-byte charsets:
every sequence the server converts to one character; Unicode charsets: a spread of code points): the server
is the oracle, the expected values are its SELECT."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pymysql
import pytest
import yaml
from typer.testing import CliRunner

from dbus_ray.cli import app
from dbus_ray.devstack import MariaDB
from tests.support.helpers import execute, position, table_name

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_session")]

UNSAFE_MEMBER = set("'\\,\"` ")  # kept out of ENUM/SET members (quoting, the SET separator, trimmed spaces)


def defined(cur: Any, cs: str, sequences: list[bytes]) -> list[bytes]:
    """The sequences a `cs` column stores as they are (some the server converts are not well-formed for it)
    and the server converts from `cs` to exactly one character (not `?` or U+FFFD unless the sequence is `?`
    itself)."""
    converted = []
    for i in range(0, len(sequences), 200):
        group = sequences[i : i + 200]
        cur.execute("SELECT " + ", ".join(
            f"CONVERT(CAST(UNHEX('{s.hex()}') AS CHAR CHARACTER SET {cs}) USING utf8mb4)" for s in group))
        for s, text in zip(group, cur.fetchone()):
            if len(text) == 1 and (text not in "?\ufffd" or s == b"?"):
                converted.append(s)
    cur.execute("SET SESSION sql_log_bin = 0")  # a scratch table, out of the binlog
    cur.execute(f"CREATE TEMPORARY TABLE probe_{cs} (i INT PRIMARY KEY, x VARCHAR(4) CHARACTER SET {cs})")
    try:
        for i in range(0, len(converted), 500):
            cur.execute(f"INSERT IGNORE INTO probe_{cs} VALUES " + ", ".join(
                f"({i + j}, CAST(UNHEX('{s.hex()}') AS CHAR CHARACTER SET {cs}))"
                for j, s in enumerate(converted[i : i + 500])))
        cur.execute(f"SELECT i, HEX(x) FROM probe_{cs}")
        stored = {i: bytes.fromhex(h) for i, h in cur.fetchall()}
    finally:
        cur.execute(f"DROP TEMPORARY TABLE probe_{cs}")
        cur.execute("SET SESSION sql_log_bin = 1")
    return [s for i, s in enumerate(converted) if stored.get(i) == s]


def charset_bytes(cur: Any, cs: str, maxlen: int) -> bytes:
    """Every character the server defines in `cs` (a spread of code points for the Unicode charsets), as
    bytes in `cs`, printable ASCII first."""
    if cs in ("utf8mb3", "utf8mb4", "ucs2", "utf16", "utf16le", "utf32"):
        top = 0x10FFFF if cs not in ("utf8mb3", "ucs2") else 0xFFFF
        points = [p for p in range(0xA0, top, 97 if top == 0xFFFF else 1009) if not 0xD800 <= p < 0xE000]
        text = "".join(chr(p) for p in range(0x21, 0x7F)) + "".join(chr(p) for p in points)
        cur.execute(f"SELECT HEX(CONVERT(%s USING {cs}))", (text,))
        return bytes.fromhex(cur.fetchone()[0])
    if maxlen == 1:
        return b"".join(defined(cur, cs, [bytes([b]) for b in range(0x21, 0x100)]))
    sequences = [bytes([b]) for b in range(0x21, 0x7F)]
    sequences += [bytes([lead, trail]) for lead in range(0x81, 0xFF) for trail in range(0x40, 0xFF)]
    if cs in ("ujis", "eucjpms"):
        sequences += [bytes([0x8F, b, c]) for b in range(0xA1, 0xFF) for c in range(0xA1, 0xFF)]
    return b"".join(defined(cur, cs, sequences))


def members(text: str) -> tuple[str, str]:
    """Two ENUM/SET members of three non-ASCII characters each (from the server's own conversion; ascii has
    none: letters)."""
    chars = [c for c in dict.fromkeys(text) if ord(c) > 0x7F and c not in UNSAFE_MEMBER and c.isprintable()]
    if not chars:
        chars = list("bcdefg")
    assert len(chars) >= 6, chars
    return "".join(chars[:3]), "".join(chars[3:6])


def build(conn: Any) -> tuple[list[str], dict[str, int]]:
    """One table per charset (rows inserted by `fill`): their names, and the charset's characters per table."""
    tables, sizes = [], {}
    with conn.cursor() as cur:
        cur.execute("SHOW CHARACTER SET")
        charsets = [(r[0], int(r[3])) for r in cur.fetchall() if r[0] != "binary"]
        for cs, maxlen in charsets:
            cur.execute("SELECT COLLATION_NAME FROM information_schema.COLLATIONS WHERE CHARACTER_SET_NAME = %s "
                        "AND COLLATION_NAME LIKE '%%\\_bin' ORDER BY ID LIMIT 1", (cs,))
            (collation,) = cur.fetchone()
            raw = charset_bytes(cur, cs, maxlen)
            cur.execute(f"SELECT CONVERT(CAST(UNHEX('{raw.hex()}') AS CHAR CHARACTER SET {cs}) USING utf8mb4)")
            (text,) = cur.fetchone()
            m1, m2 = members(text)
            table = table_name(f"cs_{cs}")
            typ = f"CHARACTER SET {cs} COLLATE {collation}"
            cur.execute(
                f"CREATE TABLE {table} (id INT PRIMARY KEY, c CHAR(40) {typ}, v VARCHAR(40) {typ}, t MEDIUMTEXT {typ}, "
                f"z TEXT COMPRESSED {typ}, e ENUM('a1', '{m1}', '{m2}') {typ}, s SET('a1', '{m1}', '{m2}') {typ})")
            tables.append(table)
            sizes[table] = len(text)
            FILLS[table] = (
                f"SET @raw = CAST(UNHEX('{raw.hex()}') AS CHAR CHARACTER SET {cs})",
                f"INSERT INTO {table} VALUES (1, LEFT(@raw, 40), RIGHT(@raw, 40), @raw, @raw, '{m2}', '{m1},{m2}'), "
                f"(2, 'Ab1', 'Ab1', '', LEFT(@raw, 3), 'a1', ''), (3, NULL, NULL, NULL, NULL, NULL, NULL)")
    return tables, sizes


FILLS: dict[str, tuple[str, str]] = {}  # table -> its statements (the text in @raw, the rows)


def select_all(conn: Any, tables: list[str]) -> dict[tuple[str, int], dict[str, Any]]:
    out = {}
    with conn.cursor(pymysql.cursors.DictCursor) as cur:
        for table in tables:
            cur.execute(f"SELECT * FROM {table}")
            for row in cur.fetchall():
                out[(table, row["id"])] = row
    return out


def workload(server: MariaDB) -> tuple[str, list[str], dict[str, int], dict[tuple[str, int], dict[str, Any]]]:
    """The tables on `server`: (position before their rows, tables, characters per table, rows as SELECT
    shows them)."""
    conn = server.root_connect("dbus_test", charset="utf8mb4")
    try:
        FILLS.clear()
        tables, sizes = build(conn)
        start = position(conn)
        with conn.cursor() as cur:
            for table in tables:
                for sql in FILLS[table]:
                    cur.execute(sql)
        return start, tables, sizes, select_all(conn, tables)
    finally:
        conn.close()


def run_cli(tmp_path: Path, server: MariaDB, name: str, tables: list[str], **source: Any) -> tuple[Any, list[Any]]:
    """(the CLI's result, the rows of the jsonl sink) of a pipeline run until caught up."""
    out = tmp_path / f"{name}.jsonl"
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        "name": name, "data_dir": str(tmp_path / f"data-{name}"),
        "source": {"type": "mysql", "dsn": server.dsn, "include": [f"dbus_test.{t}" for t in tables], **source},
        "sinks": [{"name": "f", "type": "jsonl", "path": str(out)}]}))
    result = CliRunner().invoke(app, ["run", str(path), "--until-caught-up"])
    # lines end at "\n" only: str.splitlines() would also cut at U+0085, U+2028, ... inside the text
    text = out.read_text(encoding="utf-8") if out.exists() else ""
    return result, [json.loads(line) for line in text.split("\n") if line]


def run(tmp_path: Path, server: MariaDB, name: str, tables: list[str], **source: Any) -> list[dict[str, Any]]:
    result, rows = run_cli(tmp_path, server, name, tables, **source)
    assert result.exit_code == 0, result.output
    return rows


def check(rows: list[dict[str, Any]], op: str, expected: dict[tuple[str, int], dict[str, Any]]) -> None:
    got = {(r["table"], r["after"]["id"]): r["after"] for r in rows if r["op"] == op}
    assert set(got) == set(expected)
    for key, want in expected.items():
        for col, value in want.items():
            assert got[key][col] == value, f"{key} column {col}: {got[key][col]!r} != SELECT's {value!r}"


@pytest.mark.parametrize("mode", ["binlog", "snapshot", "compressed-binlog"])
def test_every_charset_arrives_as_select_shows_it(mode: str, tmp_path: Path, mariadb: MariaDB,
                                                  request: pytest.FixtureRequest) -> None:
    server = request.getfixturevalue("compressed") if mode == "compressed-binlog" else mariadb
    start, tables, sizes, expected = workload(server)
    assert len(tables) >= 39 and min(sizes.values()) >= 40, sizes  # every charset, with text to show
    assert expected[(tables[0], 2)]["e"] == "a1"
    began = time.monotonic()
    if mode == "snapshot":
        rows = run(tmp_path, server, "cs-snap", tables, snapshot="initial")
        check(rows, "read", expected)
    else:
        rows = run(tmp_path, server, f"cs-{mode}", tables, start=start)
        check(rows, "insert", expected)
    print(f"{mode}: {len(tables)} charsets, {sum(sizes.values())} characters, {len(expected)} rows, "
          f"pipeline {time.monotonic() - began:.1f} s")


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
    rows = run(tmp_path, mariadb, "cs-ddl", [table], start=start)
    [ddl] = [r for r in rows if r["op"] == "ddl"]
    assert ddl["after"]["sql"].endswith(f"COMMENT '{comment}'"), ddl["after"]["sql"]


def test_enum_without_member_names_in_the_binlog_refuses_its_table_in_one_line(tmp_path: Path,
                                                                              compressed: MariaDB) -> None:
    """binlog_row_metadata=MINIMAL leaves ENUM/SET member names out of TABLE_MAP events: the values cannot be
    told, so the table stops the pipeline (they used to arrive as "")."""
    table = table_name("enum_minimal")
    conn = compressed.root_connect("dbus_test")
    try:
        execute(conn, f"CREATE TABLE {table} (id INT PRIMARY KEY, e ENUM('a', 'b'))",
                "SET GLOBAL binlog_row_metadata = 'MINIMAL'")
        start = position(conn)
        execute(conn, f"INSERT INTO {table} VALUES (1, 'b')")
    finally:
        execute(conn, "SET GLOBAL binlog_row_metadata = 'FULL'")
        conn.close()
    result, rows = run_cli(tmp_path, compressed, "cs-minimal", [table], start=start, schema_history=True)
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert result.exit_code == 1 and len(errors) == 1, result.output
    assert f"cannot read the table map event of dbus_test.{table}: column e is an ENUM/SET whose member names " \
           "the binlog does not carry: set binlog_row_metadata=FULL" in errors[0], errors[0]
    assert not [r for r in rows if r["op"] == "insert"]
