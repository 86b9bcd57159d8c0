"""Sink `delta`: keeps a copy of each source table in a Delta Lake table, equal to the source, exactly once.

Each source table `db.table` has a Delta table in `<path>/<table>` (`table` template, default `{db}/{table}`),
created from the source's columns (type mapping: `dbus_ray.sinks.delta_types`), or an existing one checked
(every source column present with the mapped type). Written through `deltalake` (delta-rs): readable while
the pipeline runs by anything that reads Delta (`deltalake.DeltaTable(p).to_pandas()`, DuckDB over
`DeltaTable(p).to_pyarrow_dataset()` or its `delta_scan`, Spark), each reader seeing whole commits only.

Per batch (or per `commit_interval_s`), each table's changes are collapsed per key to the last one, in order
(an update that changes the primary key deletes the old key and upserts the new), and applied with ONE Delta
`MERGE` (matched + delete -> delete, matched + upsert -> update, not matched + upsert -> insert). The commit
carries the pipeline's checkpoint in its commit info (`dbus.pipeline`, `dbus.sink`, `dbus.batch`: a counter of
commit rounds, `dbus.checkpoint`: the checkpoint after the round, `dbus.prev`: the one before it,
`dbus.tables`: the tables the round commits). Rows and checkpoint commit together: a writer killed before
the commit's log entry is written left only unreferenced data files (removed by vacuum).

With `checkpoint.store: delta` (`DeltaCheckpointStore`) the reader loads the checkpoint from the tables on
start: the round with the highest `dbus.batch`; when a crash cut that round between two tables (not every
table it names has committed it), the checkpoint before it (`dbus.prev`), whose replay re-applies that
round's changes to the tables it had reached (full row images: their rows end the same). Its own saves are
no-ops (except a checkpoint an operator sets, written as an empty commit of the first table).

Small files: every `compact_every` commits of a table it is compacted (`optimize.compact`, files up to
`target_file_mb`) and files no version newer than `vacuum_hours` needs are removed (`vacuum`); `dbus_ray.
sinks.delta.compact(path)` does both at any time.

DDL rows: CREATE TABLE, views, index changes and defaults need nothing; a change of columns stops the sink with
one line naming the statement (change the Delta table by hand, then move the checkpoint past it).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
from deltalake import CommitProperties, DeltaTable
from deltalake.exceptions import DeltaError, TableNotFoundError

from dbus_ray.checkpoints import CheckpointStore
from dbus_ray.errors import DbusError
from dbus_ray.model import RowBatch, TableRows
from dbus_ray.registry import Sink, checkpoint_store, sink
from dbus_ray.sinks.delta_types import same_column, to_delta
from dbus_ray.sinks.postgres_types import alter_actions
from dbus_ray.validation import Invalid

log = logging.getLogger("dbus.delta")
OP = "__dbus_op"  # the merge source's column saying upsert (`u`) or delete (`d`)


@dataclass
class DeltaOptions:
    path: str  # the directory holding the Delta tables (a local path)
    table: str = "{db}/{table}"  # a table's directory under path: may use {db} and {table}
    create: bool = True  # create missing tables from the source's columns
    # seconds between commits: 0 commits each batch; more collects the changes of several batches per key
    # and merges them once (fewer, larger files and commits; rows become visible later: the commit comes with
    # the first batch after the interval, or at a stop; needs `checkpoint.store: delta`, as a batch is
    # acknowledged before its commit)
    commit_interval_s: float = 0.0
    # compact a table (merge its small files) every this many commits of the sink; 0 = never
    compact_every: int = 100
    target_file_mb: int = 128  # the size compaction aims at per file
    # after compacting, remove the files no table version newer than this many hours uses
    vacuum_hours: float = 168.0

    def __post_init__(self) -> None:
        if not self.path.strip():
            raise Invalid("path", "must not be empty")
        if "://" in self.path and not self.path.startswith("file://"):
            raise Invalid("path", "must be a local directory (object stores are not supported yet)")
        try:
            self.table.format(db="d", table="t")
        except (KeyError, IndexError, ValueError) as exc:
            raise Invalid("table", f"may use only {{db}} and {{table}}, not {exc}") from None
        if not self.table.strip():
            raise Invalid("table", "must not be empty")
        if self.commit_interval_s < 0:
            raise Invalid("commit_interval_s", "must not be negative")
        if self.compact_every < 0:
            raise Invalid("compact_every", "must not be negative")
        if self.target_file_mb < 1:
            raise Invalid("target_file_mb", "must be at least 1")
        if self.vacuum_hours < 0:
            raise Invalid("vacuum_hours", "must not be negative")

    @property
    def root(self) -> Path:
        return Path(self.path.removeprefix("file://"))


@dataclass
class Pending:
    """One table's changes not merged yet: image chunks and, per key, the last change (chunk, row, op)."""

    db: str
    table: str
    key: tuple[str, ...]
    image: pa.StructType
    chunks: list[pa.StructArray] = field(default_factory=list)
    last: dict[tuple[Any, ...], tuple[int, int, str]] = field(default_factory=dict)

    def add(self, run: TableRows) -> None:
        ops = run.data.column("op").to_pylist()
        before, after = run.data.column("before"), run.data.column("after")
        bkeys = list(zip(*(before.field(k).to_pylist() for k in self.key)))
        akeys = list(zip(*(after.field(k).to_pylist() for k in self.key)))
        had_before = before.is_valid().to_pylist()
        nb, na = len(self.chunks), len(self.chunks) + 1
        self.chunks += [before, after]
        for i, op in enumerate(ops):
            if op == "delete":
                self.last[bkeys[i]] = (nb, i, "d")
            elif op in ("insert", "read", "update"):
                if op == "update" and had_before[i] and bkeys[i] != akeys[i]:
                    self.last[bkeys[i]] = (nb, i, "d")
                self.last[akeys[i]] = (na, i, "u")
            else:
                raise DbusError(f"table {run.name}: unknown op {op!r}")

    def source(self) -> pa.Table:
        """The merge source: one row per key, its op and its image in the Delta types."""
        picks: dict[int, list[int]] = {}
        ops: dict[int, list[str]] = {}
        for chunk, row, op in self.last.values():
            picks.setdefault(chunk, []).append(row)
            ops.setdefault(chunk, []).append(op)
        parts = [self.chunks[c].take(pa.array(rows, pa.int64())).cast(self.image) for c, rows in picks.items()]
        images = pa.concat_arrays(parts) if parts else pa.array([], self.image)
        columns = {OP: pa.array([o for c in picks for o in ops[c]], pa.string())}
        for f in self.image:
            columns[f.name] = to_delta(images.field(f.name), f"{self.db}.{self.table}.{f.name}")
        return pa.table(columns)


def quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


@sink("delta")
class DeltaSink(Sink):
    Options = DeltaOptions

    @staticmethod
    def check_store(options: DeltaOptions, store: str) -> None:
        """Batches collected over `commit_interval_s` are acknowledged before they commit: only a checkpoint
        that commits with them (the store `delta`) keeps them from being lost in a crash."""
        if options.commit_interval_s > 0 and store != "delta":
            raise Invalid("commit_interval_s", f"needs checkpoint.store: delta, not {store} (the batches of an "
                          "interval are acknowledged before they commit; only a checkpoint in the same commit "
                          "keeps a crash from losing them)")

    def open(self) -> None:
        self.options.root.mkdir(parents=True, exist_ok=True)
        last = read_checkpoint(self.options.root, self.pipeline)
        self.round = last[0] if last else 0  # the last commit round's number, continued
        self.prev = last[1] if last else None  # the checkpoint after it
        self.pending: dict[str, Pending] = {}  # by table directory (relative to path)
        self.checkpoint: dict[str, Any] | None = None
        self.since = time.monotonic()
        self.commits = 0
        self.checked: dict[str, pa.Schema] = {}  # the schema each table was checked for
        self.tables: dict[str, DeltaTable] = {}  # open tables, current after our own commits (one writer)
        self.failed = False  # a batch failed: nothing pending may commit (it may hold part of that batch)

    def close(self) -> None:
        if getattr(self, "pending", None) and not self.failed:
            self._commit()

    def write(self, batch: RowBatch) -> None:
        if self.failed:
            raise DbusError(f"delta sink {self.name}: an earlier batch failed; restart the pipeline")
        try:
            self._write(batch)
        except BaseException:
            self.failed = True
            self.pending.clear()
            raise

    def _write(self, batch: RowBatch) -> None:
        if not batch.parts and batch.checkpoint is None:
            return
        for part in batch.parts:
            if not part.num_rows:
                continue
            if part.data.column("op")[0].as_py() == "ddl":
                self._ddl(part)
                continue
            self._add(part)
        if batch.checkpoint is not None:
            self.checkpoint = {"source": batch.checkpoint, "seq": batch.seq, "time": time.time(), "sink": self.name}
        if time.monotonic() - self.since >= self.options.commit_interval_s:
            self._commit()

    def _add(self, run: TableRows) -> None:
        where = f"delta sink {self.name}: table {run.name}"
        if not run.key:
            raise DbusError(f"{where} has no primary key: the sink needs one to apply updates and deletes (add "
                            "one at the source, or leave the table out)")
        if "absent" in run.data.schema.names and any(run.data.column("absent").to_pylist()):
            raise DbusError(f"{where} has row images without some columns (binlog_row_image MINIMAL/NOBLOB): the "
                            "sink needs binlog_row_image=FULL")
        image = run.data.schema.field("after").type
        rel = self.options.table.format(db=run.db, table=run.table)
        pending = self.pending.get(rel)
        if pending is not None and [f.name for f in pending.image] != [f.name for f in image]:
            raise DbusError(f"{where}: its columns changed without a DDL row; the sink stops (change the Delta "
                            "table by hand, then `dbus checkpoint set` past the change)")
        if pending is None:
            pending = self.pending[rel] = Pending(run.db, run.table, tuple(run.key), image)
        try:
            pending.add(run)
        except DbusError as exc:
            raise DbusError(f"delta sink {self.name}: {exc}") from None

    # ------------------------------------------------------------------ commits
    def _commit(self) -> None:
        """Merge every pending table, each in one commit carrying the round's checkpoint."""
        self.since = time.monotonic()
        if not self.pending or self.checkpoint is None:
            return
        self.round += 1
        meta = {"dbus.pipeline": self.pipeline, "dbus.sink": self.name, "dbus.batch": str(self.round),
                "dbus.checkpoint": json.dumps(self.checkpoint, separators=(",", ":")),
                "dbus.prev": json.dumps(self.prev, separators=(",", ":")),
                "dbus.tables": json.dumps(sorted(self.pending))}
        for rel, pending in sorted(self.pending.items()):
            try:
                self._merge(rel, pending, meta)
            except DeltaError as exc:
                raise DbusError(f"delta sink {self.name}: table {rel} not merged: {_reason(exc)}") from None
        self.pending.clear()
        self.prev = self.checkpoint
        self.commits += 1
        every = self.options.compact_every
        if every and self.commits % every == 0:
            for rel in json.loads(meta["dbus.tables"]):
                compact(self.options.root / rel, self.options.target_file_mb, self.options.vacuum_hours, meta)
                self.tables.pop(rel, None)  # reopened at its new version on the next merge

    def _merge(self, rel: str, pending: Pending, meta: dict[str, str]) -> None:
        source = pending.source()
        uri = str(self.options.root / rel)
        table = self._table(uri, rel, pending, source.schema)
        cols = [quote(c) for c in source.schema.names if c != OP]
        on = " AND ".join(f"t.{quote(k)} = s.{quote(k)}" for k in pending.key)
        rest = {c: f"s.{c}" for c in cols if c.strip("`") not in pending.key}
        merge = table.merge(source, predicate=on, source_alias="s", target_alias="t",
                            commit_properties=CommitProperties(custom_metadata=meta))
        merge = merge.when_matched_delete(predicate=f"s.{quote(OP)} = 'd'")
        if rest:
            merge = merge.when_matched_update(updates=rest, predicate=f"s.{quote(OP)} = 'u'")
        merge.when_not_matched_insert(updates={c: f"s.{c}" for c in cols}, predicate=f"s.{quote(OP)} = 'u'").execute()

    def _table(self, uri: str, rel: str, pending: Pending, schema: pa.Schema) -> DeltaTable:
        wanted = pa.schema([f for f in schema if f.name != OP])
        where = f"delta sink {self.name}: Delta table {uri} of {pending.db}.{pending.table}"
        if rel in self.tables and self.checked.get(rel) == wanted:
            return self.tables[rel]
        try:
            table = DeltaTable(uri)
        except TableNotFoundError:
            if not self.options.create:
                raise DbusError(f"{where} does not exist (create it, or set create: true)") from None
            Path(uri).mkdir(parents=True, exist_ok=True)
            table = DeltaTable.create(uri, schema=wanted, name=pending.table,
                                      description=f"copy of {pending.db}.{pending.table} by dbus pipeline "
                                                  f"{self.pipeline}")
            log.info("[%s] created Delta table %s for %s.%s", self.pipeline, uri, pending.db, pending.table)
            self.checked[rel] = wanted
            self.tables[rel] = table
            return table
        if self.checked.get(rel) != wanted:
            have = pa.schema(table.schema().to_arrow())
            for f in wanted:
                if f.name not in have.names:
                    raise DbusError(f"{where} has no column {f.name} (add it as {f.type})")
                if not same_column(f.type, have.field(f.name).type):
                    raise DbusError(f"{where}: column {f.name} is {have.field(f.name).type}, the source's values "
                                    f"need {f.type}")
            self.checked[rel] = wanted
        self.tables[rel] = table
        return table

    # ------------------------------------------------------------------ DDL
    def _ddl(self, part: TableRows) -> None:
        for image in part.data.column("after").to_pylist():
            statement = (image or {}).get("sql")
            if statement is None or alter_actions(statement) == []:
                continue  # a snapshot marker, or a statement that changes no columns
            short = " ".join(statement.split())
            short = short if len(short) <= 200 else short[:197] + "..."
            raise DbusError(f"delta sink {self.name}: source DDL on {part.name} `{short}` not applied (the delta "
                            "sink follows no change of columns): change the Delta table to match by hand, then "
                            "move the checkpoint past the statement (`dbus checkpoint set`)")


def compact(table_dir: str | os.PathLike[str], target_file_mb: int = 128, vacuum_hours: float = 168.0,
            meta: dict[str, str] | None = None) -> dict[str, Any]:
    """Compact a Delta table's small files into files of up to `target_file_mb`, then remove the files no
    version newer than `vacuum_hours` uses. The compaction commit carries `meta` (the sink passes its round's
    checkpoint, so the newest commit still names it). Returns the compaction's metrics."""
    table = DeltaTable(str(table_dir))
    props = CommitProperties(custom_metadata=meta) if meta else None
    metrics = table.optimize.compact(target_size=target_file_mb * 1024 * 1024, commit_properties=props)
    table.vacuum(retention_hours=int(vacuum_hours), dry_run=False, enforce_retention_duration=False,
                 commit_properties=props)
    return metrics


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# ------------------------------------------------------------------ the checkpoint in the tables
def delta_tables(root: Path) -> list[Path]:
    """Every Delta table (a directory with `_delta_log`) under root."""
    found = []
    for dirpath, dirnames, _ in os.walk(root):
        if "_delta_log" in dirnames:
            found.append(Path(dirpath))
            dirnames.clear()
        else:
            dirnames[:] = [d for d in dirnames if not d.startswith((".", "_"))]
    return sorted(found)


def last_commit(table: Path, pipeline: str) -> dict[str, Any] | None:
    """The newest commit info of `table` written by `pipeline` (None when it has none, also when the table's
    log has no commit yet: a writer killed while it created the table leaves `_delta_log` without one)."""
    try:
        dt = DeltaTable(str(table))
    except TableNotFoundError:
        return None
    limit = 20
    while True:
        history = dt.history(limit)
        for info in history:
            if info.get("dbus.pipeline") == pipeline and "dbus.batch" in info:
                return info
        if len(history) < limit:
            return None
        limit *= 4


def read_checkpoint(root: Path, pipeline: str) -> tuple[int, dict[str, Any] | None] | None:
    """(the last commit round, the checkpoint to resume from) of `pipeline`'s tables under root, or None."""
    if not root.is_dir():
        return None
    commits = {}
    for table in delta_tables(root):
        info = last_commit(table, pipeline)
        if info is not None:
            commits[table.relative_to(root).as_posix()] = info
    if not commits:
        return None
    newest = max(commits.values(), key=lambda info: int(info["dbus.batch"]))
    number = int(newest["dbus.batch"])
    whole = all(rel in commits and int(commits[rel]["dbus.batch"]) == number
                for rel in json.loads(newest.get("dbus.tables", "[]")))
    if whole:
        return number, json.loads(newest["dbus.checkpoint"])
    log.warning("[%s] commit round %d reached only some of its tables: resuming before it", pipeline, number)
    return number, json.loads(newest.get("dbus.prev", "null"))


@checkpoint_store("delta")
class DeltaCheckpointStore(CheckpointStore):
    """In the commit info of the delta sink's tables, committed with each round's rows.

    `load()` reads it (see `read_checkpoint`); `save()` is a no-op (the sink committed it already), except for
    a checkpoint an operator sets (`dbus checkpoint set`), written as an empty commit of the newest table."""

    def __init__(self, pipeline: str, path: str) -> None:
        self.pipeline = pipeline
        self.root = Path(path.removeprefix("file://"))

    @classmethod
    def for_pipeline(cls, pipeline: str, pipeline_dir: Any, cfg: Any = None) -> DeltaCheckpointStore:
        if cfg is None:
            raise ValueError("checkpoint store delta needs the pipeline config")
        if len(cfg.sinks) != 1 or cfg.sinks[0].type != "delta":
            raise ValueError(f"pipeline {pipeline}: checkpoint store delta needs exactly one sink, of type delta "
                             "(its commits carry the checkpoint)")
        return cls(pipeline, cfg.sinks[0].options.path)

    def load(self) -> dict[str, Any] | None:
        found = read_checkpoint(self.root, self.pipeline)
        return None if found is None else found[1]

    def save(self, checkpoint: dict[str, Any]) -> None:
        if checkpoint.get("set_by") != "operator":
            return  # committed by the delta sink with the round's rows
        tables = delta_tables(self.root) if self.root.is_dir() else []
        if not tables:
            raise RuntimeError(f"checkpoint store delta: no Delta table under {self.root} to hold the checkpoint")
        found = read_checkpoint(self.root, self.pipeline)
        number = (found[0] if found else 0) + 1
        meta = {"dbus.pipeline": self.pipeline, "dbus.sink": "operator", "dbus.batch": str(number),
                "dbus.checkpoint": json.dumps(checkpoint, separators=(",", ":")),
                "dbus.prev": json.dumps(checkpoint, separators=(",", ":")),
                "dbus.tables": json.dumps([tables[0].relative_to(self.root).as_posix()])}
        dt = DeltaTable(str(tables[0]))
        dt.alter.set_table_properties({"dbus.checkpoint.set": str(number)}, raise_if_not_exists=False,
                                      commit_properties=CommitProperties(custom_metadata=meta))

    def describe(self) -> str:
        return f"delta {self.root} pipeline {self.pipeline}"
