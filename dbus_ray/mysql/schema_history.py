"""Schema history of the `mysql` source: for each table, the versions of its definition (column names in
order, key columns), each valid from a binlog position on. It lets a source that replays an old binlog
range decode rows written before a later ALTER with the columns they had then, on servers whose
TABLE_MAP events carry no column names (binlog_row_metadata MINIMAL, or servers older than MariaDB 10.5 /
MySQL 8.0.1).

The source records a version when it reads a table's definition from information_schema while it is
caught up (information_schema then describes the table as of the stream's position), and again right
after a DDL statement on the table passes while it is caught up. A DDL that passes while the source is
behind, with no version recorded at its position, is recorded as an unknown version (no columns): from
there on the source falls back to information_schema with a column-count check.

It travels in the source's checkpoint (`schema_history`, JSON, so it survives a restart with every
checkpoint store): `[[db, table, file, offset, [columns] | null, [key columns]], ...]`, pruned of the
versions a resume from that checkpoint can no longer need (older than the newest one at or before the
checkpoint's position).
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from typing import Any

from dbus_ray.mysql.offset import position_key


@dataclass(frozen=True, slots=True)
class Version:
    file: str
    offset: int
    columns: tuple[str, ...] | None  # None: unknown (a DDL passed while the source was behind)
    key: tuple[str, ...]

    @property
    def at(self) -> tuple[int, int]:
        return position_key(self.file, self.offset)


class SchemaHistory:
    def __init__(self, raw: list[Any] | None = None) -> None:
        self.tables: dict[tuple[str, str], list[Version]] = {}
        self._json: list[list[Any]] | None = None
        for db, table, file, offset, columns, key in raw or ():
            self.record(str(db), str(table), str(file), int(offset),
                        None if columns is None else [str(c) for c in columns], [str(k) for k in key or ()])

    def __bool__(self) -> bool:
        return bool(self.tables)

    def __len__(self) -> int:
        return sum(len(v) for v in self.tables.values())

    def record(self, db: str, table: str, file: str, offset: int, columns: list[str] | None,
               key: list[str] | tuple[str, ...] = ()) -> bool:
        """Add the version valid from `file:offset` on (replacing one recorded at the same position); False
        when the version valid there already says the same (nothing recorded)."""
        version = Version(file, offset, None if columns is None else tuple(columns), tuple(key))
        versions = self.tables.setdefault((db, table), [])
        ats = [v.at for v in versions]
        i = bisect_right(ats, version.at)
        if i and versions[i - 1].columns == version.columns and versions[i - 1].key == version.key:
            return False
        if i and ats[i - 1] == version.at:
            versions[i - 1] = version
        else:
            versions.insert(i, version)
        self._json = None
        return True

    def at(self, db: str, table: str, file: str, offset: int) -> Version | None:
        """The version valid at `file:offset` (the newest recorded at or before it), None when there is none."""
        versions = self.tables.get((db, table))
        if not versions:
            return None
        i = bisect_right([v.at for v in versions], position_key(file, offset))
        return versions[i - 1] if i else None

    def recorded_at(self, db: str, table: str, file: str, offset: int) -> bool:
        """A version of the table starts exactly at `file:offset`."""
        return any(v.file == file and v.offset == offset for v in self.tables.get((db, table), ()))

    def prune(self, file: str, offset: int) -> None:
        """Drop the versions older than the newest one at or before `file:offset`."""
        pos = position_key(file, offset)
        for versions in self.tables.values():
            if len(versions) > 1:
                i = bisect_right([v.at for v in versions], pos)
                if i > 1:
                    del versions[: i - 1]
                    self._json = None

    def to_json(self, file: str, offset: int) -> list[list[Any]]:
        """The history a resume from `file:offset` needs, as JSON (pruned first)."""
        self.prune(file, offset)
        if self._json is None:
            self._json = [
                [db, table, v.file, v.offset, None if v.columns is None else list(v.columns), list(v.key)]
                for (db, table), versions in self.tables.items()
                for v in versions
            ]
        return self._json
