"""Pipeline config: YAML with `${ENV_VAR}` interpolation, validated into dataclasses.

Every mistake is reported as one line naming the file, the key path and the reason, e.g.
`configs/x.yaml: sinks[0].path: field required`.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dbus_ray import registry
from dbus_ray.constants import HOST, HOST_PREFIX
from dbus_ray.validation import Invalid, check_name, check_patterns


class ConfigError(Exception):
    """A user mistake in a pipeline config; str() is the one-line message."""


PLACEMENTS = ("auto", "fused", "split", "spread", "shared")


@dataclass
class FlowOptions:
    """How rows move between actors."""

    read_batch_rows: int = 20_000  # at most this many rows per batch the reader emits (a decoders' batch: rows events)
    max_rows_in_flight: int = 400_000  # rows read but not yet delivered to every sink
    sink_batch_rows: int = 50_000  # the batcher hands the writer about this many rows at once
    # ... or what it holds once the batch waited this long and the writer is free. 0: at once when the writer is
    # free (rows gather while it writes a batch, so batches grow with the rate: no wait when rows are few)
    linger_ms: int = 0
    # fused: every stage in one actor process; split: reader, router and batchers in one, each sink's writer in
    # one of its own (two processes for one sink); spread: one actor per stage; shared: fused, inside a host actor
    # (`dbus:host:<n>`) running several pipelines of its node; auto: fused unless the source reads with worker
    # actors of its own (snapshot_parallelism >= 2; decoders are processes of their own, the rest stays fused)
    placement: str = "auto"
    # shared: this pipeline joins only a host running fewer pipelines than this (a new host starts otherwise)
    host_capacity: int = 10

    def __post_init__(self) -> None:
        if self.placement not in PLACEMENTS:
            raise Invalid("placement", f"must be one of {', '.join(PLACEMENTS)}, not {self.placement!r}")
        for key in ("read_batch_rows", "max_rows_in_flight", "sink_batch_rows", "host_capacity"):
            if getattr(self, key) < 1:
                raise Invalid(key, "must be at least 1")
        if self.linger_ms < 0:
            raise Invalid("linger_ms", "must not be negative")
        if self.max_rows_in_flight < self.read_batch_rows:
            raise Invalid("max_rows_in_flight", f"must be at least read_batch_rows ({self.read_batch_rows})")


@dataclass
class CheckpointOptions:
    store: str = "file"  # a checkpoint store type (`dbus plugins`): file, gcs, kafka, postgres or delta
    every_ms: int = 200  # commit at most this often (and always on stop)
    # a pipeline that saved checkpoints before finds its store empty (the store lost them): `fail` (stop with
    # one line, nothing skipped) or `start` (start again from `source.start`, which may skip or repeat rows)
    on_missing: str = "fail"

    def __post_init__(self) -> None:
        known = registry.known(registry.STORE)
        if self.store not in known:
            raise Invalid("store", f"unknown checkpoint store {self.store!r} (known: {', '.join(known)})")
        if self.on_missing not in ("fail", "start"):
            raise Invalid("on_missing", f"must be fail or start, not {self.on_missing!r}")


@dataclass
class SourceConfig:
    type: str
    options: Any


@dataclass
class FilterConfig:
    type: str
    options: Any


@dataclass
class SinkConfig:
    name: str
    type: str
    match: list[str]
    options: Any


@dataclass
class PipelineConfig:
    name: str
    source: SourceConfig
    sinks: list[SinkConfig]
    filters: list[FilterConfig] = field(default_factory=list)
    flow: FlowOptions = field(default_factory=FlowOptions)
    checkpoint: CheckpointOptions = field(default_factory=CheckpointOptions)
    project: str = "default"
    data_dir: str = "~/.dbus/data"
    path: str = ""  # the file it came from
    raw: dict[str, Any] = field(default_factory=dict, repr=False)  # the mapping, `${VAR}`s replaced

    @property
    def placement(self) -> str:
        """`fused`, `split`, `spread` or `shared`: `flow.placement` with `auto` decided: spread when the source reads
        with worker actors of its own (a parallel snapshot), fused otherwise. Decoders (`source.decoders`) are
        processes of their own already: fused beside them moved 1.11x the rows of spread into Kafka with under half
        the memory (README "Placement")."""
        if self.flow.placement != "auto":
            return self.flow.placement
        o = self.source.options
        return "spread" if getattr(o, "snapshot_parallelism", 1) > 1 else "fused"

    @property
    def pipeline_dir(self) -> Path:
        return Path(os.path.expanduser(self.data_dir)) / self.name


# ---------------------------------------------------------------------------------------------- loading

ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def load_config(path: str | os.PathLike[str], env: typing.Mapping[str, str] | None = None) -> PipelineConfig:
    """Read, interpolate and validate a pipeline file. Raises ConfigError with a one-line message."""
    where = str(path)
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read: {exc.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f"line {mark.line + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{where}: {line}YAML syntax error: {problem}") from None
    cfg = parse_config(raw, where, os.environ if env is None else env)
    cfg.path = str(Path(path).resolve())
    return cfg


def parse_config(
    raw: Any, where: str = "<config>", env: typing.Mapping[str, str] | None = None, interpolate: bool = True
) -> PipelineConfig:
    """Validate a config mapping; `interpolate=False` for one whose `${VAR}`s are already replaced."""
    registry.load_builtins()
    try:
        if interpolate:
            raw = _interpolate(raw, "", os.environ if env is None else env)
        cfg = _parse(raw)
    except Invalid as exc:
        key = f"{exc.key}: " if exc.key else ""
        raise ConfigError(f"{where}: {key}{exc.reason}") from None
    cfg.raw = raw
    return cfg


def referenced_vars(value: Any, required: bool = False) -> set[str]:
    """Names of the environment variables `${VAR}` a config mapping refers to (`required`: only those
    without a `${VAR:-default}`)."""
    if isinstance(value, str):
        return {m.group(1) for m in ENV_RE.finditer(value) if not required or m.group(2) is None}
    if isinstance(value, dict):
        return set().union(*(referenced_vars(v, required) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(referenced_vars(v, required) for v in value)) if value else set()
    return set()


class MaskedEnv(typing.Mapping[str, str]):
    """An environment for parsing a config for its shape when its secrets are not at hand: a variable it
    does not know takes its `${VAR:-default}` when there is one, and reads as `***` otherwise."""

    MASK = "***"

    def __init__(self, base: typing.Mapping[str, str]) -> None:
        self.base = base

    def __getitem__(self, key: str) -> str:
        return self.base[key]

    def __contains__(self, key: object) -> bool:
        return key in self.base

    def __iter__(self) -> typing.Iterator[str]:
        return iter(self.base)

    def __len__(self) -> int:
        return len(self.base)


def _interpolate(value: Any, path: str, env: typing.Mapping[str, str]) -> Any:
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            if isinstance(env, MaskedEnv):
                return MaskedEnv.MASK
            raise Invalid(path, f"environment variable {name} is not set")

        return ENV_RE.sub(sub, value)
    if isinstance(value, dict):
        return {k: _interpolate(v, _join(path, str(k)), env) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, f"{path}[{i}]", env) for i, v in enumerate(value)]
    return value


def _join(path: str, key: str) -> str:
    if not key:
        return path
    if not path or key.startswith("["):
        return f"{path}{key}"
    return f"{path}.{key}"


def _parse(raw: Any) -> PipelineConfig:
    if not isinstance(raw, dict):
        raise Invalid("", "expected a mapping with name, source and sinks")
    allowed = {"name", "project", "source", "filters", "sinks", "flow", "checkpoint", "data_dir"}
    _no_unknown(raw, allowed, "")
    name = _required(raw, "name", str, "")
    _at("name", check_name, name, "pipeline name")
    if name == HOST:
        raise Invalid("name", f"'{HOST}' is reserved (host actors are named {HOST_PREFIX}<n>)")
    project = _typed(raw.get("project", "default"), str, "project")
    _at("project", check_name, project, "project")
    source = _source(raw)
    filters_raw = _typed(raw.get("filters", []) or [], list, "filters")
    filters = [_filter(f, f"filters[{i}]") for i, f in enumerate(filters_raw)]
    sinks_raw = _required(raw, "sinks", list, "")
    if not sinks_raw:
        raise Invalid("sinks", "at least one sink is required")
    sinks: list[SinkConfig] = []
    for i, item in enumerate(sinks_raw):
        sinks.append(_sink(item, f"sinks[{i}]"))
    seen: dict[str, int] = {}
    for i, s in enumerate(sinks):
        if s.name in seen:
            raise Invalid(f"sinks[{i}].name", f"duplicate sink name {s.name!r} (also sinks[{seen[s.name]}])")
        seen[s.name] = i
    for i, f in enumerate(filters):  # operators that name sinks (route)
        _at(f"filters[{i}]", registry.OPERATORS[f.type].check_sinks, f.options, [s.name for s in sinks])
    flow = build(FlowOptions, raw.get("flow") or {}, "flow")
    checkpoint = build(CheckpointOptions, raw.get("checkpoint") or {}, "checkpoint")
    for i, s in enumerate(sinks):  # a sink whose options depend on the checkpoint store checks them here
        check = getattr(registry.SINKS.get(s.type), "check_store", None)
        if check is not None:
            _at(f"sinks[{i}]", check, s.options, checkpoint.store)
    data_dir = _typed(raw.get("data_dir", "~/.dbus/data"), str, "data_dir")
    return PipelineConfig(name, source, sinks, filters, flow, checkpoint, project, data_dir)


def _at(key: str, fn: typing.Callable[..., None], *args: Any) -> None:
    try:
        fn(*args)
    except Invalid as exc:
        raise Invalid(_join(key, exc.key), exc.reason) from None


def _plugin(kind: str, type_name: str, what: str, path: str) -> type:
    """The plugin class of `type_name`, or `Invalid` naming the known ones."""
    try:
        return registry.plugin_class(kind, type_name)
    except KeyError:
        known = ", ".join(registry.known(kind))
        raise Invalid(f"{path}.type", f"unknown {what} {type_name!r} (known: {known})") from None


def _source(raw: dict) -> SourceConfig:
    section = _required(raw, "source", dict, "")
    type_name = _required(section, "type", str, "source")
    cls = _plugin(registry.SOURCE, type_name, "source type", "source")
    options = {k: v for k, v in section.items() if k != "type"}
    return SourceConfig(type_name, build(cls.Options, options, "source", extra_allowed={"type"}))


def _filter(item: Any, path: str) -> FilterConfig:
    item = _typed(item, dict, path)
    type_name = _required(item, "type", str, path)
    cls = _plugin(registry.OPERATOR, type_name, "filter type", path)
    options = {k: v for k, v in item.items() if k != "type"}
    return FilterConfig(type_name, build(cls.Options, options, path, extra_allowed={"type"}))


def _sink(item: Any, path: str) -> SinkConfig:
    item = _typed(item, dict, path)
    name = _required(item, "name", str, path)
    _at(f"{path}.name", check_name, name, "sink name")
    type_name = _required(item, "type", str, path)
    cls = _plugin(registry.SINK, type_name, "sink type", path)
    match = _typed(item.get("match", ["*.*"]), list, f"{path}.match")
    for i, pattern in enumerate(match):
        _typed(pattern, str, f"{path}.match[{i}]")
    check_patterns(match, f"{path}.match")
    options = {k: v for k, v in item.items() if k not in ("name", "type", "match")}
    opts = build(cls.Options, options, path, extra_allowed={"name", "type", "match"})
    return SinkConfig(name, type_name, list(match), opts)


def _required(raw: dict, key: str, typ: type, path: str) -> Any:
    if key not in raw or raw[key] is None:
        raise Invalid(_join(path, key), "field required")
    return _typed(raw[key], typ, _join(path, key))


TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false", list: "a list",
              dict: "a mapping"}


def _typed(value: Any, typ: type, path: str) -> Any:
    ok = isinstance(value, typ)
    if typ is int and isinstance(value, bool):
        ok = False
    if typ is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if not ok:
        raise Invalid(path, f"expected {TYPE_NAMES.get(typ, typ.__name__)}, got {_describe(value)}")
    return value


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (dict, list)):
        return TYPE_NAMES[type(value)]
    return f"{type(value).__name__} {value!r}"


def build(cls: type, raw: Any, path: str, extra_allowed: set[str] = frozenset()) -> Any:
    """Validate `raw` against dataclass `cls`: unknown keys, missing fields, types, then the class's own
    `__post_init__` checks (which raise `Invalid` with a key relative to this section)."""
    raw = _typed(raw, dict, path or "config")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    _no_unknown(raw, set(fields) | set(extra_allowed), path)
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        if name not in raw:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise Invalid(_join(path, name), "field required")
            continue
        kwargs[name] = _coerce(raw[name], hints[name], _join(path, name))
    try:
        return cls(**kwargs)
    except Invalid as exc:
        m = re.fullmatch(r"dsn(?:\[(\d+)\])?", exc.key)
        dsn = raw.get("dsn")
        if m and m.group(1) is not None:  # one of a list of DSNs
            dsn = dsn[int(m.group(1))] if isinstance(dsn, list) and int(m.group(1)) < len(dsn) else None
        reason = exc.reason + (_dsn_hint(dsn) if m else "")
        raise Invalid(_join(path, exc.key), reason) from None


def _dsn_hint(dsn: Any) -> str:
    """For a DSN whose user or password holds a character that ends that part of a URL: how to write it
    (without showing the password)."""
    m = re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://(.*)@", dsn) if isinstance(dsn, str) else None
    found = sorted({c for c in m.group(1) if c in "/?#@"}) if m else []
    if not found:
        return ""
    chars = ", ".join(f"'{c}' as %{ord(c):02X}" for c in found)
    return f" (the user or password holds {' '.join(repr(c) for c in found)}: percent-encode it, {chars})"


def _coerce(value: Any, hint: Any, path: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return _coerce(value, option, path)
            except Invalid as exc:
                errors.append(exc)
        if len(options) == 1:
            raise errors[0]
        for option, error in zip(options, errors):  # a list or mapping given: what is wrong inside it
            kind = typing.get_origin(option) or option
            if kind in (list, dict) and isinstance(value, kind):
                raise error
        names = " or ".join(TYPE_NAMES.get(typing.get_origin(o) or o, str(o)) for o in options)
        raise Invalid(path, f"expected {names}, got {_describe(value)}")
    if origin is typing.Literal:
        if value not in args:
            raise Invalid(path, f"expected one of {', '.join(map(repr, args))}, got {value!r}")
        return value
    if origin is list:
        items = _typed(value, list, path)
        return [_coerce(v, args[0], f"{path}[{i}]") for i, v in enumerate(items)] if args else items
    if origin is dict:
        mapping = _typed(value, dict, path)
        if args:
            return {str(k): _coerce(v, args[1], _join(path, str(k))) for k, v in mapping.items()}
        return mapping
    if hint is Any:
        return value
    if dataclasses.is_dataclass(hint):
        return build(hint, value, path)
    return _typed(value, hint, path)


def _no_unknown(raw: dict, allowed: set[str], path: str) -> None:
    for key in raw:
        if key not in allowed:
            hint = ", ".join(sorted(allowed))
            raise Invalid(_join(path, str(key)), f"unknown key (allowed: {hint})")


def redact(text: str) -> str:
    """Hide the password of any `scheme://user:password@host` inside `text`."""
    return re.sub(r"(\b[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s]*@", r"\1***@", text)
