"""Which columns key a table's row changes (the `key` of each row, a Kafka message's key): the table's
primary key, or the columns `message_key_columns` names for it (as Debezium's `message.key.columns`),
e.g. `{"shop.audit_log": ["ts", "id"]}` (keys are `db.table` globs, the first match wins).

A table with neither has an empty key: its rows carry `key {}`, and the Kafka sink sends them with a null
message key (spread over partitions, so no per-key order, and a compacted topic keeps none of them). The
source warns once per such table."""

from __future__ import annotations

import logging
from dataclasses import replace

from dbus_ray.errors import DbusError
from dbus_ray.model import RowBatch, TableRows
from dbus_ray.routing import TableMatcher

log = logging.getLogger("dbus.mysql")


class MessageKeys:
    def __init__(self, pipeline: str, columns: dict[str, list[str]]) -> None:
        self.pipeline = pipeline
        self.rules = [(TableMatcher([pattern]), tuple(cols), pattern) for pattern, cols in columns.items()]
        self.decided: dict[tuple[str, str], tuple[str, ...] | None] = {}  # None: the table's own key

    def apply(self, batch: RowBatch) -> RowBatch:
        """The batch with each table run keyed by its message key columns."""
        parts = [self._keyed(part) for part in batch.parts]
        if all(new is old for new, old in zip(parts, batch.parts)):
            return batch
        return RowBatch(batch.pipeline, batch.seq, parts, batch.checkpoint, batch.ts)

    def _keyed(self, part: TableRows) -> TableRows:
        name = (part.db, part.table)
        if name not in self.decided:
            self.decided[name] = self._decide(part)
        key = self.decided[name]
        return part if key is None or key == part.key else replace(part, key=key)

    def _decide(self, part: TableRows) -> tuple[str, ...] | None:
        for match, cols, pattern in self.rules:
            if match(part.db, part.table):
                struct = part.data.schema.field("after").type
                present = {struct.field(i).name for i in range(struct.num_fields)}
                missing = [c for c in cols if c not in present]
                if missing:
                    raise DbusError(f"source.message_key_columns[{pattern!r}]: table {part.name} has no column "
                                    f"{', '.join(missing)} (it has {', '.join(sorted(present))})")
                return cols
        if not part.key:
            log.warning("[%s] table %s has no primary key: its row changes carry an empty key (the kafka sink "
                        "sends them with a null message key, spread over partitions without per-key order); set "
                        "source.message_key_columns to give it one", self.pipeline, part.name)
        return None
