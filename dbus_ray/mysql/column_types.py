"""Signedness and character sets of a TABLE_MAP event's columns, which decide how their values decode: an
integer's bytes are read signed or unsigned, a string's in its charset (or kept as bytes: `binary`).

The event carries them in its optional metadata with binlog_row_metadata=MINIMAL or FULL (SIGNEDNESS,
DEFAULT_CHARSET / COLUMN_CHARSET, ENUM_AND_SET_DEFAULT_CHARSET / ENUM_AND_SET_COLUMN_CHARSET), which
python-mysql-replication parses into `optional_metadata` but applies to the columns only when the event also
carries column names (FULL). `apply_metadata` applies them in every case, the same way, and names each column
whose signedness or charset decides its values but the event does not carry (binlog_row_metadata=NO_LOG,
servers without the setting): `TableSchema.layout_of` takes those from information_schema where it describes
the row, else refuses the row with one line. A collation id python-mysql-replication does not know is an
error, not UTF-8 (its `find_charset` falls back to utf8).
"""

from __future__ import annotations

from typing import Any

from pymysqlreplication.constants import CHARSET
from pymysqlreplication.row_event import TableMapEvent

from dbus_ray.mysql import values as bt

#: integer types, whose values decode by their signedness
INTEGERS = frozenset((bt.TINY, bt.SHORT, bt.INT24, bt.LONG, bt.LONGLONG))
#: string types, whose values decode by their charset (`decoder.columns_of` gives these a codec)
STRINGS = frozenset((bt.VARCHAR, bt.VAR_STRING, bt.STRING, bt.BLOB, bt.TINY_BLOB, bt.MEDIUM_BLOB, bt.LONG_BLOB))
#: information_schema DATA_TYPEs of those, and those whose CHARACTER_SET_NAME is NULL (bytes)
INTEGER_NAMES = frozenset(("tinyint", "smallint", "mediumint", "int", "integer", "bigint"))
BINARY_NAMES = frozenset(("binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob"))
STRING_NAMES = BINARY_NAMES | {"char", "varchar", "tinytext", "text", "mediumtext", "longtext"}

SIGNEDNESS = "signedness"
CHARACTER_SET = "character set"


def set_collation(column: Any, collation_id: int, dbms: str) -> None:
    """`column`'s charset and collation from a collation id, as python-mysql-replication's `_sync_column_info`
    sets them (the charset under its Python codec's name); ValueError for an id it does not know."""
    charset = CHARSET.charset_by_id(collation_id, dbms)
    if charset is None:
        raise ValueError(f"collation id {collation_id} is unknown to dbus-ray ({dbms}): no exact decoder")
    column.collation_name = charset.collation
    column.character_set_name = charset.encoding


def apply_metadata(event: Any) -> dict[int, str]:
    """Apply the signedness and charsets of a parsed TABLE_MAP event's optional metadata to its columns (see
    the module); the columns whose values depend on one the event does not carry -> SIGNEDNESS or
    CHARACTER_SET, also set as `unknown_types` on the event's table. ValueError on metadata that does not fit
    the columns."""
    meta = getattr(event, "optional_metadata", None)
    columns = event.columns
    dbms = event.dbms
    unsigned = list(getattr(meta, "unsigned_column_list", None) or ())
    charsets = list(getattr(meta, "charset_collation_list", None) or ())
    enum_sets = list(getattr(meta, "enum_and_set_collation_list", None) or ())
    characters = [c for c in columns if TableMapEvent._is_character_column(c.type, dbms=dbms)]
    enums = [c for c in columns if TableMapEvent._is_enum_or_set_column(c.type)]
    for what, got, want in (("SIGNEDNESS", unsigned, columns), ("charset", charsets, characters),
                            ("ENUM/SET charset", enum_sets, enums)):
        if got and len(got) != len(want):
            raise ValueError(f"its {what} metadata lists {len(got)} columns, not {len(want)}")
    unknown: dict[int, str] = {}
    for column, collation_id in zip(characters, charsets):
        set_collation(column, collation_id, dbms)
    for column, collation_id in zip(enums, enum_sets):
        set_collation(column, collation_id, dbms)
    for i, column in enumerate(columns):
        if unsigned:
            column.unsigned = bool(unsigned[i])
        elif column.type in INTEGERS:
            unknown[i] = SIGNEDNESS
        if not charsets and column.type in STRINGS:
            unknown[i] = CHARACTER_SET
    event.get_table().unknown_types = unknown
    return unknown


def catalog_type(row: tuple[Any, ...]) -> tuple[str, bool, str | None, str | None]:
    """(DATA_TYPE, unsigned, charset, collation) of a column from information_schema.COLUMNS' DATA_TYPE,
    COLUMN_TYPE, CHARACTER_SET_NAME, COLLATION_NAME (binary strings have NULL there: `binary`)."""
    data_type, column_type, charset, collation = row
    data_type = str(data_type).lower()
    if charset is None and collation is None and data_type in BINARY_NAMES:
        charset = collation = "binary"
    return data_type, "unsigned" in str(column_type).lower(), charset, collation


def apply_catalog(column: Any, what: str, found: tuple[str, bool, str | None, str | None]) -> bool:
    """Set `column`'s `what` (SIGNEDNESS or CHARACTER_SET) from its `catalog_type`; False (nothing set) when
    information_schema's column is not of the kind the event's is (not an integer, not a string)."""
    data_type, unsigned, charset, collation = found
    if what == SIGNEDNESS:
        if data_type not in INTEGER_NAMES:
            return False
        column.unsigned = unsigned
        return True
    if data_type not in STRING_NAMES or (charset is None and collation is None):
        return False
    column.character_set_name, column.collation_name = charset, collation
    return True
