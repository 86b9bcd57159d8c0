"""A snapshot reads text in a charset other than UTF-8 as the binlog decoder does: its stored bytes decoded by
the charset's strict decoder (`dbus_ray.mysql.charsets`). The server's own conversion to the connection's
utf8mb4 sends a stored byte that has no character in the column's charset as `?` (or U+FFFD), silently: such a value
stops the snapshot with one line naming the table, the column and the byte (as the stream stops on it),
and text that has characters arrives as the server's `CONVERT(... USING utf8mb4)` shows it and as the
stream gives it, CHAR's trailing spaces gone, through a text key's keyset pages and a parallel snapshot's
key ranges."""

from __future__ import annotations

import json
from typing import Any

import pytest

from dbus_ray.errors import DbusError
from dbus_ray.mysql.charsets import codec_of, decode_text
from dbus_ray.mysql.source import MysqlOptions, MysqlSource
from tests.support.helpers import drain, execute, own_mariadb, position, table_name

pytestmark = pytest.mark.integration

DB = "dbus_test"
#: its own server: the bytes without a character it stores would stop another test's source reading the
#: shared server's binlog from its start
mariadb, root = own_mariadb()

#: (charset, column type, stored bytes (hex), the bytes the strict decoder refuses (as the error names them))
UNDEFINED = [
    ("cp1256", "CHAR(8)", "41208A", "byte 0x8a"),
    ("cp1256", "VARCHAR(8)", "FF41", "byte 0xff"),
    ("greek", "TEXT", "41AA42", "byte 0xaa"),
    ("dec8", "MEDIUMTEXT", "A4", "byte 0xa4"),
    ("geostd8", "VARCHAR(8)", "4181", "byte 0x81"),
    ("big5", "VARCHAR(8)", "41A15A", "bytes 0xa1 0x5a"),
]

#: charset -> text the server converts into it (besides every single byte it defines, for single-byte ones)
SAMPLES = {
    "latin1": "café €ÿ",
    "cp1256": "مرحبا گ",
    "koi8r": "Привет",
    "greek": "Γειά σου",
    "sjis": "日本語テキスト",
    "big5": "中文繁體字",
    "euckr": "한국어 텍스트",
    "ucs2": "héllo € ☃",
    "utf32": "héllo 😀",
}


def source(mariadb: Any, t: str, **options: Any) -> MysqlSource:
    return MysqlSource("snap-cs", MysqlOptions(dsn=mariadb.dsn, server_id=7431, include=[f"{DB}.{t}"], **options))


def afters(src: MysqlSource, op: str, parallel: bool = False) -> dict[int, dict[str, Any]]:
    """The after images of `op` rows of a source run until caught up, by id."""
    if parallel:
        from dbus_ray.actors.snapshot_worker import WorkerPool

        src.worker_pool = WorkerPool
    src.open(None)
    try:
        rows = [json.loads(c.to_json()) for b in drain(src, max_rows=7) for c in b.changes()]
    finally:
        src.close()
    return {r["after"]["id"]: r["after"] for r in rows if r["op"] == op}


@pytest.mark.parametrize(("charset", "column_type", "stored", "refused"), UNDEFINED)
def test_a_byte_without_a_character_stops_the_snapshot_in_one_line(mariadb: Any, root: Any, charset: str,
                                                                  column_type: str, stored: str, refused: str) -> None:
    t = table_name("snap_undef")
    execute(root, f"CREATE TABLE {t} (id INT PRIMARY KEY, x {column_type} CHARACTER SET {charset})",
            f"INSERT INTO {t} VALUES (1, 'ok'), (2, X'{stored}'), (3, NULL)")
    with root.cursor() as cur:
        cur.execute(f"SELECT HEX(x), CONVERT(x USING utf8mb4) FROM {t} WHERE id = 2")
        held, converted = cur.fetchone()
    assert held == stored  # the server keeps the bytes ...
    assert "?" in converted or "\ufffd" in converted  # ... its conversion to utf8mb4 replaces the undefined
    with pytest.raises(UnicodeDecodeError):  # the binlog decoder refuses it
        decode_text(bytes.fromhex(stored), codec_of(charset, None))

    with pytest.raises(DbusError) as caught:
        afters(source(mariadb, t, snapshot="initial"), "read")
    msg = str(caught.value)
    assert "\n" not in msg
    assert msg.startswith(f"snapshot of {DB}.{t}: column x: a stored value in the row with key id=2 holds {refused} "
                          "(at byte "), msg
    assert f"no character in the column's character set {charset}" in msg, msg


def test_an_undefined_byte_in_a_text_key_stops_serial_and_parallel_snapshots(mariadb: Any, root: Any,
                                                                             ray_session: None) -> None:
    """The key's bad byte stops the chunking (its bounds are decoded too) and the keyset pages."""
    t = table_name("snap_undef_key")
    execute(root, f"CREATE TABLE {t} (k VARCHAR(8) CHARACTER SET cp1256 PRIMARY KEY, id INT)",
            f"INSERT INTO {t} SELECT CONCAT('k', LPAD(seq, 3, '0')), seq FROM seq_1_to_20",
            f"INSERT INTO {t} VALUES (X'6B8A', 21)")
    for parallel in (False, True):
        with pytest.raises(DbusError) as caught:
            afters(source(mariadb, t, snapshot="initial", chunk_rows=3, snapshot_parallelism=2 if parallel else 1),
                   "read", parallel)
        msg = str(caught.value)
        assert "\n" not in msg and msg.startswith(f"snapshot of {DB}.{t}: column k: a stored value"), (parallel, msg)
        assert "holds byte 0x8a (at byte 1), which has no character in the column's character set cp1256" in msg, msg


def every_byte(cur: Any, charset: str) -> bytes:
    """The bytes 0x20..0xFF the server converts from `charset` to one character other than `?`."""
    candidates = [bytes([b]) for b in range(0x20, 0x100)]
    cur.execute("SELECT " + ", ".join(
        f"CONVERT(CAST(X'{b.hex()}' AS CHAR CHARACTER SET {charset}) USING utf8mb4)" for b in candidates))
    return b"".join(b for b, text in zip(candidates, cur.fetchone()) if len(text) == 1 and text != "?")


@pytest.mark.parametrize("charset", list(SAMPLES))
def test_defined_text_arrives_as_the_servers_conversion_and_as_the_stream(mariadb: Any, root: Any,
                                                                          ray_session: None, charset: str) -> None:
    t = table_name(f"snap_cs_{charset}")
    typ = f"CHARACTER SET {charset}"
    execute(root, f"CREATE TABLE {t} (k VARCHAR(24) {typ} PRIMARY KEY, id INT NOT NULL, c CHAR(12) {typ}, "
                  f"v VARCHAR(300) {typ}, x TEXT {typ})")
    start = position(root)
    sample = SAMPLES[charset]
    texts = [sample, f"{sample}  ", f"  {sample}", "a  ", "", None, "Zz", sample[::-1]]
    rows = [(f"{'aB'[i % 2]}{sample[i % len(sample)]}{i:03d}", i, text, text, text) for i, text in enumerate(texts * 3)]
    with root.cursor() as cur:
        cur.executemany(f"INSERT INTO {t} VALUES (%s, %s, %s, %s, %s)", rows)
        if charset in ("latin1", "cp1256", "koi8r", "greek"):  # every byte with a character, as stored
            raw = every_byte(cur, charset)
            cur.execute(f"INSERT INTO {t} VALUES ('zz', 100, X'{raw[:12].hex()}', X'{raw.hex()}', X'{raw.hex()}')")
        cur.execute(f"SELECT id, CONVERT(k USING utf8mb4), CONVERT(c USING utf8mb4), CONVERT(v USING utf8mb4), "
                    f"CONVERT(x USING utf8mb4) FROM {t}")
        expected = {i: {"k": k, "id": i, "c": c, "v": v, "x": x} for i, k, c, v, x in cur.fetchall()}
    assert expected[1]["c"] == sample and expected[3]["v"] == "a  " and expected[3]["c"] == "a"  # CHAR: no pad
    assert all("?" not in str(r) for r in expected.values()), expected  # every character defined

    streamed = afters(source(mariadb, t, start=start), "insert")
    serial = afters(source(mariadb, t, snapshot="initial", chunk_rows=3), "read")
    parallel = afters(source(mariadb, t, snapshot="initial", chunk_rows=3, snapshot_parallelism=2), "read", True)
    assert streamed == expected
    assert serial == expected
    assert parallel == expected
