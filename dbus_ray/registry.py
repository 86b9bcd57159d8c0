"""Plugins by `type:`: the base classes of sources and sinks and the registry that finds them.

A plugin class declares its config keys as a dataclass in `Options`; the config loader validates a
section against it, so every plugin gets the same one-line errors for free.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, ClassVar

from dbus_ray.model import RowBatch

#: The module of each built-in plugin: it registers the plugin when imported.
BUILTIN_SOURCES = {
    "mock": "dbus_ray.sources.mock",
    "mysql": "dbus_ray.mysql.source",
    "kafka": "dbus_ray.sources.kafka",
}
BUILTIN_SINKS = {
    "null": "dbus_ray.sinks.null",
    "jsonl": "dbus_ray.sinks.jsonl",
    "stdout": "dbus_ray.sinks.stdout",
    "kafka": "dbus_ray.sinks.kafka",
    "parquet": "dbus_ray.sinks.parquet",
}
BUILTIN_MODULES = (*BUILTIN_SOURCES.values(), *BUILTIN_SINKS.values(), "dbus_ray.operators")

SOURCES: dict[str, type[Source]] = {}
SINKS: dict[str, type[Sink]] = {}


@dataclass
class NoOptions:
    pass


class Source:
    """Reads row changes. Runs inside the reader actor; `poll` may block briefly.

    The checkpoint a source returns in a batch is opaque to the rest of the bus: it is stored once
    every row up to that batch is delivered and handed back to `open` on the next start."""

    type_name: ClassVar[str]
    Options: ClassVar[type] = NoOptions

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

    def caught_up(self) -> bool:
        """True once the source has read up to where its origin was when the source was opened."""
        return False

    def lag_seconds(self) -> float:
        return 0.0

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


def source(type_name: str):
    def register(cls: type[Source]) -> type[Source]:
        cls.type_name = type_name
        SOURCES[type_name] = cls
        return cls

    return register


def sink(type_name: str):
    def register(cls: type[Sink]) -> type[Sink]:
        cls.type_name = type_name
        SINKS[type_name] = cls
        return cls

    return register


def load_builtins() -> None:
    for module in BUILTIN_MODULES:
        importlib.import_module(module)


def source_class(type_name: str) -> type[Source]:
    """The source class of `type_name`, importing only its module (an actor holds one plugin, not all:
    each module costs memory in every process that imports it)."""
    if type_name not in SOURCES and type_name in BUILTIN_SOURCES:
        importlib.import_module(BUILTIN_SOURCES[type_name])
    if type_name not in SOURCES:
        load_builtins()
    return SOURCES[type_name]


def sink_class(type_name: str) -> type[Sink]:
    """The sink class of `type_name`, importing only its module (see `source_class`)."""
    if type_name not in SINKS and type_name in BUILTIN_SINKS:
        importlib.import_module(BUILTIN_SINKS[type_name])
    if type_name not in SINKS:
        load_builtins()
    return SINKS[type_name]
