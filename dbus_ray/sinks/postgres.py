"""Sink `postgres`: keeps a copy of each source table in PostgreSQL, equal to the source, exactly once.

Each source table `db.table` has a target table (`schema` / `table` templates, default `"{db}"."{table}"`),
created from the source's columns (type mapping: `dbus_ray.sinks.postgres_types`) with the source's primary
key, or an existing one checked for compatibility (every source column present with a type that holds its
values, a primary key or unique index on the source's key columns).

Each batch is applied in ONE PostgreSQL transaction: per table, the batch's changes are collapsed per key to
the last one, in order (an update that changes the primary key deletes the old key and upserts the new),
`COPY`'d into a temporary staging table, then applied with one `DELETE ... USING` and one `INSERT ... ON
CONFLICT DO UPDATE`; the batch's checkpoint (`{"source": .., "seq": .., "time": ..}`) is upserted in the
bookkeeping table `checkpoint_table` (`pipeline text primary key, checkpoint jsonb, updated timestamptz`) in
the same transaction, so rows and checkpoint commit together.

With `checkpoint.store: postgres` (`PostgresCheckpointStore`) the reader loads that checkpoint on start and
its own saves are no-ops: a crash anywhere neither loses a row nor applies one twice. The sink holds a session
advisory lock per pipeline from `open` on, so a restarted writer waits until its predecessor's connection (and
any transaction it left open) is gone before the reader loads the checkpoint.

DDL rows (`op: ddl`): with `ddl: follow`, `ALTER TABLE ... ADD [COLUMN]` (type mapped from the MySQL
definition, a literal DEFAULT kept, a NOT NULL column's implicit 0 or '' given: the existing rows get what
MySQL gives them, else not followed, `postgres_types.column_type`) and `DROP [COLUMN]` are applied to the
target in the batch's transaction;
CREATE TABLE, CREATE DATABASE, views, index changes, table options and column defaults need nothing. Any
other DDL (or any column change with `ddl: stop`) stops the sink with one line naming the statement: change
the target by hand, then move the checkpoint past it with `dbus checkpoint set`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import psycopg
from psycopg import sql

from dbus_ray.checkpoints import CheckpointStore
from dbus_ray.errors import DbusError
from dbus_ray.model import RowBatch, TableRows, dumps
from dbus_ray.registry import Sink, checkpoint_store, sink
from dbus_ray.sinks.postgres_types import alter_actions, compatible, pg_type
from dbus_ray.validation import Invalid

log = logging.getLogger("dbus.postgres")
OP = "__dbus_op"  # the staging table's column saying upsert (`u`) or delete (`d`)


def _name_part(key: str, text: str) -> None:
    if not text.strip():
        raise Invalid(key, "must not be empty")
    try:
        text.format(db="d", table="t")
    except (KeyError, IndexError, ValueError) as exc:
        raise Invalid(key, f"may use only {{db}} and {{table}}, not {exc}") from None


def split_qualified(text: str) -> tuple[str, str]:
    schema, _, table = text.rpartition(".")
    return schema or "public", table


@dataclass
class PostgresOptions:
    dsn: str  # libpq connection string or URI of the target database (`host=h port=5432 user=u dbname=d`)
    schema: str = "{db}"  # the target schema of a source table: a name, may use {db} and {table}
    table: str = "{table}"  # the target table's name: may use {db} and {table} (e.g. `{db}_{table}`)
    create: bool = True  # create missing schemas and target tables from the source's columns
    # `follow`: apply the source's ADD/DROP COLUMN to the target; `stop`: stop at them (any other change of
    # columns always stops the sink; CREATE TABLE and index changes need nothing)
    ddl: Literal["follow", "stop"] = "stop"
    checkpoint_table: str = "public.dbus_checkpoints"  # the bookkeeping table, [schema.]name
    timeout_s: float = 30.0  # connect timeout, and how long open waits for a previous writer's lock

    def __post_init__(self) -> None:
        if not self.dsn.strip():
            raise Invalid("dsn", "must not be empty")
        _name_part("schema", self.schema)
        _name_part("table", self.table)
        if not split_qualified(self.checkpoint_table)[1]:
            raise Invalid("checkpoint_table", "must name a table")
        if self.timeout_s <= 0:
            raise Invalid("timeout_s", "must be positive")


@dataclass
class Target:
    """A target table as the sink knows it: qualified name, columns (name -> type), key columns."""

    schema: str
    table: str
    columns: dict[str, str]
    key: tuple[str, ...]
    unique: list[tuple[str, ...]] = field(default_factory=list)  # every unique key (the primary key first)

    @property
    def ident(self) -> sql.Composable:
        return sql.Identifier(self.schema, self.table)

    @property
    def name(self) -> str:
        return f"{self.schema}.{self.table}"


def checkpoint_ident(table: str) -> sql.Composable:
    return sql.Identifier(*split_qualified(table))


def ensure_checkpoint_table(conn: psycopg.Connection, table: str) -> None:
    schema, _ = split_qualified(table)
    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
    conn.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} (pipeline text PRIMARY KEY, checkpoint jsonb NOT NULL, "
                         "updated timestamptz NOT NULL DEFAULT now())").format(checkpoint_ident(table)))


def write_checkpoint(conn: psycopg.Connection, table: str, pipeline: str, checkpoint: dict[str, Any]) -> None:
    conn.execute(sql.SQL("INSERT INTO {} (pipeline, checkpoint, updated) VALUES (%s, %s::jsonb, now()) "
                         "ON CONFLICT (pipeline) DO UPDATE SET checkpoint = EXCLUDED.checkpoint, updated = now()")
                 .format(checkpoint_ident(table)), (pipeline, dumps(checkpoint)))


@sink("postgres")
class PostgresSink(Sink):
    Options = PostgresOptions

    def open(self) -> None:
        o = self.options
        try:
            self.conn = psycopg.connect(o.dsn, connect_timeout=max(1, int(o.timeout_s)), autocommit=True,
                                        application_name=f"dbus-{self.pipeline}-{self.name}"[:63])
        except psycopg.Error as exc:
            raise DbusError(f"postgres sink {self.name}: cannot connect: {_reason(exc)}") from None
        # one writer per pipeline at a time: a restarted writer waits here until its predecessor's session
        # (and the transaction it may have left open) is gone
        self.conn.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(f"{int(o.timeout_s * 1000)}ms")))
        try:
            self.conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (f"dbus:{self.pipeline}",))
        except psycopg.errors.LockNotAvailable:
            raise DbusError(f"postgres sink {self.name}: another writer of pipeline {self.pipeline} still holds "
                            f"its lock after {o.timeout_s:.0f} s (timeout_s)") from None
        ensure_checkpoint_table(self.conn, o.checkpoint_table)
        self.targets: dict[tuple[str, str], Target] = {}

    def close(self) -> None:
        conn = getattr(self, "conn", None)
        if conn is not None:
            conn.close()

    # ------------------------------------------------------------------ writing
    def write(self, batch: RowBatch) -> None:
        if not batch.parts and batch.checkpoint is None:
            return
        try:
            with self.conn.transaction():
                pending: dict[tuple[str, str], list[TableRows]] = {}
                for part in batch.parts:
                    if self._is_ddl(part):
                        for runs in pending.values():
                            self._apply(runs)
                        pending.clear()
                        self._ddl(part)
                    elif part.num_rows:
                        pending.setdefault((part.db, part.table), []).append(part)
                for runs in pending.values():
                    self._apply(runs)
                if batch.checkpoint is not None:
                    write_checkpoint(self.conn, self.options.checkpoint_table, self.pipeline,
                                     {"source": batch.checkpoint, "seq": batch.seq, "time": time.time(),
                                      "sink": self.name})
        except psycopg.Error as exc:
            self.targets.clear()  # the transaction's DDL rolled back too
            raise DbusError(f"postgres sink {self.name}: batch {batch.seq} not applied: {_reason(exc)}") from None
        except BaseException:
            self.targets.clear()
            raise

    @staticmethod
    def _is_ddl(part: TableRows) -> bool:
        ops = part.data.column("op")
        return part.num_rows > 0 and ops[0].as_py() == "ddl"

    def _apply(self, runs: list[TableRows]) -> None:
        """Apply one table's runs of the batch: collapsed per key, staged with COPY, one DELETE, one INSERT."""
        first = runs[0]
        if not first.key:
            raise DbusError(f"postgres sink {self.name}: table {first.name} has no primary key: the sink needs "
                            "one to apply updates and deletes (add one at the source, or leave the table out)")
        final: dict[tuple[Any, ...], dict[str, Any] | None] = {}  # key -> last after image (None: deleted)
        columns: list[str] | None = None
        target: Target | None = None
        for run in runs:
            if "absent" in run.data.schema.names and any(run.data.column("absent").to_pylist()):
                raise DbusError(f"postgres sink {self.name}: table {run.name} has row images without some "
                                "columns (binlog_row_image MINIMAL/NOBLOB): the sink needs binlog_row_image=FULL")
            image = run.data.schema.field("after").type
            names = [f.name for f in image]
            if names != columns:  # the source's columns changed within the batch: apply what came before
                if target is not None and columns is not None:
                    self._flush(target, columns, final)
                final = {}
                columns, target = names, self._target(run, image)
            self._apply_run(run, final)
        if target is not None and columns is not None:
            self._flush(target, columns, final)

    def _apply_run(self, run: TableRows, final: dict[tuple[Any, ...], dict[str, Any] | None]) -> None:
        ops = run.data.column("op").to_pylist()
        befores = run.data.column("before").to_pylist()
        afters = run.data.column("after").to_pylist()
        key = run.key
        for op, before, after in zip(ops, befores, afters):
            if op == "delete":
                final[tuple(before[k] for k in key)] = None
            elif op in ("insert", "read", "update"):
                if op == "update" and before is not None:
                    old = tuple(before[k] for k in key)
                    new = tuple(after[k] for k in key)
                    if old != new:
                        final[old] = None
                final[tuple(after[k] for k in key)] = after
            else:
                raise DbusError(f"postgres sink {self.name}: table {run.name}: unknown op {op!r}")

    def _flush(self, target: Target, columns: list[str], final: dict[tuple[Any, ...], dict[str, Any] | None]) -> None:
        if not final:
            return
        cols = [c for c in columns if c in target.columns]
        stage = sql.Identifier("dbus_stage")
        col_ids = sql.SQL(", ").join(sql.Identifier(c) for c in cols)
        self.conn.execute("DROP TABLE IF EXISTS pg_temp.dbus_stage")
        self.conn.execute(sql.SQL("CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT ''::text AS {}, {} FROM {} "
                                  "WITH NO DATA").format(stage, sql.Identifier(OP), col_ids, target.ident))
        key_pos = [cols.index(k) for k in target.key]
        with self.conn.cursor() as cur:
            with cur.copy(sql.SQL("COPY {} ({}, {}) FROM STDIN").format(stage, sql.Identifier(OP), col_ids)) as cp:
                for k, image in final.items():
                    if image is None:
                        row: list[Any] = [None] * len(cols)
                        for pos, value in zip(key_pos, k):
                            row[pos] = value
                        cp.write_row(["d", *row])
                    else:
                        cp.write_row(["u", *(image.get(c) for c in cols)])
            on_key = sql.SQL(" AND ").join(sql.SQL("t.{0} = s.{0}").format(sql.Identifier(k)) for k in target.key)
            cur.execute(sql.SQL("DELETE FROM {} t USING {} s WHERE s.{} = 'd' AND {}")
                        .format(target.ident, stage, sql.Identifier(OP), on_key))
            rest = [c for c in cols if c not in target.key]
            keys = sql.SQL(", ").join(sql.Identifier(k) for k in target.key)
            action = sql.SQL("DO NOTHING") if not rest else sql.SQL("DO UPDATE SET {}").format(
                sql.SQL(", ").join(sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in rest))
            cur.execute(sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {} WHERE {} = 'u' ON CONFLICT ({}) {}")
                        .format(target.ident, col_ids, col_ids, stage, sql.Identifier(OP), keys, action))

    # ------------------------------------------------------------------ target tables
    def _names(self, db: str, table: str) -> tuple[str, str]:
        o = self.options
        return o.schema.format(db=db, table=table), o.table.format(db=db, table=table)

    def _describe(self, schema: str, table: str) -> Target | None:
        rows = self.conn.execute(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
            "JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            (schema, table)).fetchall()
        if not rows:
            return None
        keys = self.conn.execute(
            "SELECT array(SELECT a.attname FROM unnest(i.indkey) k JOIN pg_attribute a ON a.attrelid = i.indrelid "
            "AND a.attnum = k) FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON "
            "n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s AND i.indisunique "
            "AND i.indpred IS NULL AND i.indexprs IS NULL ORDER BY i.indisprimary DESC", (schema, table)).fetchall()
        target = Target(schema, table, dict(rows), tuple(keys[0][0]) if keys else ())
        target.unique = [tuple(k[0]) for k in keys]
        return target

    def _target(self, part: TableRows, image: Any) -> Target:
        """The target of a source table: cached; else found and checked, or created."""
        schema, table = self._names(part.db, part.table)
        cached = self.targets.get((schema, table))
        wanted = {f.name: pg_type(f.type, f"{part.name}.{f.name}") for f in image}
        if cached is not None and all(c in cached.columns for c in wanted):
            return cached
        target = self._describe(schema, table)
        where = f"postgres sink {self.name}: target table {schema}.{table} of {part.name}"
        if target is None:
            if not self.options.create:
                raise DbusError(f"{where} does not exist (create it, or set create: true)")
            cols = [sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(t)) for c, t in wanted.items()]
            cols.append(sql.SQL("PRIMARY KEY ({})").format(sql.SQL(", ").join(sql.Identifier(k) for k in part.key)))
            self.conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
            self.conn.execute(sql.SQL("CREATE TABLE {} ({})").format(sql.Identifier(schema, table),
                                                                       sql.SQL(", ").join(cols)))
            log.info("[%s] created %s.%s for %s", self.pipeline, schema, table, part.name)
            target = Target(schema, table, wanted, tuple(part.key))
        else:
            for col, typ in wanted.items():
                have = target.columns.get(col)
                if have is None:
                    raise DbusError(f"{where} has no column {col} (add it as {typ}, or set ddl: follow before "
                                    "the source adds it)")
                if not compatible(typ, have):
                    raise DbusError(f"{where}: column {col} is {have}, which cannot hold the source's values "
                                    f"(needs {typ})")
            if set(part.key) not in [set(k) for k in target.unique]:
                raise DbusError(f"{where} needs a primary key or unique index on ({', '.join(part.key)}), "
                                f"it has {'(' + ', '.join(target.key) + ')' if target.key else 'none'}")
            target.key = tuple(part.key)
        self.targets[(schema, table)] = target
        return target

    # ------------------------------------------------------------------ DDL
    def _ddl(self, part: TableRows) -> None:
        for image in part.data.column("after").to_pylist():
            statement = (image or {}).get("sql")
            if statement is None:
                continue  # a snapshot marker, not a statement
            self._statement(part, statement)

    def _statement(self, part: TableRows, statement: str) -> None:
        short = " ".join(statement.split())
        short = short if len(short) <= 200 else short[:197] + "..."
        actions = alter_actions(statement)
        if actions == []:
            return
        if actions is None or self.options.ddl != "follow":
            why = ("only ALTER TABLE ADD/DROP COLUMN can be followed" if actions is None
                   else "ddl: stop (set ddl: follow to apply ADD/DROP COLUMN)")
            raise DbusError(f"postgres sink {self.name}: source DDL on {part.name} `{short}` not applied ({why}): "
                            "change the target table to match by hand, then move the checkpoint past the "
                            "statement (`dbus checkpoint set`)")
        schema, table = self._names(part.db, part.table)
        target = self.targets.get((schema, table)) or self._describe(schema, table)
        if target is None:
            return  # created from the rows' columns when its first rows come
        ident = sql.Identifier(schema, table)
        for kind, column, typ, default in actions:
            if kind == "add" and column not in target.columns:
                extra = sql.SQL(" DEFAULT {}").format(sql.SQL(default)) if default is not None else sql.SQL("")
                self.conn.execute(sql.SQL("ALTER TABLE {} ADD COLUMN {} {}{}")
                                  .format(ident, sql.Identifier(column), sql.SQL(typ or "text"), extra))
            elif kind == "drop" and column in target.columns:
                if column in target.key:
                    raise DbusError(f"postgres sink {self.name}: source DDL on {part.name} `{short}` drops key "
                                    f"column {column}: change the target by hand, then `dbus checkpoint set` past it")
                self.conn.execute(sql.SQL("ALTER TABLE {} DROP COLUMN {}").format(ident, sql.Identifier(column)))
        log.info("[%s] applied %s to %s.%s", self.pipeline, short, schema, table)
        self.targets.pop((schema, table), None)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# ------------------------------------------------------------------ checkpoint store
@checkpoint_store("postgres")
class PostgresCheckpointStore(CheckpointStore):
    """In the postgres sink's bookkeeping table, committed with each batch's rows.

    `load()` reads it; `save()` is a no-op (the sink committed it already), except for a checkpoint an operator
    sets (`dbus checkpoint set`), which it writes."""

    def __init__(self, pipeline: str, dsn: str, table: str = "public.dbus_checkpoints", timeout_s: float = 30.0):
        self.pipeline = pipeline
        self.dsn = dsn
        self.table = table
        self.timeout_s = timeout_s

    @classmethod
    def for_pipeline(cls, pipeline: str, pipeline_dir: Any, cfg: Any = None) -> PostgresCheckpointStore:
        if cfg is None:
            raise ValueError("checkpoint store postgres needs the pipeline config")
        found = [s for s in cfg.sinks if s.type == "postgres"]
        if len(found) != 1 or len(cfg.sinks) != 1:
            raise ValueError(f"pipeline {pipeline}: checkpoint store postgres needs exactly one sink, of type "
                             "postgres (its transactions carry the checkpoint)")
        o = found[0].options
        return cls(pipeline, o.dsn, o.checkpoint_table, o.timeout_s)

    def _connect(self) -> psycopg.Connection:
        try:
            return psycopg.connect(self.dsn, connect_timeout=max(1, int(self.timeout_s)), autocommit=True)
        except psycopg.Error as exc:
            raise RuntimeError(f"checkpoint store postgres: cannot connect: {_reason(exc)}") from None

    def load(self) -> dict[str, Any] | None:
        with self._connect() as conn:
            if conn.execute("SELECT to_regclass(%s)", (self.table,)).fetchone()[0] is None:
                return None
            row = conn.execute(sql.SQL("SELECT checkpoint FROM {} WHERE pipeline = %s")
                               .format(checkpoint_ident(self.table)), (self.pipeline,)).fetchone()
        return None if row is None else row[0]

    def save(self, checkpoint: dict[str, Any]) -> None:
        if checkpoint.get("set_by") != "operator":
            return  # committed by the postgres sink in the transaction of the batch's rows
        with self._connect() as conn:
            ensure_checkpoint_table(conn, self.table)
            write_checkpoint(conn, self.table, self.pipeline, checkpoint)

    def describe(self) -> str:
        return f"postgres {self.table} key {self.pipeline}"
