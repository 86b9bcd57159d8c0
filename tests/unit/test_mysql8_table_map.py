"""MySQL 8 TABLE_MAP optional metadata as MySQL writes it (libs/mysql/binlog/event/rows_event.h: SIGNEDNESS,
DEFAULT_CHARSET/COLUMN_CHARSET, COLUMN_NAME, SET/ENUM_STR_VALUE, SIMPLE_PRIMARY_KEY/PRIMARY_KEY_WITH_PREFIX,
ENUM_AND_SET_DEFAULT_CHARSET/ENUM_AND_SET_COLUMN_CHARSET, COLUMN_VISIBILITY), written by the test writer, read by our
stream (table definitions through `dbus_ray.mysql.schema`) and by stock python-mysql-replication: unsigned values,
charsets, ENUM/SET members and the primary key (in the key's order, not the columns') agree; and MySQL's GTID
events (GTID_LOG_EVENT with the 8.0 commit timestamps, ANONYMOUS_GTID_LOG_EVENT, PREVIOUS_GTIDS_LOG_EVENT)."""

from __future__ import annotations

from typing import Any

import pytest

from dbus_ray.mysql import events as et
from dbus_ray.mysql.offset import BinlogOffset
from tests.support import mysql8_binlog as w
from tests.support.mysql8_stream import SERVER_UUID, open_stream, read_all, stock_events

TABLE_ID = 5
LATIN1, UTF8MB4 = 8, 255
COLS = [
    w.col_long("a", unsigned=True),
    w.col_varchar("b", 40, collation=LATIN1),
    w.col_tiny("c"),
    w.col_varchar("d", 400, collation=UTF8MB4),
    w.col_longlong("e", unsigned=True),
    w.col_enum("f", ("small", "large")),
    w.col_set("g", ("x", "y", "z")),
    w.col_long("h", visible=False),  # an INVISIBLE column: still in every row image
]
ROWS = [
    [4294967295, "café", -128, "日本語", 18446744073709551615, "large", "x,z", 7],
    [0, "", 127, "", 0, "small", "", -1],
]
EXPECTED = [dict(zip([c.name for c in COLS], r)) for r in ROWS]


def binlog(**table_map_options: Any) -> bytes:
    f = w.BinlogFile()
    f.add(w.GTID_LOG_EVENT, w.gtid_body(SERVER_UUID, 3, commit_us=1_715_862_439_742_844,
                                        original_commit_us=1_715_862_000_000_000, transaction_length=300))
    f.add(w.QUERY_EVENT, w.query_body("BEGIN"))
    f.add(w.TABLE_MAP_EVENT, w.table_map_body(TABLE_ID, "shop", "wide", COLS, **table_map_options))
    f.add(w.WRITE_ROWS, w.rows_body(TABLE_ID, len(COLS), b"".join(w.row_image(COLS, r) for r in ROWS)))
    f.add(w.XID_EVENT, w.xid_body(9))
    f.add(w.ANONYMOUS_GTID_LOG_EVENT, w.gtid_body(None, 0, last_committed=1, sequence_number=2))
    f.add(w.QUERY_EVENT, w.query_body("BEGIN"))
    f.add(w.TABLE_MAP_EVENT, w.table_map_body(TABLE_ID, "shop", "wide", COLS, **table_map_options))
    f.add(w.DELETE_ROWS, w.rows_body(TABLE_ID, len(COLS), w.row_image(COLS, ROWS[1])))
    f.add(w.XID_EVENT, w.xid_body(10))
    return f.bytes()


FORMS = {
    "per-column charsets, key (d, a)": dict(primary_key=(3, 0)),
    "default charsets, key (d, a)": dict(primary_key=(3, 0), default_charsets=True),
    "key with a prefix on d": dict(primary_key=(3, 0), key_prefixes={3: 10}),
}


@pytest.mark.parametrize("form", list(FORMS))
def test_ours_and_stock_agree_on_every_value(monkeypatch: pytest.MonkeyPatch, form: str) -> None:
    data = binlog(**FORMS[form])
    rows = read_all(open_stream(monkeypatch, {"binlog.000001": data}, BinlogOffset("binlog.000001", 4)))
    assert [(r["op"], r["before"], r["after"]) for r in rows] == [
        ("insert", None, EXPECTED[0]), ("insert", None, EXPECTED[1]), ("delete", EXPECTED[1], None)]
    stock = [e for e in stock_events(data) if type(e).__name__ in ("WriteRowsEvent", "DeleteRowsEvent")]
    stock_values = [r["values"] for e in stock for r in e.rows]
    for ours, theirs in zip([EXPECTED[0], EXPECTED[1], EXPECTED[1]], stock_values):
        for name, value in ours.items():
            if name == "g":  # stock: a set of members (None when empty)
                assert (theirs[name] or set()) == set(filter(None, value.split(",")))
            else:
                assert theirs[name] == value, name


@pytest.mark.parametrize("form", list(FORMS))
def test_the_primary_key_is_in_the_key_order(monkeypatch: pytest.MonkeyPatch, form: str) -> None:
    """PRIMARY KEY (d, a): the rows' key is (d, a) as SIMPLE_PRIMARY_KEY/PRIMARY_KEY_WITH_PREFIX list it (stock
    gives the key columns in table order, and none for a prefix key)."""
    stream = open_stream(monkeypatch, {"binlog.000001": binlog(**FORMS[form])}, BinlogOffset("binlog.000001", 4))
    got = stream.read(10)
    assert got is not None
    assert {part.key for part in got[0]} == {("d", "a")}


def test_column_charsets_and_signedness_reach_the_layout(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = open_stream(monkeypatch, {"binlog.000001": binlog(primary_key=(0,), default_charsets=True)},
                         BinlogOffset("binlog.000001", 4))
    assert stream.read(10) is not None
    (layout,) = {entry[2] for entry in stream.schema.map_cache.values()}
    by_name = {c.name: c for c in layout.columns}
    assert [by_name[n].unsigned for n in "acegh" if n in by_name] == [True, False, True, False, False]
    assert by_name["b"].charset == "mysql-latin1" and by_name["d"].charset == "utf-8"
    assert by_name["f"].members == ("small", "large") and by_name["g"].members == ("x", "y", "z")


def test_gtid_events_as_mysql_writes_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """GTID_LOG_EVENT (8.0 layout, with differing original/immediate commit timestamps and a transaction length)
    gives the rows' GTID; ANONYMOUS_GTID_LOG_EVENT carries no row change; PREVIOUS_GTIDS_LOG_EVENT (no row
    change either) is read for the executed GTID set where a file starts."""
    assert et.EVENT_TYPES[33].kind == et.EVENT_TYPES[35].kind == et.DECODED
    assert et.EVENT_TYPES[34].kind == et.IGNORED
    data = binlog(primary_key=(0,))
    rows = read_all(open_stream(monkeypatch, {"binlog.000001": data}, BinlogOffset("binlog.000001", 4)))
    assert [r["gtid"] for r in rows] == [f"{SERVER_UUID}:3"] * 2 + [None]
    stock_gtids = [e for e in stock_events(data) if type(e).__name__ == "GtidEvent"]
    assert [g.gtid for g in stock_gtids] == [f"{SERVER_UUID}:3"]


@pytest.mark.parametrize("default_charsets", [False, True])
def test_enum_and_set_members_in_their_own_charset(monkeypatch: pytest.MonkeyPatch, default_charsets: bool) -> None:
    """latin1 ENUM('äö1','x') and SET('äö1','x') (members written in latin1, ENUM_AND_SET_*_CHARSET 8) next to
    a utf8mb4 ENUM: the rows hold 'äö1' and 'äö1,x' as SELECT shows them. Stock decodes latin1 member names as
    UTF-8 and puts '' for them."""
    cols = [w.col_long("id"), w.col_enum("e", ("äö1", "x"), collation=LATIN1),
            w.col_set("s", ("äö1", "x"), collation=LATIN1), w.col_enum("u", ("ü", "v"), collation=UTF8MB4)]
    f = w.BinlogFile()
    f.add(w.QUERY_EVENT, w.query_body("BEGIN"))
    f.add(w.TABLE_MAP_EVENT, w.table_map_body(TABLE_ID, "shop", "t", cols, primary_key=(0,),
                                              default_charsets=default_charsets))
    f.add(w.WRITE_ROWS, w.rows_body(TABLE_ID, 4, w.row_image(cols, [1, "äö1", "äö1,x", "ü"])))
    f.add(w.XID_EVENT, w.xid_body(1))
    rows = read_all(open_stream(monkeypatch, {"binlog.000001": f.bytes()}, BinlogOffset("binlog.000001", 4)))
    assert [r["after"] for r in rows] == [{"id": 1, "e": "äö1", "s": "äö1,x", "u": "ü"}]
    (stock,) = [r["values"] for e in stock_events(f.bytes()) if type(e).__name__ == "WriteRowsEvent" for r in e.rows]
    assert stock["u"] == "ü" and stock["e"] == "" and stock["s"] == {"", "x"}


def test_last_metadata_field_is_read_without_checksums(monkeypatch: pytest.MonkeyPatch) -> None:
    """binlog_checksum=NONE: the TABLE_MAP's last optional field (here a 3-byte SIMPLE_PRIMARY_KEY, as MariaDB
    writes it last) is read too (python-mysql-replication stops 4 bytes before the end, where a CRC would be)."""
    cols = [w.col_long("a"), w.col_long("b")]
    f = w.BinlogFile(checksum=False)
    f.add(w.QUERY_EVENT, w.query_body("BEGIN"))
    f.add(w.TABLE_MAP_EVENT, w.table_map_body(TABLE_ID, "shop", "t", cols, primary_key=(1,), visibility=False))
    f.add(w.WRITE_ROWS, w.rows_body(TABLE_ID, 2, w.row_image(cols, [1, 2])))
    f.add(w.XID_EVENT, w.xid_body(1))
    stream = open_stream(monkeypatch, {"binlog.000001": f.bytes()}, BinlogOffset("binlog.000001", 4))
    got = stream.read(10)
    assert got is not None
    assert [(p.key, p.data.to_pylist()[0]["after"]) for p in got[0]] == [(("b",), {"a": 1, "b": 2})]
