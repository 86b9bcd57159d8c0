"""`docs/config.md`, generated from the config classes (`dbus config-docs`), so the reference cannot drift
from the code: every key of a pipeline file with its type, default and meaning, plugin options included.

A key's meaning is the comment on its line in the class (`max_rows: int = 1_000_000  # rows per file`), or
the comment lines right above it; for classes whose keys carry no comment, `MEANINGS` below. A key with
neither makes `render` fail, naming it (a test renders the file)."""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
import sys
import textwrap
import types
import typing
from typing import Any

from dbus_ray import config, registry

INTERNAL = {("pipeline", "path"), ("pipeline", "raw")}  # set by the loader, not keys of a file

MEANINGS: dict[str, dict[str, str]] = {
    "pipeline": {
        "name": "the pipeline's name (1-63 letters, digits, `_`, `.`, `-`); names its actors and checkpoint",
        "project": "a group of pipelines (`dbus list --project`)",
        "source": "where rows come from: a mapping with `type` and that source's options (below)",
        "filters": "stages applied in order: each a mapping with `type` and its options (below)",
        "sinks": "where rows go: each a mapping with `name`, `type`, `match` and that sink's options (below)",
        "flow": "how rows move between actors (below)",
        "checkpoint": "where and how often the position is saved (below)",
        "data_dir": "directory of the pipeline's local files (`<data_dir>/<name>/checkpoint.json`)",
    },
    "filter select": {
        "include": "keep the tables matching one of these `db.table` globs",
        "exclude": "... and not matching any of these",
    },
    "filter filter": {"expr": "an expression over the row (`after.amount > 100 and op != 'delete'`)"},
    "filter regex": {
        "column": "`after.NAME`, `before.NAME`, `op`, `db`, `table` or a meta column",
        "pattern": "RE2 regular expression, searched anywhere in the value (anchor with ^ $)",
        "negate": "keep the rows that do not match instead",
        "ignore_case": "match regardless of case",
    },
    "filter rename": {
        "tables": "`{db.old: db.new}`: tables to rename (exact names)",
        "columns": "`{old: new}`: columns to rename in both images and the key",
        "match": "`db.table` globs of the tables whose columns are renamed (names before this rename)",
    },
    "filter drop_columns": {
        "columns": "columns removed from both images and the key",
        "match": "`db.table` globs of the tables it applies to",
    },
    "filter mask": {
        "columns": "columns replaced in both images",
        "method": "`hash`: sha256 hex of `salt` + the value; `blank`: null",
        "salt": "prefix hashed with each value (method `hash` only)",
        "match": "`db.table` globs of the tables it applies to",
    },
    "filter route": {
        "sinks": "names of this pipeline's sinks that get the selected rows (each still applies its `match`)",
        "match": "`db.table` globs of the tables it applies to",
        "expr": "only the rows for which this expression holds (null: all rows of those tables)",
    },
    "filter split": {
        "by": "`txid`: no part holds two transactions; `rows`: no part holds more than `rows` rows",
        "rows": "rows per part (`by: rows` only)",
    },
    "filter count": {
        "by": "tags of the metric `dbus_operator_rows` (`db`, `table`, `op`)",
        "name": "the metric's `name` tag (empty: `count<i>`)",
    },
    "source mock": {
        "keys": "primary keys the inserts, updates and deletes go over",
        "db": "database name of the rows",
        "table": "table name of the rows",
    },
    "source mysql": {
        "dsn": "`mysql://user:password@host:port` (percent-encode `/ ? # @` in user and password)",
        "server_id": "replica server id, unique among the server's replicas; `auto`: one the controller hands out",
        "include": "`db.table` globs of the tables read (others are skipped before decoding)",
        "exclude": "`db.table` globs of tables left out",
        "ssl_ca": "CA certificate file: connect with TLS and verify the server",
        "ssl_cert": "client certificate file (TLS)",
        "ssl_key": "client key file (TLS)",
        "snapshot": "read the tables' current rows first: `never`, `initial` (without a checkpoint), "
                    "`when_needed` (also when the checkpoint's binlog is purged)",
    },
    "source kafka": {
        "bootstrap": "the brokers, `host:port[,host:port]`",
        "topics": "topics to read",
        "timeout_s": "broker metadata and consumer calls",
    },
    "sink": {
        "name": "unique among the pipeline's sinks; names its actors",
        "type": "the sink type (below)",
        "match": "`db.table` globs: the sink gets the rows of the tables matching one of them",
    },
    "sink null": {"delay_ms": "sleep this long per batch (tests of a slow sink)"},
    "sink kafka": {
        "bootstrap": "the brokers, `host:port[,host:port]`",
        "delivery": "`exactly_once`: rows and checkpoint in one Kafka transaction",
        "create_topics": "create missing topics (with `partitions` and `replication_factor`)",
        "compression": "producer compression codec",
        "linger_ms": "how long the producer waits to fill a partition's batch while a sink batch is produced "
                     "(librdkafka linger.ms); every sink batch ends in a flush, which sends what is left at once, "
                     "so this adds no latency; fewer, larger requests cost the broker and librdkafka less",
        "retry_backoff_ms": "wait between retries of a failed produce",
    },
    "sink parquet": {
        "compression": "Parquet compression codec",
        "row_group_rows": "rows per Parquet row group",
    },
}


def field_comments(cls: type) -> dict[str, str]:
    """The comment on each field's line in `cls`'s source (or the comment lines right above it)."""
    out: dict[str, str] = {}
    above: list[str] = []
    for line in textwrap.dedent(inspect.getsource(cls)).splitlines():
        if re.match(r"^    def ", line):
            break
        comment = re.match(r"^    #\s*(.*)$", line)
        if comment:
            above.append(comment.group(1))
            continue
        m = re.match(r"^    (\w+)\s*:[^#]*?(?:#\s*(.*))?$", line)
        if m:
            out[m.group(1)] = m.group(2) or " ".join(above)
        above = []
    return {k: v for k, v in out.items() if v}


def type_text(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_text(a) for a in args)
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin is list:
        return f"list of {type_text(args[0])}" if args else "list"
    if origin is dict:
        return "mapping"
    if hint is type(None):
        return "null"
    if dataclasses.is_dataclass(hint):
        return "mapping"
    names = {str: "string", int: "integer", float: "number", bool: "boolean", Any: "any"}
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def default_text(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "required"
    if dataclasses.is_dataclass(value):
        return "see below"
    return f"`{json.dumps(value)}`"


def rows_of(cls: type, section: str, overrides: dict[str, tuple[str, str]] | None = None) -> list[str]:
    """Markdown table rows (key, type, default, meaning) of dataclass `cls`."""
    comments = field_comments(cls)
    extra = MEANINGS.get(section, {})
    hints = typing.get_type_hints(cls)
    rows = []
    for f in dataclasses.fields(cls):
        if (section, f.name) in INTERNAL:
            continue
        meaning = comments.get(f.name) or extra.get(f.name)
        if not meaning:
            raise ValueError(f"config key {section}: {f.name} has no meaning: add a comment on its line in "
                             f"{cls.__module__}.{cls.__qualname__} (or an entry in dbus_ray.config_docs.MEANINGS)")
        kind, default = (overrides or {}).get(f.name) or (type_text(hints[f.name]), default_text(f))
        rows.append(f"| `{f.name}` | {kind} | {default} | {_cell(meaning)} |")
    return rows


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _about(obj: Any) -> str:
    doc = inspect.getdoc(obj) or ""
    return " ".join(doc.split("\n\n")[0].split())


def _table(rows: list[str]) -> list[str]:
    if not rows:
        return ["No options.", ""]
    return ["| key | type | default | meaning |", "|---|---|---|---|", *rows, ""]


def render() -> str:
    """The text of docs/config.md."""
    registry.load_builtins()
    out = ["# Pipeline config reference", "",
           "Generated from the config classes by `dbus config-docs --output docs/config.md`: do not edit by hand "
           "(a test fails when this file differs from what the code generates). `${VAR}` and `${VAR:-default}` "
           "work in every value. See the README for the concepts.", "",
           "## Top level", ""]
    out += _table(rows_of(config.PipelineConfig, "pipeline", {
        "source": ("mapping", "required"), "sinks": ("list of mappings", "required"),
        "filters": ("list of mappings", "`[]`"), "flow": ("mapping", "see below"),
        "checkpoint": ("mapping", "see below")}))
    out += ["## `flow`", "", _about(config.FlowOptions), ""] + _table(rows_of(config.FlowOptions, "flow"))
    out += ["## `checkpoint`", ""] + _table(rows_of(config.CheckpointOptions, "checkpoint"))
    out += ["## `source`", "", "`type` picks the source; the other keys are its options.", ""]
    for name, cls in sorted(registry.SOURCES.items()):
        out += [f"### source `{name}`", "", _about(sys.modules[cls.__module__]), ""]
        out += _table(rows_of(cls.Options, f"source {name}"))
    out += ["## `filters`", "", "Each item has a `type` and its options; they apply in order.", ""]
    for name, cls in sorted(registry.OPERATORS.items()):
        out += [f"### filter `{name}`", "", _about(cls), ""] + _table(rows_of(cls.Options, f"filter {name}"))
    out += ["## `sinks`", "", "Keys of every sink:", ""]
    common = [("name", "string", "required"), ("type", "string", "required"), ("match", "list of string", '`["*.*"]`')]
    out += _table([f"| `{k}` | {t} | {d} | {_cell(MEANINGS['sink'][k])} |" for k, t, d in common])
    for name, cls in sorted(registry.SINKS.items()):
        out += [f"### sink `{name}`", "", _about(sys.modules[cls.__module__]), ""]
        out += _table(rows_of(cls.Options, f"sink {name}"))
    return "\n".join(out).rstrip() + "\n"
