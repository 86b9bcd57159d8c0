"""The binlog offset of the `mysql` source: where a resume starts, as a typed value with the checkpoint's
JSON form (`to_dict` / `from_dict`), and the order of binlog positions (`position_key`).

Checkpoint (opaque to the bus, one per RowBatch, handed back to `open`), keys in this order:
`{"file": "binlog.000042", "offset": 1234, "skip": 3, "gtid": "0-1-77", "gtid_pos": "0-1-76", "server": "1",
"selected": {...}, "schema_history": [...], "fences": {...}}`. `offset` is always a transaction boundary: the
position of the GTID/BEGIN event of the transaction in progress when the batch ended inside one (and `skip` counts
the rows of that transaction already emitted), else the position after the last transaction read
(`skip` 0). So a resume never starts between a TABLE_MAP and its ROWS event and neither loses nor
duplicates a row. `gtid` is the GTID of that transaction (or of the last one read), for information.
`gtid_pos` is the GTID state at `offset`, the transactions before it: MariaDB one `domain-server-seq` per
domain, as `BINLOG_GTID_POS(file, offset)` gives it; MySQL (gtid_mode=ON) the executed GTID set
`uuid:1-5:7,uuid2:1-3` (`dbus_ray.mysql.gtid_set`); `server` is the identity
of the server whose binlog `file:offset` is in (MariaDB `@@server_id`, MySQL `@@server_uuid`). With
them a resume checks the position against the server's history and, on another server (a promoted
replica), resumes by GTID (`dbus_ray.mysql.history`); checkpoints without them (older ones, `dbus
checkpoint set`) load and resume by `file:offset`. The last three keys are there only when they apply:
`selected` the include/exclude the checkpoint was taken under (unless `snapshot: never`), `schema_history` the
table definitions a resume needs (`dbus_ray.mysql.schema_history`), `fences` the chunk positions of a parallel
snapshot the stream has not passed yet (`dbus_ray.mysql.snapshot.parallel.Fences`). `xa` (after `server`, only
when there are some) the XA transactions prepared and not resolved at `offset`, with where each prepared group
starts: a resume reads their rows again from there (`dbus_ray.mysql.xa`).

A snapshot in progress checkpoints `{"snapshot": {...}}` instead (`is_snapshot`; see
`dbus_ray.mysql.snapshot.serial`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

_INDEX_RE = re.compile(r"\.(\d+)$")


def binlog_index(name: str) -> int:
    """The sequence number of a binlog file name (`binlog.000042` -> 42)."""
    m = _INDEX_RE.search(name)
    return int(m.group(1)) if m else 0


def position_key(file: str, offset: int) -> tuple[int, int]:
    """A binlog position as a value that sorts in binlog order (file sequence number, offset)."""
    return binlog_index(file), offset


def is_snapshot(checkpoint: dict[str, Any] | None) -> bool:
    """The checkpoint was taken while a snapshot ran."""
    return bool(checkpoint) and "snapshot" in checkpoint  # type: ignore[operator]


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


@dataclass(frozen=True)
class BinlogOffset:
    """Where a resume starts: the transaction at `file:offset`, skipping its first `skip` rows."""

    file: str
    offset: int
    skip: int = 0
    gtid: str | None = None
    selected: dict[str, list[str]] | None = None
    schema_history: list[list[Any]] | None = None
    fences: dict[str, Any] | None = None
    gtid_pos: str | None = None
    server: str | None = None
    xa: dict[str, list[Any]] | None = None  # prepared XA transactions at `offset` (see dbus_ray.mysql.xa)

    @classmethod
    def from_dict(cls, checkpoint: dict[str, Any]) -> BinlogOffset:
        selected = checkpoint.get("selected")
        return cls(
            str(checkpoint["file"]),
            int(checkpoint["offset"]),
            int(checkpoint.get("skip", 0)),
            checkpoint.get("gtid"),
            selected if isinstance(selected, dict) else None,
            checkpoint.get("schema_history"),
            checkpoint.get("fences"),
            _opt_str(checkpoint.get("gtid_pos")),
            _opt_str(checkpoint.get("server")),
            checkpoint.get("xa") or None,
        )

    @classmethod
    def parse(cls, text: str) -> BinlogOffset:
        """`binlog.000042:1234` (the start of a transaction) -> an offset; ValueError naming the form."""
        file, _, offset = text.rpartition(":")
        if not file or not offset.isdigit():
            raise ValueError(f"bad binlog position {text!r}: expected FILE:OFFSET, e.g. binlog.000042:1234")
        return cls(file, int(offset))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"file": self.file, "offset": self.offset, "skip": self.skip, "gtid": self.gtid}
        if self.gtid_pos is not None:
            out["gtid_pos"] = self.gtid_pos
        if self.server is not None:
            out["server"] = self.server
        if self.xa:
            out["xa"] = self.xa
        if self.selected is not None:
            out["selected"] = self.selected
        if self.schema_history is not None:
            out["schema_history"] = self.schema_history
        if self.fences is not None:
            out["fences"] = self.fences
        return out

    def with_(self, **changes: Any) -> BinlogOffset:
        return replace(self, **changes)

    @property
    def key(self) -> tuple[int, int]:
        """The position in binlog order (see `position_key`)."""
        return position_key(self.file, self.offset)
