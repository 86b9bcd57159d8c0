"""Plugins by `type:`: the base classes of sources and sinks and the one registry of every kind of plugin
(sources, sinks, filter operators, checkpoint stores).

A plugin class registers itself with a decorator (`@source("mysql")`, `@sink("kafka")`,
`@operator("filter")`, `@checkpoint_store("gcs")`), declares its config keys as a dataclass in `Options`
(the config loader validates a section against it, so every plugin gets the same one-line errors for free)
and its optional abilities as class attributes (a source: `supports_backfill`, `reports_snapshot_progress`),
which the registry lists (`dbus plugins`) and the runtime reads instead of probing for methods.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass, fields, is_dataclass
from typing import Any, ClassVar

from dbus_ray.model import RowBatch

SOURCE, SINK, OPERATOR, STORE = "source", "sink", "operator", "checkpoint store"
KINDS = (SOURCE, SINK, OPERATOR, STORE)

#: The module of each built-in plugin, by kind and type: it registers the plugin when imported.
BUILTINS: dict[str, dict[str, str]] = {
    SOURCE: {
        "mock": "dbus_ray.sources.mock",
        "mysql": "dbus_ray.mysql.source",
        "kafka": "dbus_ray.sources.kafka",
        "binlog_files": "dbus_ray.sources.binlog_files",
    },
    SINK: {
        "null": "dbus_ray.sinks.null",
        "jsonl": "dbus_ray.sinks.jsonl",
        "stdout": "dbus_ray.sinks.stdout",
        "kafka": "dbus_ray.sinks.kafka",
        "parquet": "dbus_ray.sinks.parquet",
        "postgres": "dbus_ray.sinks.postgres",
        "delta": "dbus_ray.sinks.delta",
    },
    OPERATOR: {name: "dbus_ray.operators" for name in (
        "select", "filter", "regex", "rename", "drop_columns", "mask", "route", "split", "count")},
    STORE: {
        "file": "dbus_ray.checkpoints",
        "gcs": "dbus_ray.checkpoints",
        "kafka": "dbus_ray.kafka.checkpoints",
        "postgres": "dbus_ray.sinks.postgres",
        "delta": "dbus_ray.sinks.delta",
    },
}

#: The registered plugin classes, by kind and type.
PLUGINS: dict[str, dict[str, type]] = {kind: {} for kind in KINDS}
SOURCES: dict[str, type[Source]] = PLUGINS[SOURCE]
SINKS: dict[str, type[Sink]] = PLUGINS[SINK]
OPERATORS: dict[str, type] = PLUGINS[OPERATOR]
STORES: dict[str, type] = PLUGINS[STORE]


@dataclass
class NoOptions:
    pass


class Source:
    """Reads row changes. Runs inside the reader actor; `poll` may block briefly.

    The checkpoint a source returns in a batch is opaque to the rest of the bus: it is stored once
    every row up to that batch is delivered and handed back to `open` on the next start.

    Optional abilities: `supports_backfill` (it implements `backfill`: `dbus snapshot`) and
    `reports_snapshot_progress` (its `snapshot_progress` says how far a snapshot got). A subclass that
    implements the method and does not set the flag gets it set."""

    type_name: ClassVar[str]
    Options: ClassVar[type] = NoOptions
    supports_backfill: ClassVar[bool] = False
    reports_snapshot_progress: ClassVar[bool] = False
    #: the class that starts worker actors for a source that reads with some (a parallel snapshot), called as
    #: `worker_pool(endpoint, pipeline, n)`: handed in by the reader actor (`dbus_ray.actors`), since plugins
    #: never import the actors
    worker_pool: Any = None
    #: the class that starts decoder actors for a source that decodes with some (`source.decoders`), called as
    #: `decode_pool(pipeline, options, n)`: handed in by the reader actor, as `worker_pool`
    decode_pool: Any = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for flag, method in (("supports_backfill", "backfill"), ("reports_snapshot_progress", "snapshot_progress")):
            if flag not in cls.__dict__ and getattr(cls, method) is not getattr(Source, method):
                setattr(cls, flag, True)

    def __init__(self, pipeline: str, options: Any) -> None:
        self.pipeline = pipeline
        self.options = options

    @classmethod
    def parse_position(cls, text: str) -> dict[str, Any]:
        """A checkpoint from a position an operator typed (`dbus checkpoint set`)."""
        raise ValueError(f"a {cls.type_name} source has no position to set")

    def open(self, checkpoint: dict[str, Any] | None) -> None:
        """Position the source after `checkpoint` (None: where the config says to start)."""

    def poll(self, max_rows: int, seq: int) -> RowBatch | None:
        """The next batch of at most `max_rows` rows, or None when nothing is there right now."""
        raise NotImplementedError

    def position(self) -> dict[str, Any] | None:
        """When every row handed out is delivered and the source sits between transactions: a checkpoint
        after everything it read (e.g. past a commit that carried no rows); None when it has none."""
        return None

    def committed(self, checkpoint: Any) -> None:
        """`checkpoint` (a position this source returned) is saved: every row up to it reached every sink.
        Called by the reader, in its own thread (not the one that polls); e.g. to commit it upstream."""

    def start_checkpoint(self) -> dict[str, Any] | None:
        """Right after `open`, before the first batch: a checkpoint the reader saves at once, because what the
        source began (a snapshot) must be found by a resume even after a crash before the first batch's
        checkpoint; None when there is none (the default)."""
        return None

    def caught_up(self) -> bool:
        """True once the source has read up to where its origin was when the source was opened."""
        return False

    def lag_seconds(self) -> float:
        return 0.0

    def drained(self) -> bool:
        """The last `poll` ended because the origin had nothing more to give (not on `max_rows` or a time
        budget): the reader then lets rows gather while earlier batches are delivered. False by default."""
        return False

    def backfill(self, tables: list[str], where: str | None = None) -> dict[str, Any]:
        """An on-demand snapshot of `tables` (db.table) while the stream runs (`supports_backfill`)."""
        raise ValueError(f"a {self.type_name} source cannot backfill")

    def snapshot_progress(self) -> dict[str, Any] | None:
        """How far the snapshot got (`reports_snapshot_progress`); None when there is none."""
        return None

    def host(self) -> str | None:
        """The server the source reads from now (`dbus status`), e.g. the one in use of several; None: none."""
        return None

    def close(self) -> None:
        pass


class Sink:
    """Delivers batches. Runs inside a writer actor. `write` returns once the batch is durable
    (acknowledged by the destination); raising fails the pipeline and the checkpoint stays behind."""

    type_name: ClassVar[str]
    Options: ClassVar[type] = NoOptions

    def __init__(self, pipeline: str, name: str, options: Any) -> None:
        self.pipeline = pipeline
        self.name = name
        self.options = options

    def open(self) -> None:
        pass

    def write(self, batch: RowBatch) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


def register(kind: str, type_name: str):
    """A class decorator registering a plugin of `kind` under `type_name`."""

    def add(cls: type) -> type:
        cls.type_name = type_name
        PLUGINS[kind][type_name] = cls
        return cls

    return add


def source(type_name: str):
    return register(SOURCE, type_name)


def sink(type_name: str):
    return register(SINK, type_name)


def operator(type_name: str):
    return register(OPERATOR, type_name)


def checkpoint_store(type_name: str):
    return register(STORE, type_name)


def load_builtins() -> None:
    for modules in BUILTINS.values():
        for module in set(modules.values()):
            importlib.import_module(module)


def plugin_class(kind: str, type_name: str) -> type:
    """The class of plugin `type_name` of `kind`, importing only its module (an actor holds one plugin, not
    all: each module costs memory in every process that imports it). KeyError when there is none."""
    known = PLUGINS[kind]
    if type_name not in known and type_name in BUILTINS[kind]:
        importlib.import_module(BUILTINS[kind][type_name])
    if type_name not in known:
        load_builtins()
    return known[type_name]


def source_class(type_name: str) -> type[Source]:
    return plugin_class(SOURCE, type_name)


def sink_class(type_name: str) -> type[Sink]:
    return plugin_class(SINK, type_name)


def store_class(type_name: str) -> type:
    return plugin_class(STORE, type_name)


def known(kind: str) -> list[str]:
    """The type names of `kind`: built in or registered."""
    return sorted(set(BUILTINS[kind]) | set(PLUGINS[kind]))


def abilities(cls: type) -> list[str]:
    """The optional abilities a plugin class declares (its true boolean flags)."""
    return [name for name in ("supports_backfill", "reports_snapshot_progress") if getattr(cls, name, False)]


def describe(kind: str, cls: type) -> dict[str, Any]:
    """One line of `dbus plugins`: kind, type, what it does, its options and its abilities. What it does is the
    first sentence of the plugin module's docstring (sources and sinks, after its `Sink x:` head), of its
    options' docstring (operators) or of its class docstring (checkpoint stores)."""
    options = getattr(cls, "Options", NoOptions)
    if kind in (SOURCE, SINK):
        doc = (sys.modules[cls.__module__].__doc__ or "").strip().split("\n\n")[0].split(": ", 1)[-1]
    else:
        doc = ((options if kind == OPERATOR else cls).__doc__ or "").strip()
    about = " ".join(doc.split()).split(". ")[0].rstrip(".")
    about = about[:1].lower() + about[1:]
    names = [f.name for f in fields(options)] if is_dataclass(options) else []
    return {"kind": kind, "type": cls.type_name, "about": about, "abilities": abilities(cls), "options": names}


def listing() -> list[dict[str, Any]]:
    """Every plugin, by kind then type (`dbus plugins`)."""
    load_builtins()
    return [describe(kind, cls) for kind in KINDS for _, cls in sorted(PLUGINS[kind].items())]
