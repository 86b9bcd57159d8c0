"""Signedness and charsets of TABLE_MAP columns without column names in the event (binlog_row_metadata MINIMAL:
from the event's optional metadata; NO_LOG: from information_schema, or refused in one line), on events of the
test-only MySQL 8 binlog writer parsed by stock python-mysql-replication as the stream does; and `codec_of`
refusing an unknown charset instead of meaning UTF-8 (against a real MariaDB: tests/integration/
test_row_metadata_types.py)."""

from __future__ import annotations

from typing import Any

import pymysql.protocol
import pytest

from dbus_ray.errors import DbusError
from dbus_ray.mysql import column_types as ct
from dbus_ray.mysql import replica as rp
from dbus_ray.mysql.charsets import codec_of
from dbus_ray.mysql.decoder import Layout, columns_of
from dbus_ray.mysql.schema import TableSchema
from tests.support import mysql8_binlog as w
from tests.support.mysql8_stream import stock_parse

COLS = [w.col_long("id"), w.col_long("u32", unsigned=True), w.col_longlong("u64", unsigned=True),
        w.col_tiny("u8", unsigned=True), w.col_varchar("vb", 16, collation=63), w.col_varchar("l1", 16, collation=8),
        w.col_varchar("s", 16)]
NAMES = [c.name for c in COLS]
ROW = [-1, 4294967295, 18446744073709551615, 255, b"\x00\xff", "é".encode("latin1"), "é€"]
WANT = [-1, 4294967295, 18446744073709551615, 255, b"\x00\xff", "é", "é€"]
#: information_schema's DATA_TYPE, COLUMN_TYPE, CHARACTER_SET_NAME, COLLATION_NAME of COLS
CATALOG = [("int", "int(11)", None, None), ("int", "int(10) unsigned", None, None),
           ("bigint", "bigint(20) unsigned", None, None), ("tinyint", "tinyint(3) unsigned", None, None),
           ("varbinary", "varbinary(16)", None, None), ("varchar", "varchar(16)", "latin1", "latin1_swedish_ci"),
           ("varchar", "varchar(16)", "utf8mb4", "utf8mb4_0900_ai_ci")]


def table_map(no_log: bool = False) -> Any:
    """Stock's parse of a TABLE_MAP of COLS as binlog_row_metadata=MINIMAL (or NO_LOG: no optional metadata)
    writes it."""
    body = w.table_map_body(90, "d", "t", COLS, full_metadata=False)
    if no_log:
        meta = sum(len(c.meta) for c in COLS)
        body = body[: 6 + 2 + 3 + 3 + 1 + len(COLS) + 1 + meta + (len(COLS) + 7) // 8]
    return stock_parse(w.event(w.TABLE_MAP_EVENT, body, 500), {})


def decode(tm: Any) -> list[Any]:
    layout = Layout("d", "t", columns_of(tm.get_table(), NAMES), ())
    event = w.event(w.WRITE_ROWS, w.rows_body(90, len(COLS), w.row_image(COLS, ROW)), 700)
    data = b"\0" + event
    _id, _flags, _n, bitmap, _b2, pos = rp.rows_body(rp.RawEvent(pymysql.protocol.MysqlPacket(data, "utf8"), data,
                                                                  True))
    return [v[0] for v in layout.read_rows(data, "insert", bitmap, None, pos, len(data) - 4)[1]]


def test_minimal_metadata_applies_signedness_and_charsets() -> None:
    tm = table_map()
    assert all(c.name is None for c in tm.columns) and not any(c.unsigned for c in tm.columns)  # stock leaves them
    assert ct.apply_metadata(tm) == {}
    assert decode(tm) == WANT


def test_no_log_names_every_column_whose_type_is_unknown() -> None:
    tm = table_map(no_log=True)
    assert ct.apply_metadata(tm) == {0: ct.SIGNEDNESS, 1: ct.SIGNEDNESS, 2: ct.SIGNEDNESS, 3: ct.SIGNEDNESS,
                                     4: ct.CHARACTER_SET, 5: ct.CHARACTER_SET, 6: ct.CHARACTER_SET}
    with pytest.raises(ValueError, match="character set is unknown"):
        columns_of(tm.get_table(), NAMES)  # never UTF-8 by default


def test_an_unknown_collation_id_is_refused() -> None:
    cols = [w.col_varchar("s", 16, collation=4000)]
    tm = stock_parse(w.event(w.TABLE_MAP_EVENT, w.table_map_body(91, "d", "t", cols, full_metadata=False), 500), {})
    with pytest.raises(ValueError, match="collation id 4000 is unknown"):
        ct.apply_metadata(tm)


def schema(columns: list[str], history: list[Any] | None = None) -> TableSchema:
    """A TableSchema (no server) whose information_schema read of d.t gives `columns` with CATALOG's types."""
    s = TableSchema(None, lambda db, t: True, False, history, True)  # type: ignore[arg-type]
    s.names_cache[("d", "t")] = (columns, ("id",))
    s.types_cache[("d", "t")] = [ct.catalog_type(r) for r in CATALOG + [("int", "int(11)", None, None)]][
        : len(columns)]
    return s


def test_no_log_types_come_from_information_schema() -> None:
    tm = table_map(no_log=True)
    ct.apply_metadata(tm)
    layout = schema(NAMES).layout_of(tm.get_table(), "d", "t", "binlog.000001", 400, False)
    assert [(c.name, c.unsigned, c.charset) for c in layout.columns] == [
        ("id", False, None), ("u32", True, None), ("u64", True, None), ("u8", True, None), ("vb", False, "binary"),
        ("l1", False, "mysql-latin1"), ("s", False, "utf-8")]
    assert decode(tm) == WANT


def test_no_log_with_history_names_and_an_altered_table_is_refused_in_one_line() -> None:
    tm = table_map(no_log=True)
    ct.apply_metadata(tm)
    history = [["d", "t", "binlog.000001", 4, NAMES, ["id"]]]
    with pytest.raises(DbusError) as err:
        schema(NAMES + ["extra"], history).layout_of(tm.get_table(), "d", "t", "binlog.000001", 400, False)
    assert str(err.value) == (
        "binlog binlog.000001:400: the TABLE_MAP event of d.t does not carry the signedness of column id "
        "(binlog_row_metadata=NO_LOG, or a server without it) and information_schema does not describe the table "
        "at this position (it has 8 columns now, not 7): set binlog_row_metadata=FULL or MINIMAL on the server, or "
        "restart the pipeline from a snapshot")


def test_information_schema_of_another_kind_is_refused() -> None:
    tm = table_map(no_log=True)
    ct.apply_metadata(tm)
    s = schema(NAMES)
    s.types_cache[("d", "t")][1] = ct.catalog_type(("varchar", "varchar(3)", "utf8mb4", "utf8mb4_bin"))
    with pytest.raises(DbusError, match=r"signedness of column u32 .* \(it has column u32 as varchar\)"):
        s.layout_of(tm.get_table(), "d", "t", "binlog.000001", 400, False)


def test_codec_of_an_unknown_charset_is_an_error_not_utf8() -> None:
    with pytest.raises(ValueError, match="character set is unknown"):
        codec_of(None, None)
    assert codec_of(None, "binary") == "binary" and codec_of("utf8mb4", None) == "utf-8"
