"""Table definitions of the `mysql` source's stream: which layout decodes the rows of a table id, from
the TABLE_MAP events, the schema history and information_schema.

Column names come from the TABLE_MAP event (binlog_row_metadata=FULL), so rows written before an ALTER
decode with the old columns; without them, from the schema history (`dbus_ray.mysql.schema_history`,
carried in the checkpoint), else information_schema with a column-count check, which describes a row only
when no DDL on its table lies between it and where the server's binlog was when information_schema was read:
the binlog in between is looked through for one (`dbus_ray.mysql.ddl_scan`) and a row before it is refused
with one line instead of decoded with another definition's names. Signedness and charsets come from the event
(MINIMAL and FULL carry them, `dbus_ray.mysql.column_types`); without them (NO_LOG) from information_schema
under the same guards, and a row they are not known for is refused with one line. A definition is keyed by
the TABLE_MAP bytes after the table id and parsed once; a DDL on a table forgets its definitions.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from typing import Any

from dbus_ray.errors import DbusError, DecodeError
from dbus_ray.mysql import column_types as ct
from dbus_ray.mysql import replica as rp
from dbus_ray.mysql.connection import Endpoint, connect, master_status
from dbus_ray.mysql.ddl import OSC_RE, change_type
from dbus_ray.mysql.ddl_scan import ServerDdls
from dbus_ray.mysql.offset import position_key
from dbus_ray.mysql.schema_history import SchemaHistory


def key_indexes(table_map: Any) -> list[int]:
    """The primary key's columns (indexes) in the key's own order, from a TABLE_MAP event's optional metadata
    (SIMPLE_PRIMARY_KEY, or PRIMARY_KEY_WITH_PREFIX when a key column is a prefix): the canonical key order,
    the one the snapshot reads (python-mysql-replication's `primary_key` lists them in column order and
    leaves prefix keys out). Empty when the event has no such metadata."""
    meta = getattr(table_map, "optional_metadata", None)
    if meta is None:
        return []
    return list(meta.simple_primary_key_list or ()) or list(meta.primary_keys_with_prefix or ())


class TableSchema:
    """The stream's table definitions. `live(file, offset)` says whether the stream at that position is
    caught up with where the server was at open (information_schema then describes the tables as of
    there)."""

    def __init__(self, ep: Endpoint, matcher: Callable[[str, str], bool], skip_osc_tables: bool,
                 history: list[Any] | None, history_on: bool) -> None:
        self.ep = ep
        self.matcher = matcher
        self.skip_osc_tables = skip_osc_tables
        # TABLE_MAP bytes (all but the table id) -> (db, table, Layout or None when excluded)
        self.map_cache: dict[bytes, tuple[str, str, Any]] = {}
        self.by_table_id: dict[int, tuple[str, str, Any]] = {}  # table id -> its map_cache entry (streaming.py)
        self.names_cache: dict[tuple[str, str], tuple[list[str], tuple[str, ...]]] = {}
        self.types_cache: dict[tuple[str, str], list[tuple[str, bool, str | None, str | None]]] = {}  # `catalog_type`s
        # column names per position when TABLE_MAP events carry none (binlog_row_metadata not FULL)
        self.history = SchemaHistory(history)
        self.history_on = history_on
        # where the server's binlog was when a table's definition was read from information_schema (file index,
        # offset): it describes the rows after the table's last DDL before there
        self.catalog_at: dict[tuple[str, str], tuple[int, int]] = {}
        self.later_ddls: ServerDdls | None = ServerDdls(ep) if ep is not None else None

    def selected(self, db: str, table: str) -> bool:
        return self.matcher(db, table) and not (self.skip_osc_tables and bool(OSC_RE.match(table)))

    def mapped(self, ev: rp.RawEvent) -> bool:
        """Map a TABLE_MAP event's table id to the definition of the same bytes seen before (the usual case: the
        same event before every transaction of a table); False when its bytes are new (`table_map`)."""
        data = ev.data
        entry = self.map_cache.get(data[rp.HEADER + 6 : ev.end])
        if entry is None:
            return False
        self.by_table_id[int.from_bytes(data[rp.HEADER : rp.HEADER + 6], "little")] = entry
        return True

    def table_map(self, ev: rp.RawEvent, replica: rp.Replica, file: str, offset: int, live: bool) -> None:
        """Map the event's table id to a layout, parsing a definition only the first time it is seen."""
        table_id, key, db, table = rp.table_map_names(ev)
        entry = self.map_cache.get(key)
        if entry is None:
            layout = None
            if self.selected(db, table):
                try:
                    table_map = replica.table_map_event(ev)
                    ct.apply_metadata(table_map)  # signedness and charsets, also without column names
                    table_obj = table_map.get_table()
                    table_obj.null_bitmask = table_map.null_bitmask  # NOT NULL columns, for column metadata
                    _, types, table_obj.enum_members, table_obj.set_members = rp.table_map_extras(ev)
                    table_obj.compressed = frozenset(i for i, t in enumerate(types) if t in rp.COMPRESSED_TYPES)
                    table_obj.key_indexes = key_indexes(table_map)
                    layout = self.layout_of(table_obj, db, table, file, offset, live)
                except (DecodeError, ValueError, IndexError, KeyError, struct.error) as exc:
                    raise DecodeError(
                        f"binlog {file}:{offset}: cannot read the table map event of {db}.{table}: {exc}"
                    ) from None
            entry = self.map_cache[key] = (db, table, layout)
        self.by_table_id[table_id] = entry

    def layout_of(self, table_obj: Any, db: str, table: str, file: str, offset: int, live: bool) -> Any:
        """The layout of a table definition (a stock `Table` parsed from a TABLE_MAP event at `offset`)."""
        from dbus_ray.mysql.decoder import Layout, columns_of

        cols = table_obj.columns
        names: list[str] | None = None
        if all(c.name for c in cols):
            indexes = getattr(table_obj, "key_indexes", None)
            if indexes and all(i < len(cols) for i in indexes):
                key = tuple(cols[i].name for i in indexes)
            else:
                pk = table_obj.primary_key
                key = (pk,) if isinstance(pk, str) and pk else tuple(pk) if pk else ()
        else:
            names, key = self.names_at(db, table, len(cols), file, offset, live)
        unknown = getattr(table_obj, "unknown_types", None)
        if unknown:
            self.types_from_catalog(cols, unknown, db, table, names or [c.name for c in cols], file, offset)
        return Layout(db, table, columns_of(table_obj, names), key)

    def types_from_catalog(self, cols: list[Any], unknown: dict[int, str], db: str, table: str, names: list[str],
                           file: str, offset: int) -> None:
        """Set the signedness / charset of the columns a TABLE_MAP event (at `offset`) does not carry them for
        (`unknown`: index -> what) from information_schema where it describes the row (`types_at`); else raise
        DbusError (one line naming the column)."""
        found = self.types_at(db, table, names, file, offset)
        for i, what in sorted(unknown.items()):
            if isinstance(found, str):
                why = found
            elif ct.apply_catalog(cols[i], what, found[i]):
                continue
            else:
                why = f"it has column {names[i]} as {found[i][0]}"
            raise DbusError(
                f"binlog {file}:{offset}: the TABLE_MAP event of {db}.{table} does not carry the {what} of column "
                f"{names[i]} (binlog_row_metadata=NO_LOG, or a server without it) and information_schema does not "
                f"describe the table at this position ({why}): set binlog_row_metadata=FULL or MINIMAL on the "
                "server, or restart the pipeline from a snapshot"
            )

    def types_at(self, db: str, table: str, names: list[str], file: str,
                 offset: int) -> list[tuple[str, bool, str | None, str | None]] | str:
        """The `column_types.catalog_type` of each column of `db.table` from information_schema when it
        describes a row at `offset` whose columns are `names` (the same columns, no DDL on the table between
        the row and where the binlog was when it was read); else why not."""
        now, _ = self.from_catalog(db, table)
        if len(now) != len(names):
            return f"it has {len(now)} columns now, not {len(names)}"
        for was, name in zip(names, now):
            if was != name:
                return f"its column {was} is named {name} now"
        read_at = self.catalog_at.get((db, table))
        if read_at is not None and self.later_ddls is not None:
            later = self.later_ddls.next_after(db, table, file, offset, read_at)
            if later is not None:
                return f"a DDL on the table follows at {later[0]}:{later[1]}"
        return self.types_cache[(db, table)]

    def names_at(self, db: str, table: str, n: int, file: str, offset: int,
                 live: bool) -> tuple[list[str], tuple[str, ...]]:
        """Column names and key of a table whose TABLE_MAP event (at `offset`, `n` columns) carries no names:
        the schema history's version valid there, else information_schema (recorded in the history when the
        stream is live), whose column count must match the event's."""
        version = self.history.at(db, table, file, offset)
        if version is not None and version.columns is not None and len(version.columns) == n:
            return list(version.columns), version.key
        names, key = self.from_catalog(db, table)
        read_at = self.catalog_at.get((db, table))
        if read_at is not None and self.later_ddls is not None:
            later = self.later_ddls.next_after(db, table, file, offset, read_at)
            if later is not None:
                raise DbusError(
                    f"binlog {file}:{offset}: the TABLE_MAP event of {db}.{table} carries no column names, the schema "
                    f"history has no definition for this position and a DDL on the table follows at "
                    f"{later[0]}:{later[1]}, so information_schema (the table as it is now) does not describe these "
                    "rows: set binlog_row_metadata=FULL on the server, or restart the pipeline from a snapshot"
                )
        if len(names) != n:
            raise DbusError(
                f"binlog {file}:{offset}: table {db}.{table} has {n} columns in the binlog but {len(names)} "
                "in information_schema (altered since) and the schema history has no definition for this "
                "position: set binlog_row_metadata=FULL on the server, or restart the pipeline from a snapshot"
            )
        if live:
            self.history.record(db, table, file, offset, names, key)
        return names, key

    def ddl(self, named: list[tuple[str, str]], file: str, offset: int, live: bool) -> None:
        """A DDL statement (at `offset`) on the tables `named` (table "" for a database) passed: forget their
        definitions; with a schema history, record their definitions from here on when live; when behind,
        mark the versions recorded before it as no longer known (unless the history has the definition that
        starts here)."""
        for db, table in named:
            self.names_cache.pop((db, table), None)
            self.types_cache.pop((db, table), None)
            for key in [k for k, v in self.map_cache.items() if v[0] == db and (v[1] == table or not table)]:
                del self.map_cache[key]
        if not (self.history_on or self.history):
            return
        for db, table in named:
            if not table or not self.matcher(db, table):
                continue
            if live:
                names, key = self.from_catalog(db, table)
                self.history.record(db, table, file, offset, names or None, key)
            elif self.history.tables.get((db, table)) and not self.history.recorded_at(db, table, file, offset):
                self.history.record(db, table, file, offset, None)

    def from_catalog(self, db: str, table: str) -> tuple[list[str], tuple[str, ...]]:
        """Column names (in table order) and primary key (in the key's order) from information_schema (servers
        without binlog_row_metadata); their `catalog_type`s go to `types_cache`."""
        hit = self.names_cache.get((db, table))
        if hit is None:
            conn = connect(self.ep)
            try:
                with conn.cursor() as cur:
                    cur.execute(
                        "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, CHARACTER_SET_NAME, COLLATION_NAME FROM "
                        "information_schema.COLUMNS WHERE TABLE_SCHEMA=%s AND TABLE_NAME=%s ORDER BY ORDINAL_POSITION",
                        (db, table),
                    )
                    rows = cur.fetchall()
                    cur.execute("SELECT COLUMN_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA=%s "
                                "AND TABLE_NAME=%s AND INDEX_NAME='PRIMARY' ORDER BY SEQ_IN_INDEX", (db, table))
                    key = tuple(r[0] for r in cur.fetchall())
                if self.later_ddls is not None:  # any DDL the definition shows is in the binlog before here
                    file, pos = master_status(conn, self.ep)
                    self.catalog_at[(db, table)] = position_key(file, pos)
            finally:
                conn.close()
            hit = ([r[0] for r in rows], key)
            self.names_cache[(db, table)] = hit
            self.types_cache[(db, table)] = [ct.catalog_type(r[1:]) for r in rows]
        return hit

    def change(self, sql: str, db: str, table: str) -> str | None:
        """The `change` of a DDL row (see `DdlLayout`): what the statement did to `db.table` and, unless it
        dropped it, the table's definition from information_schema as it is when the DDL is read (the
        definition after the DDL when the stream is live; when catching up, a later DDL on the table may
        already show in it). None for a database's DDL and TRUNCATE."""
        kind = change_type(sql) if table else None
        if kind is None:
            return None
        out: dict[str, Any] = {"type": kind}
        if kind != "DROP":
            out.update(self.definition(db, table) or {})
        return json.dumps(out, separators=(",", ":"), default=str)

    def definition(self, db: str, table: str) -> dict[str, Any] | None:
        """A table's definition from information_schema (None when it has no such table): its default
        charset and comment, primary-key column names, and columns as lists of COLUMN_NAME,
        ORDINAL_POSITION, COLUMN_DEFAULT, IS_NULLABLE, DATA_TYPE, COLUMN_TYPE, CHARACTER_SET_NAME,
        CHARACTER_MAXIMUM_LENGTH, NUMERIC_PRECISION, NUMERIC_SCALE, DATETIME_PRECISION, EXTRA, COLUMN_COMMENT."""
        conn = connect(self.ep)
        try:
            with conn.cursor() as cur:
                return table_definition(cur, db, table)
        finally:
            conn.close()

    def history_json(self, file: str, offset: int) -> list[list[Any]] | None:
        """The schema history a resume from `file:offset` needs (None: there is none)."""
        return self.history.to_json(file, offset) if self.history else None


def table_definition(cur: Any, db: str, table: str) -> dict[str, Any] | None:
    """`TableSchema.definition` read with the cursor `cur` (the snapshot reads it inside its transaction)."""
    cur.execute("SELECT TABLE_COLLATION, TABLE_COMMENT FROM information_schema.TABLES "
                "WHERE TABLE_SCHEMA=%s AND TABLE_NAME=%s", (db, table))
    found = cur.fetchone()
    if found is None:
        return None
    cur.execute(
        "SELECT COLUMN_NAME, ORDINAL_POSITION, COLUMN_DEFAULT, IS_NULLABLE, DATA_TYPE, COLUMN_TYPE, "
        "CHARACTER_SET_NAME, CHARACTER_MAXIMUM_LENGTH, NUMERIC_PRECISION, NUMERIC_SCALE, "
        "DATETIME_PRECISION, EXTRA, COLUMN_COMMENT FROM information_schema.COLUMNS "
        "WHERE TABLE_SCHEMA=%s AND TABLE_NAME=%s ORDER BY ORDINAL_POSITION", (db, table))
    columns = [list(r) for r in cur.fetchall()]
    cur.execute("SELECT COLUMN_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA=%s "
                "AND TABLE_NAME=%s AND INDEX_NAME='PRIMARY' ORDER BY SEQ_IN_INDEX", (db, table))
    key = [r[0] for r in cur.fetchall()]
    collation, comment = found
    return {"charset": (collation or "").split("_")[0] or None, "comment": comment or None,
            "primary_key": key, "columns": columns}
