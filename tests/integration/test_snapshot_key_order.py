"""The parallel snapshot's key order (`key_order.KeyOrder`) agrees with the server's ORDER BY: keys of each
column type it splits, in both forms it meets them (as SELECT gives them, the chunks' bounds, and as the
binlog decoder and the snapshot image give them, the stream's rows), sorted by their sort keys, come out in
the order the server returns them."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.helpers import execute, table_name

pytestmark = pytest.mark.integration

#: column type -> values whose server order differs from Python's order of the values or of their text
COLUMNS = {
    "VARCHAR(8) COLLATE utf8mb4_general_ci": ["a", "a\t", "B1", "b", "ä1", "Z", "_", "k10", "K2", "é"],
    "CHAR(4) COLLATE latin1_swedish_ci": ["a", "Å", "z", "Ö", "ä", "0", "B "],
    "VARCHAR(6) COLLATE utf8mb4_nopad_bin": ["a", "a ", "a\t", "B", "b", ""],
    "DATETIME(6)": ["2020-01-01 00:00:00", "2020-01-01 00:00:00.5", "2019-12-31 23:59:59.999999",
                    "0000-00-00 00:00:00", "2020-01-01 00:00:00.000001"],
    "DATE": ["2020-01-02", "0000-00-00", "1999-12-31", "2020-01-10"],
    "TIME(3)": ["-01:00:00", "-00:00:00.5", "00:00:00", "100:00:00", "09:59:59.999", "-838:59:59"],
    "DECIMAL(10,3)": ["-1.5", "10.000", "9.999", "-10", "0.001", "0"],
    "VARBINARY(4)": [b"a", b"a\x00", b"\xff", b"A", b""],
}


@pytest.mark.parametrize("column_type", list(COLUMNS))
def test_sort_keys_follow_the_servers_order(mariadb: Any, root: Any, column_type: str) -> None:
    from dbus_ray.mysql.snapshot.catalog import describe
    from dbus_ray.mysql.snapshot.key_order import KeyOrder, Weigher
    from dbus_ray.mysql.snapshot.text_rows import fetch

    t = table_name("key_order")
    execute(root, f"CREATE TABLE {t} (k {column_type} PRIMARY KEY)")
    for v in COLUMNS[column_type]:
        execute(root, f"INSERT INTO {t} VALUES (%s)", args=(v,))
    with root.cursor() as cur:
        cur.execute(f"SELECT k FROM {t} ORDER BY k")
        native = [row[0] for row in cur.fetchall()]
    table = describe(root, "dbus_test", t, "InnoDB", 0)
    assert table.splittable and table.kinds is not None, table.kinds
    # the stream's form of the same keys (the snapshot's own query: text in a charset other than UTF-8 comes
    # as its stored bytes, decoded as the binlog decoder does)
    image = fetch(root, *table.range_sql(None, None)).image(table).field(0).to_pylist()
    weigher = Weigher(lambda: mariadb.root_connect())
    try:
        order = KeyOrder(table.kinds, weigher)
        for form in (native, image):
            sort_keys = order.sort_keys([(v,) for v in form])
            assert all(a < b for a, b in zip(sort_keys, sort_keys[1:])), (column_type, form, sort_keys)
    finally:
        weigher.close()
