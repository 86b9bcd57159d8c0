"""The DDL statements of a server's binlog between two positions, read with SHOW BINLOG EVENTS (a second
dump connection would need a server_id of its own). information_schema describes a table as it is when
read, so its column names fit the rows of TABLE_MAP events without names (binlog_row_metadata MINIMAL) only
after the table's last DDL before that read; `TableSchema.names_at` refuses with one line a row followed by
a DDL on its table before the binlog position of the read, when the schema history holds no definition for
it (as the `binlog_files` source does with its files, `file_schema.DdlIndex`).
"""

from __future__ import annotations

import re

import pymysql

from dbus_ray.mysql import connection as cn
from dbus_ray.mysql.ddl import tables_changed
from dbus_ray.mysql.offset import binlog_index, position_key

#: SHOW BINLOG EVENTS rows per statement (each page starts where the one before ended).
PAGE_EVENTS = 10_000
#: A QUERY event's text as SHOW BINLOG EVENTS shows it: `use `db`; <statement>` when it had a default database.
USE_RE = re.compile(r"^use `((?:[^`]|``)*)`; ", re.S)


class ServerDdls:
    """The positions of the DDL statements on each table in the server's binlog over one scanned range (from
    the first position asked about to `until`; scanned again when asked about a position outside it)."""

    def __init__(self, ep: cn.Endpoint) -> None:
        self.ep = ep
        self.at: dict[tuple[str, str], list[tuple[tuple[int, int], str]]] = {}  # ((file index, offset), file)
        self.span: tuple[tuple[int, int], tuple[int, int]] | None = None

    def next_after(self, db: str, table: str, file: str, offset: int,
                   until: tuple[int, int]) -> tuple[str, int] | None:
        """The first DDL on `db.table` after `file:offset` and before `until` (file index, offset), or None."""
        here = position_key(file, offset)
        if self.span is None or here < self.span[0] or until > self.span[1]:
            self._scan(file, offset, until)
        for at, name in self.at.get((db, table), ()):
            if here < at < until:
                return name, at[1]
        return None

    def _scan(self, file: str, offset: int, until: tuple[int, int]) -> None:
        self.at = {}
        conn = cn.connect(self.ep)
        try:
            first = binlog_index(file)
            for name, _size in cn.binary_logs(conn, self.ep):
                index = binlog_index(name)
                if index < first:
                    continue
                if index > until[0]:
                    break
                self._scan_file(conn, name, index, offset if index == first else 4, until)
        finally:
            conn.close()
        self.span = (position_key(file, offset), until)

    def _scan_file(self, conn: pymysql.connections.Connection, name: str, index: int, pos: int,
                   until: tuple[int, int]) -> None:
        with conn.cursor() as cur:
            while (index, pos) < until:
                try:
                    cur.execute(f"SHOW BINLOG EVENTS IN %s FROM {int(pos)} LIMIT {PAGE_EVENTS}", (name,))
                except pymysql.err.MySQLError as exc:
                    raise cn.grant_error(self.ep, exc, "SHOW BINLOG EVENTS") from None
                rows = cur.fetchall()
                for _log, at, kind, _server, _end, info in rows:
                    if kind == "Query" and info:
                        self._query(str(info), name, index, int(at))
                if len(rows) < PAGE_EVENTS:
                    return
                pos = int(rows[-1][4])  # End_log_pos: where the next event starts

    def _query(self, info: str, name: str, index: int, pos: int) -> None:
        m = USE_RE.match(info)
        schema, sql = (m.group(1).replace("``", "`"), info[m.end():]) if m else ("", info)
        for db, table in tables_changed(sql, schema):
            self.at.setdefault((db, table), []).append(((index, pos), name))
