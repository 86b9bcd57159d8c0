"""Talking to the controller of a running Ray cluster: `bus = dbus_ray.connect()` in a notebook, and
what the `dbus` CLI uses.

    bus = dbus_ray.connect()            # $RAY_ADDRESS, else the local cluster (`ray start --head`)
    bus.submit("configs/shop.yaml")     # or a dict
    bus.status()                        # pandas DataFrame, one row per pipeline

Debugging from a notebook (the work is done in `dbus_ray.debug`):

    bus.history("shop.orders", key={"id": 7}, since="binlog.000042:4")  # a row's changes, pyarrow Table
    bus.transaction("0-1-55")           # every row of one transaction
    bus.trace("shop", row)              # read? acknowledged by each sink? Kafka topic/partition/offset
    bus.metrics(); bus.dag("shop"); bus.lag("shop", minutes=10)
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import ray
import yaml

from dbus_ray.actors.controller import get_controller
from dbus_ray.config import MaskedEnv, load_config, parse_config, redact, referenced_vars
from dbus_ray.constants import NAMESPACE, WRITER, actor_name
from dbus_ray.dag import Dag, Flow
from dbus_ray.errors import DbusError, reason
from dbus_ray.hosting import reader_handle
from dbus_ray.model import dumps
from dbus_ray.routing import TableMatcher

PEEK_SCHEMA = pa.schema([
    ("db", pa.string()), ("table", pa.string()), ("op", pa.string()), ("key", pa.string()),
    ("before", pa.string()), ("after", pa.string()), ("file", pa.string()), ("offset", pa.int64()),
    ("gtid", pa.string()), ("index", pa.int32()), ("txid", pa.string()), ("ts", pa.float64()),
    ("read_ts", pa.float64()),
])

STATUS_COLUMNS = ("name", "project", "state", "desired", "node", "epoch", "version", "rows_read",
                  "rows_delivered", "lag_seconds", "source_host", "checkpoint", "snapshot", "error")


def snapshot_line(progress: dict[str, Any] | None) -> str | None:
    """A snapshot's progress (the reader status' `snapshot`) in one line: tables done/total, chunks, rows,
    rows/s and ETA; None when the pipeline takes no snapshot."""
    if not progress:
        return None
    p = progress
    line = (f"snapshot {p.get('state')}: {p.get('tables_done', 0)}/{p.get('tables_total', 0)} tables, "
            f"{p.get('chunks', 0):,} chunks, {p.get('rows', 0):,} rows, {p.get('rows_per_second') or 0:,.0f} rows/s")
    eta = p.get("eta_seconds")
    if p.get("state") != "done":
        line += f", ETA {eta:,.0f}s" if eta is not None else ", ETA -"
    return line


def ray_token() -> str | None:
    """Where this process's Ray token comes from (`RAY_AUTH_TOKEN`, the file `RAY_AUTH_TOKEN_PATH` names, or
    Ray's default file `~/.ray/auth_token`, written by `ray get-auth-token --generate`); None without one."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "RAY_AUTH_TOKEN"
    if os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return os.environ["RAY_AUTH_TOKEN_PATH"]
    default = Path.home() / ".ray" / "auth_token"
    return str(default) if default.is_file() and default.stat().st_size else None


def use_ray_token() -> bool:
    """Send the Ray token with every call to the cluster when one is configured (see `ray_token`): Ray does so
    only under `RAY_AUTH_MODE=token` when the address is given, so that is set unless `RAY_AUTH_MODE` is
    already (`disabled` keeps it off). True when token authentication is on for this process."""
    if "RAY_AUTH_MODE" not in os.environ and ray_token() is not None:
        os.environ["RAY_AUTH_MODE"] = "token"
        try:
            from ray._raylet import Config

            Config.initialize("")  # Ray read RAY_AUTH_MODE when it was imported: make it read it again
        except (ImportError, AttributeError):
            pass
    return os.environ.get("RAY_AUTH_MODE", "").lower() == "token"


def join_cluster(address: str | None = None) -> None:
    """Join a running Ray cluster (not start one: the controller must outlive this process)."""
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or "auto"
    token = use_ray_token()
    try:
        ray.init(address=address, namespace=NAMESPACE, logging_level="WARNING", log_to_driver=False)
    except (ConnectionError, RuntimeError) as exc:
        hint = ("the cluster refuses a wrong token, or nothing runs there" if token else
                "a cluster with token authentication refuses drivers without its token: set RAY_AUTH_TOKEN or "
                "RAY_AUTH_TOKEN_PATH")
        raise DbusError(f"no Ray cluster at {address}: {reason(exc)} ({hint}; start one with `ray start --head`, "
                        "or pass --address / set RAY_ADDRESS)") from None


class Bus:
    """A handle on the cluster's controller."""

    def __init__(self, controller: Any) -> None:
        self.controller = controller

    def _call(self, method: str, *args: Any) -> Any:
        try:
            return ray.get(getattr(self.controller, method).remote(*args), timeout=120)
        except ray.exceptions.RayTaskError as exc:
            raise DbusError(reason(exc)) from None

    def submit(self, config: str | os.PathLike[str] | dict[str, Any]) -> dict[str, Any]:
        """Validate here, then hand the controller the spec as written (`${VAR}`s kept) and the values of
        the variables it refers to, which the controller keeps in memory only (never in the GCS)."""
        if isinstance(config, dict):
            raw = config
            parse_config(raw, "<dict>")
        else:
            load_config(Path(config))
            raw = yaml.safe_load(Path(config).read_text())
        secrets = {name: os.environ[name] for name in referenced_vars(raw) if name in os.environ}
        return self._call("submit", raw, secrets)

    def list(self, project: str | None = None) -> list[dict[str, Any]]:
        return self._call("list", project)

    def get(self, name: str) -> dict[str, Any]:
        return self._call("get", name)

    def pause(self, name: str) -> dict[str, Any]:
        return self._call("pause", name)

    def resume(self, name: str) -> dict[str, Any]:
        return self._call("resume", name)

    def stop(self, name: str) -> dict[str, Any]:
        return self._call("stop", name)

    def remove(self, name: str) -> None:
        self._call("remove", name)

    def rebalance(self) -> None:
        self._call("rebalance")

    def participants(self) -> list[dict[str, Any]]:
        return self._call("participants")

    def checkpoint(self, name: str) -> dict[str, Any] | None:
        return self._call("checkpoint", name)

    def set_checkpoint(self, name: str, position: str) -> dict[str, Any]:
        return self._call("set_checkpoint", name, position)

    def backfill(self, name: str, tables: list[str], where: str | None = None) -> dict[str, Any]:
        """An on-demand snapshot of `tables` (db.table) of a running pipeline, of the rows `where` (SQL)
        selects: `op: read` rows between start and end markers, interleaved with the stream."""
        return self._call("backfill", name, list(tables), where)

    def peek_rows(self, name: str, n: int = 100) -> list[dict[str, Any]]:
        """The newest `n` row changes the pipeline read (JSON form), oldest first."""
        reader = reader_handle(name)
        if reader is None:
            raise DbusError(f"pipeline {name} is not running")
        try:
            return ray.get(reader.peek.remote(n), timeout=30)
        except ray.exceptions.RayTaskError as exc:
            raise DbusError(reason(exc)) from None

    def peek(self, name: str, n: int = 100):
        """The newest `n` row changes as a pyarrow Table (images and key as JSON text)."""
        rows = self.peek_rows(name, n)
        flat = [{"db": r["db"], "table": r["table"], "op": r["op"], "key": dumps(r["key"]),
                 "before": None if r["before"] is None else dumps(r["before"]),
                 "after": None if r["after"] is None else dumps(r["after"]),
                 "file": r["pos"]["file"], "offset": r["pos"]["offset"], "gtid": r["pos"]["gtid"],
                 "index": r["pos"]["index"], "txid": r["txid"], "ts": r["ts"], "read_ts": r["read_ts"]}
                for r in rows]
        return pa.Table.from_pylist(flat, schema=PEEK_SCHEMA)

    def metrics(self, name: str | None = None, project: str | None = None):
        """The pipelines' counters as the controller last saw them, one row each (pandas DataFrame), with
        rows/s delivered over the last 10 s of the reader's samples; `name`: that pipeline only."""
        from dbus_ray.debug.display import metrics_frame, rate

        records = [p for p in self.list(project) if name is None or p["name"] == name]
        if name is not None and not records:
            self.get(name)  # the controller's one-line error for an unknown pipeline
        rates = {p["name"]: rate(self.samples(p["name"], 0.5)) for p in records}
        return metrics_frame(records, rates)

    def _reader(self, name: str) -> Any:
        """The pipeline's reader actor (or its stand-in in a shared host), None when it is not running."""
        return reader_handle(name)

    def samples(self, name: str, minutes: float = 10) -> list[dict[str, Any]]:
        """The reader's samples of its figures (one a second, the last hour kept) of the last `minutes`; []
        when the pipeline is not running."""
        reader = self._reader(name)
        if reader is None:
            return []
        return ray.get(reader.samples_since.remote(time.time() - minutes * 60), timeout=30)

    def lag(self, name: str, minutes: float = 10):
        """Lag and rows/s of the last `minutes` as a picture (matplotlib; `.to_pandas()` for the figures)."""
        from dbus_ray.debug.display import LagPlot, lag_frame

        samples = self.samples(name, minutes)
        if not samples:
            raise DbusError(f"pipeline {name} is not running: no samples of its lag")
        return LagPlot(name, lag_frame(samples), minutes)

    def dag(self, name: str, window_s: float = 1.0) -> Dag:
        """The pipeline's stages with rows/s measured over `window_s`: an SVG picture in a notebook."""
        cfg, flow = self.flow(name, window_s)
        return Dag(cfg, flow)

    def _dsn(self, source: str | None, table: str | None) -> str:
        """The DSN of `source` (a DSN, or a pipeline whose `mysql` source's is taken), or of the one server the
        `mysql` pipelines selecting `table` read."""
        if source is not None and "://" in source:
            return source
        names = [source] if source is not None else [p["name"] for p in self.list()]
        found: dict[str, str] = {}
        for n in names:
            cfg = parse_config(self._call("spec", n), f"pipeline {n}", os.environ)
            if cfg.source.type != "mysql":
                if source is not None:
                    raise DbusError(f"pipeline {n} has a {cfg.source.type} source, not mysql: give source= a DSN")
                continue
            o = cfg.source.options
            if source is not None or table is None or TableMatcher(o.include, o.exclude)(*table.split(".", 1)):
                found.setdefault(o.dsns[0], n)  # the primary
        if len(found) != 1:
            which = ", ".join(sorted(found.values())) or "none"
            raise DbusError(f"give source= (a mysql:// DSN or a pipeline name): the mysql pipelines reading "
                            f"{table or 'any table'} are {which}")
        return next(iter(found))

    def history(self, table: str, key: dict[str, Any] | None = None, since: Any = None, until: Any = None,
                source: str | None = None, progress: bool | None = None, files: str | None = None):
        """The changes of the rows of `table` (db.table) whose key columns equal `key`, read from the server's
        binlog between `since` and `until` (positions `file:offset`, GTIDs or datetimes; default: from the
        earliest binlog file to the server's current position) as a pyarrow Table: op, key, before, after
        (JSON), gtid, txid, ts, commit_ts, file, offset, index. `source`: a DSN or a pipeline name (default:
        the one server the mysql pipelines selecting `table` read). `files`: a directory or glob of archived
        binlog files to read instead of the server (as the `binlog_files` source does; `source` is then only
        needed for files written without column names). See `dbus_ray.debug.history`."""
        from dbus_ray.debug import history

        dsn = self._dsn(source, table) if files is None or source is not None else None
        return history.history(dsn, table, key, since, until, progress, files=files)

    def transaction(self, txid: str, source: str | None = None, progress: bool | None = None,
                    files: str | None = None):
        """Every row change of one transaction (its GTID, or the `file:offset` of its start), pyarrow Table; from
        archived binlog files with `files` (as `history`)."""
        from dbus_ray.debug import history

        dsn = self._dsn(source, None) if files is None or source is not None else None
        return history.transaction(dsn, txid, progress, files=files)

    def trace(self, name: str, position: Any, max_messages: int = 100_000):
        """Where the row change at `position` (a row of `history()`, or `file:offset`) is in pipeline `name`:
        read, acknowledged by each sink, and for kafka sinks its topic, partition and offset (see
        `dbus_ray.debug.trace`)."""
        from dbus_ray.debug.trace import trace

        cfg = parse_config(self._call("spec", name), f"pipeline {name}", MaskedEnv(os.environ))
        reader = self._reader(name)
        status = ray.get(reader.status.remote(), timeout=30) if reader is not None else None
        return trace(cfg, position, status, self.checkpoint(name), max_messages)

    def snapshot_progress(self, name: str) -> dict[str, Any] | None:
        """The pipeline's snapshot progress as the controller last saw it (tables, chunks, rows, rows/s, ETA)."""
        return (self.get(name).get("status") or {}).get("snapshot")

    def flow(self, name: str, window_s: float = 1.0):
        """rows/s read and acknowledged per sink, measured over `window_s` on the live actors."""
        cfg = parse_config(self._call("spec", name), f"pipeline {name}", MaskedEnv(os.environ))
        fused = cfg.placement in ("fused", "shared")  # the reader's actor (or host) runs the writers too
        reader = reader_handle(name)
        if reader is None:
            raise DbusError(f"pipeline {name} is not running")
        try:
            writers = {} if fused else {s.name: ray.get_actor(actor_name(name, WRITER, s.name), namespace=NAMESPACE)
                                        for s in cfg.sinks}
        except ValueError:
            raise DbusError(f"pipeline {name} is not running") from None

        def sample() -> tuple[float, int, dict[str, int]]:
            read = ray.get(reader.status.remote(), timeout=10)["rows_read"]
            if fused:
                stages = ray.get(reader.stage_stats.remote(), timeout=10)
                outs = {s.name: stages[f"writer:{s.name}"]["rows"] for s in cfg.sinks}
            else:
                outs = {k: ray.get(w.stats.remote(), timeout=10)["rows"] for k, w in writers.items()}
            return time.monotonic(), read, outs

        t0, r0, o0 = sample()
        time.sleep(window_s)
        t1, r1, o1 = sample()
        dt = max(t1 - t0, 1e-9)
        return cfg, Flow((r1 - r0) / dt, {k: (o1[k] - o0[k]) / dt for k in o1})

    def rows(self, project: str | None = None) -> list[dict[str, Any]]:
        """One flat dict per pipeline (passwords redacted)."""
        out = []
        for p in self.list(project):
            status = p.get("status") or {}
            row = {k: p.get(k, status.get(k)) for k in STATUS_COLUMNS}
            row["checkpoint"] = redact(str((status.get("checkpoint") or {}).get("source")))
            row["snapshot"] = snapshot_line(status.get("snapshot"))
            row["error"] = redact(p["error"]) if p.get("error") else None
            out.append(row)
        return out

    def status(self, project: str | None = None):
        """Pipelines as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame(self.rows(project), columns=list(STATUS_COLUMNS))


def connect(address: str | None = None, create: bool = True) -> Bus:
    """Join the cluster and return a `Bus` on its controller (started if missing)."""
    join_cluster(address)
    try:
        return Bus(get_controller(create=create))
    except ValueError:
        raise DbusError("no dbus controller is running in this cluster (`dbus submit` starts one)") from None
