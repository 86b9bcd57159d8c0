"""Table definitions for binlog files read from disk (the `binlog_files` source, `history(files=)`): the
`mysql` source's `TableSchema`, with information_schema only through an optional server (`dsn`).

Column names and the primary key come from the TABLE_MAP events when the files carry them
(`binlog_row_metadata=FULL`). Otherwise from the server's information_schema, which describes each table as
it is now. That is right only for rows written after the last DDL on the table: the files' DDL statements are
indexed ahead of the stream (`DdlIndex`, extended as the files grow), and a table is "live" at a position when
no DDL on it follows in the files. There the schema history (`dbus_ray.mysql.schema_history`, carried in the
checkpoints) records information_schema's definition, as the `mysql` source does once caught up; a row before
a later DDL whose definition the history does not hold is refused with one line (never decoded with another
definition's names). Without a server, a table whose TABLE_MAP events carry no names is refused with one line.
Signedness and charsets the files do not carry (NO_LOG) come from information_schema under the same rule
(`types_at`).
"""

from __future__ import annotations

import os
from typing import Any

from dbus_ray.errors import DbusError
from dbus_ray.mysql import connection as cn
from dbus_ray.mysql import replica as rp
from dbus_ray.mysql.ddl import tables_changed
from dbus_ray.mysql.events import QUERIES
from dbus_ray.mysql.files import EVENT_HEADER, BinlogFiles, read_header
from dbus_ray.mysql.offset import binlog_index, position_key
from dbus_ray.mysql.schema import TableSchema


class DdlIndex:
    """The positions of the DDL statements of each table in the files (scanned from each file's start; `refresh`
    reads only what was added since)."""

    def __init__(self, files: BinlogFiles) -> None:
        self.files = files
        self.at: dict[tuple[str, str], list[tuple[int, int, str]]] = {}  # (file index, offset, file)
        self.scanned: dict[str, int] = {}  # file -> position scanned to
        self.unread: list[tuple[int, int, str]] = []  # statements not decoded here: a DDL of any table, maybe

    def refresh(self) -> None:
        for name, path in self.files.listing(need=False).items():
            size = os.path.getsize(path)
            if self.scanned.get(name, 0) >= size:
                continue
            with open(path, "rb") as fh:
                header = read_header(path, fh)
                pos = max(self.scanned.get(name, 0), header.end)
                while pos + EVENT_HEADER <= size:
                    fh.seek(pos)
                    raw = fh.read(EVENT_HEADER)
                    typ, n = raw[4], int.from_bytes(raw[9:13], "little")
                    if n < EVENT_HEADER or pos + n > size:
                        break  # a torn or corrupt event: the reader says so when it gets there
                    if typ in QUERIES:
                        self._query(rp.RawEvent(None, b"\0" + raw + fh.read(n - EVENT_HEADER), header.checksum),
                                    name, pos)
                    pos += n
            self.scanned[name] = pos

    def _query(self, ev: rp.RawEvent, file: str, offset: int) -> None:
        try:
            schema, sql = rp.query_parts(ev)
        except ValueError:  # the stream stops at it when it reads it; until then, it may be any table's DDL
            self.unread.append((binlog_index(file), offset, file))
            return
        for db, table in tables_changed(sql, schema):
            self.at.setdefault((db, table), []).append((binlog_index(file), offset, file))

    def next_after(self, db: str, table: str, file: str, offset: int) -> tuple[str, int] | None:
        """The first DDL on `db.table` (or statement not decoded) after `file:offset` in the files, None when
        there is none."""
        self.refresh()
        here = position_key(file, offset)
        later = [(index, at, name) for index, at, name in (*self.at.get((db, table), ()), *self.unread)
                 if (index, at) > here]
        if not later:
            return None
        _, at, name = min(later)
        return name, at


class FileSchema(TableSchema):
    """The stream's table definitions for binlog files (see the module)."""

    def __init__(self, files: BinlogFiles, ep: cn.Endpoint | None, matcher: Any, skip_osc_tables: bool,
                 history: list[Any] | None) -> None:
        super().__init__(ep, matcher, skip_osc_tables, history, history_on=ep is not None)  # type: ignore[arg-type]
        self.later_ddls = None  # the DDLs of the files, not of the catalog server's binlog (`ddls`)
        self.has_catalog = ep is not None
        self.ddls = DdlIndex(files)

    def names_at(self, db: str, table: str, n: int, file: str, offset: int,
                 live: bool) -> tuple[list[str], tuple[str, ...]]:
        if not self.has_catalog:
            raise DbusError(
                f"binlog {file}:{offset}: the TABLE_MAP event of {db}.{table} carries no column names (the file was "
                "written without binlog_row_metadata=FULL): set `dsn` on the binlog_files source to a server whose "
                "information_schema has the table, or exclude it"
            )
        version = self.history.at(db, table, file, offset)
        if version is not None and version.columns is not None and len(version.columns) == n:
            return list(version.columns), version.key
        later = self.ddls.next_after(db, table, file, offset)
        if later is not None:
            raise DbusError(
                f"binlog {file}:{offset}: the TABLE_MAP event of {db}.{table} carries no column names and a DDL on the "
                f"table follows at {later[0]}:{later[1]}, so information_schema (the table as it is now) does not "
                "describe these rows: read files written with binlog_row_metadata=FULL, or start after that DDL"
            )
        return super().names_at(db, table, n, file, offset, True)

    def types_at(self, db: str, table: str, names: list[str], file: str, offset: int) -> Any:
        if not self.has_catalog:
            return "the binlog_files source has no `dsn`"
        later = self.ddls.next_after(db, table, file, offset)
        if later is not None:
            return f"a DDL on the table follows at {later[0]}:{later[1]}"
        return super().types_at(db, table, names, file, offset)

    def ddl(self, named: list[tuple[str, str]], file: str, offset: int, live: bool) -> None:
        for db, table in named:
            now = bool(table) and self.has_catalog and self.ddls.next_after(db, table, file, offset) is None
            super().ddl([(db, table)], file, offset, now)

    def definition(self, db: str, table: str) -> dict[str, Any] | None:
        return super().definition(db, table) if self.has_catalog else None
