"""Which columns key a table's row changes (the `key` of each row, a Kafka message's key): the table's
primary key, or the columns `message_key_columns` names for it (as Debezium's `message.key.columns`),
e.g. `{"shop.audit_log": ["ts", "id"]}` (keys are `db.table` globs, the first match wins).

Key columns are in the primary key's own order (`PRIMARY KEY (b, a)` gives `{"b":..,"a":..}`), for binlog and
snapshot rows alike, so one row's key (and its Kafka message key bytes) is the same whichever path read it.

A table with neither has an empty key: its rows carry `key {}`, and the Kafka sink sends them with a null
message key (spread over partitions, so no per-key order, and a compacted topic keeps none of them). The
source warns once per such table (DDL rows and snapshot markers, which have no key, are not judged).

An update that changes the key (`key_change: delete_insert`, the default, as Debezium does it) goes out as
two row changes at the update's position: a `delete` of the old key (its before image) then an `insert` of
the new key (its after image), so a compacted topic's last message of the old key is its delete (and, with
tombstones, a tombstone), never a row that no longer exists under that key. `key_change: update` keeps the
single `update`, keyed by the new key."""

from __future__ import annotations

import logging
from dataclasses import replace

import pyarrow as pa
import pyarrow.compute as pc

from dbus_ray.errors import DbusError
from dbus_ray.model import RowBatch, TableRows
from dbus_ray.routing import TableMatcher

log = logging.getLogger("dbus.mysql")


class MessageKeys:
    def __init__(self, pipeline: str, columns: dict[str, list[str]], key_change: str = "delete_insert") -> None:
        self.pipeline = pipeline
        self.split = key_change == "delete_insert"
        self.rules = [(TableMatcher([pattern]), tuple(cols), pattern) for pattern, cols in columns.items()]
        self.decided: dict[tuple[str, str], tuple[str, ...] | None] = {}  # None: the table's own key

    def apply(self, batch: RowBatch) -> RowBatch:
        """The batch with each table run keyed by its message key columns."""
        parts = [self._keyed(part) for part in batch.parts]
        if all(new is old for new, old in zip(parts, batch.parts)):
            return batch
        return RowBatch(batch.pipeline, batch.seq, parts, batch.checkpoint, batch.ts)

    def _keyed(self, part: TableRows) -> TableRows:
        if _ddl(part):  # a DDL statement or snapshot marker: no row of the table, no key to judge
            return part
        name = (part.db, part.table)
        if name not in self.decided:
            self.decided[name] = self._decide(part)
        key = self.decided[name]
        if key is not None and key != part.key:
            part = replace(part, key=key)
        return split_key_changes(part) if self.split and part.key else part

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


def _ddl(part: TableRows) -> bool:
    ops = part.data.column("op")
    return part.num_rows > 0 and ops[0].as_py() == "ddl" and pc.all(pc.equal(ops, "ddl")).as_py()


def split_key_changes(part: TableRows) -> TableRows:
    """`part` with each update whose key changed as a `delete` of the before image then an `insert` of the after
    image, both at the update's position (see the module docstring). A key column the after image leaves out
    (binlog_row_image MINIMAL: only changed columns) did not change."""
    data = part.data
    ops = data.column("op")
    updates = pc.equal(ops, "update")
    if not pc.any(updates).as_py():
        return part
    before, after = data.column("before"), data.column("after")
    names = {f.name for f in after.type}
    changed = pa.array([False] * data.num_rows)
    for k in part.key:
        if k not in names:
            return part
        b, a = before.field(k), after.field(k)
        differ = pc.or_(pc.fill_null(pc.not_equal(b, a), False), pc.and_(pc.is_null(b), pc.is_valid(a)))
        if "absent" not in data.schema.names:
            differ = pc.or_(differ, pc.and_(pc.is_valid(b), pc.is_null(a)))
        changed = pc.or_(changed, differ)
    changed = pc.and_(changed, updates)
    if not pc.any(changed).as_py():
        return part
    flags = changed.to_pylist()
    take, role = [], []  # role 0: the row as it is, 1: the delete half, 2: the insert half
    for i, flag in enumerate(flags):
        if flag:
            take += [i, i]
            role += [1, 2]
        else:
            take.append(i)
            role.append(0)
    rows = data.take(pa.array(take, pa.int64()))
    roles = pa.array(role, pa.int8())
    deletes, inserts = pc.equal(roles, 1), pc.equal(roles, 2)
    columns = {name: rows.column(name) for name in rows.schema.names}
    columns["op"] = pc.if_else(deletes, "delete", pc.if_else(inserts, "insert", columns["op"]))
    columns["before"] = _without(columns["before"], inserts)
    columns["after"] = _without(columns["after"], deletes)
    if "absent" in columns:  # each half keeps the absent columns of its own image
        absent = columns["absent"]
        kids = {f.name: absent.field(i) for i, f in enumerate(absent.type)}
        kids["before"] = pc.if_else(inserts, pa.scalar(None, kids["before"].type), kids["before"])
        kids["after"] = pc.if_else(deletes, pa.scalar(None, kids["after"].type), kids["after"])
        columns["absent"] = pa.StructArray.from_arrays(list(kids.values()), fields=list(absent.type),
                                                       mask=pc.is_null(absent))
    data = pa.RecordBatch.from_arrays([columns[n] for n in rows.schema.names], schema=rows.schema)
    return replace(part, data=data)


def _without(image: pa.Array, drop: pa.Array) -> pa.StructArray:
    """`image` (a struct column) null where `drop` is true."""
    mask = pc.or_(pc.is_null(image), drop)
    children = [image.field(i) for i in range(image.type.num_fields)]
    return pa.StructArray.from_arrays(children, fields=list(image.type), mask=mask)
