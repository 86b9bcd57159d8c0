"""The type-fidelity table: one column of each MySQL type (TYPES_DDL, `{t}` the table name) and rows of
edge values (TYPE_ROWS, for `INSERT INTO {t} VALUES <row>` with `sql_mode = ''`), shared by the binlog
decoder, snapshot and differential tests."""

from __future__ import annotations

from typing import Any

from tests.support.helpers import execute, position

TYPES_DDL = """
CREATE TABLE {t} (
  id INT PRIMARY KEY,
  ti TINYINT, tu TINYINT UNSIGNED, si SMALLINT, su SMALLINT UNSIGNED, mi MEDIUMINT, mu MEDIUMINT UNSIGNED,
  i INT, iu INT UNSIGNED, bi BIGINT, bu BIGINT UNSIGNED,
  d65 DECIMAL(65,30), d38 DECIMAL(38,10), d10 DECIMAL(10,0), d5 DECIMAL(5,5), d41 DECIMAL(4,1),
  f FLOAT, db DOUBLE, b1 BIT(1), b10 BIT(10), b64 BIT(64),
  dt_ DATE, dtt DATETIME, dt6 DATETIME(6), dt3 DATETIME(3),
  ts TIMESTAMP(6) NULL DEFAULT NULL, ts0 TIMESTAMP NULL DEFAULT NULL,
  tm TIME, tm6 TIME(6), tm2 TIME(2), tm4 TIME(4), y YEAR,
  c CHAR(10), vc VARCHAR(300), tx TEXT, lt VARCHAR(20) CHARACTER SET latin1, lc CHAR(5) CHARACTER SET latin1,
  bn BINARY(4), vb VARBINARY(20), bl BLOB, lb LONGBLOB,
  e ENUM('small', 'medium', 'large'), st SET('a', 'b', 'c'), j JSON, g GEOMETRY
) DEFAULT CHARSET=utf8mb4
"""

TYPE_ROWS = [
    """(1, -128, 255, -32768, 65535, -8388608, 16777215, -2147483648, 4294967295,
        -9223372036854775808, 18446744073709551615,
        99999999999999999999999999999999999.999999999999999999999999999999,
        -9999999999999999999999999999.9999999999, -9999999999, -0.99999, -999.9,
        -3.40282e38, 1.7976931348623157e308, b'1', b'1111111111',
        b'1111111111111111111111111111111111111111111111111111111111111111',
        '1000-01-01', '1000-01-01 00:00:00', '9999-12-31 23:59:59.999999', '2024-02-29 12:34:56.789',
        '2038-01-19 03:14:07.999999', '1970-01-01 00:00:01',
        '-838:59:59', '838:59:59.000000', '-00:00:01.50', '-12:00:00.0001', 1901,
        'héllo', REPEAT('ü', 300), '😀 emoji \\n tab\\t', 'é€ƒ‰', 'ÿ',
        'ab', X'00FF00FF', X'DEADBEEF', X'00',
        'large', 'a,c', '{"k": [1, 2.5, "x"], "n": null}',
        ST_GeomFromText('POLYGON((0 0,10 0,10 10,0 0))'))""",
    """(2, 127, 0, 32767, 0, 8388607, 0, 2147483647, 0, 9223372036854775807, 0,
        -99999999999999999999999999999999999.999999999999999999999999999999,
        0.0000000001, 0, 0.00001, 0.0,
        1.17549e-38, -2.2250738585072014e-308, b'0', b'0', b'0',
        '9999-12-31', '9999-12-31 23:59:59', '0000-00-00 00:00:00', '0000-00-00 00:00:00',
        '0000-00-00 00:00:00', '2038-01-19 03:14:07',
        '00:00:00', '-838:59:59.000000', '00:00:00.01', '23:59:59.9999', 2155,
        '', '', '', '', '',
        '', '', '', X'FF',
        'small', '', '[]', ST_GeomFromText('POINT(1.5 -2.5)'))""",
    """(3, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, b'0', b'0', b'0',
        '0000-00-00', '2020-00-00 00:00:00', '2000-01-01 00:00:00.000001', '2000-01-01 00:00:00.100',
        '1999-12-31 23:59:59.5', '2000-01-01 00:00:00',
        '-00:00:01', '00:00:00.000001', '-00:00:00.01', '00:00:00.0001', 0,
        'a', 'b', 'c', 'd', 'e', X'00', X'', X'', X'',
        'medium', 'a,b,c', '"str"', ST_GeomFromText('LINESTRING(0 0,1 1)'))""",
    "(4" + ", NULL" * 44 + ")",
]


def create_type_table(conn: Any, t: str) -> str:
    """Create the type-fidelity table `t` and insert TYPE_ROWS (in non-strict mode, as the edge values need);
    the binlog position before the inserts (`file:offset`)."""
    execute(conn, TYPES_DDL.format(t=t))
    start = position(conn)
    execute(conn, "SET SESSION sql_mode = ''")
    for row in TYPE_ROWS:
        execute(conn, f"INSERT INTO {t} VALUES {row}")
    return start
