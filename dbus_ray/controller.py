"""The controller's logic: desired state of every pipeline, kept in a key-value store (Ray's GCS KV in
production), and the reconcile step that makes the cluster match it.

The Ray actor (`dbus_ray.actors.controller`) is a thin shell around `Supervisor`; everything that
touches Ray's actors goes through a `Runtime`, so this module is testable without Ray.

Per pipeline the store keeps: the spec (config mapping) and its version, the project, the desired
state (running / paused / stopped), the node it is assigned to and the epoch of that assignment, its
observed state and last error, and the MySQL `server_id` handed out to it. Every change is written
to the store before it is acted on, so a restarted controller picks up where the last one stopped.

With a durable state (`dbus controller --state`, `dbus_ray.storage.durable.MirroredKV`) the store is
also written through to a directory or a Kafka topic that outlives the cluster: a new cluster's controller
restores it (`recover`) and the `gcs` checkpoints with it (copied there by `reconcile`). Without one, and
without GCS fault tolerance, `submit` refuses checkpoint store `gcs` (`volatile_gcs` says why).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from dbus_ray import registry
from dbus_ray.acks import Checkpoint
from dbus_ray.checkpoints import open_store
from dbus_ray.config import ConfigError, MaskedEnv, PipelineConfig, parse_config, referenced_vars
from dbus_ray.constants import KV_CONTROLLER_EPOCH, KV_PIPELINE_PREFIX, checkpoint_key
from dbus_ray.errors import DbusError, reason
from dbus_ray.metrics import percentile
from dbus_ray.placement import STRATEGIES, place
from dbus_ray.storage.kv_store import KVStore

log = logging.getLogger("dbus.controller")

SERVER_ID_BASE = 1001  # server_ids the controller hands out start here
MAX_BACKOFF_S = 60.0
STABLE_S = 30.0  # running this long without failing resets the retry backoff
START_PARALLELISM = 16  # pipelines a reconcile step starts at once


class LoopTimes:
    """How long the recent reconcile steps took: p50/p99/max in ms over the last `keep` steps (or those that
    ended at or after `since`, a `time.time()`)."""

    def __init__(self, keep: int = 300, clock=time.time) -> None:
        self.recent: deque[tuple[float, float]] = deque(maxlen=keep)  # (ended at, seconds)
        self.clock = clock

    def add(self, seconds: float) -> None:
        self.recent.append((self.clock(), seconds))

    def summary(self, since: float | None = None) -> dict[str, Any]:
        chosen = [s for at, s in self.recent if since is None or at >= since]
        ordered = sorted(chosen)
        if not ordered:
            return {"loops": 0, "p50_ms": None, "p99_ms": None, "max_ms": None, "last_ms": None}

        def pct(p: float) -> float:
            return round(1000 * percentile(ordered, p), 1)

        return {"loops": len(ordered), "p50_ms": pct(0.50), "p99_ms": pct(0.99),
                "max_ms": round(1000 * ordered[-1], 1), "last_ms": round(1000 * chosen[-1], 1)}


class Runtime(Protocol):
    """What the supervisor needs from Ray (a fake in unit tests)."""

    def nodes(self) -> dict[str, float]: ...
    def start(self, cfg: PipelineConfig, epoch: int, node: str, secrets: dict[str, str],
              expect_checkpoint: bool) -> Any: ...
    def attach(self, cfg: PipelineConfig, epoch: int) -> Any | None: ...
    def secrets(self, pipeline: str, epoch: int) -> dict[str, str] | None: ...
    # every pipeline's status, or the exception its check ended with (dead, hung), checked all at once
    def health_many(self, handles: dict[str, Any]) -> dict[str, dict[str, Any] | BaseException]: ...
    def stop(self, handle: Any) -> dict[str, Any] | None: ...
    def kill(self, handle: Any) -> None: ...
    def set_epoch(self, pipeline: str, epoch: int) -> None: ...
    def clear_epoch(self, pipeline: str) -> None: ...


@dataclass
class PipelineRecord:
    name: str
    spec: dict[str, Any]
    project: str = "default"
    version: int = 1
    desired: str = "running"  # running | paused | stopped
    state: str = "pending"  # pending | starting | running | failed | paused | stopped
    node: str | None = None
    epoch: int = 0
    error: str | None = None
    attempts: int = 0
    retry_at: float = 0.0
    server_id: int | None = None
    started: float = 0.0  # when the current owner started
    updated: float = field(default_factory=time.time)
    status: dict[str, Any] = field(default_factory=dict)  # the reader's last status
    checkpointed: bool = False  # a checkpoint was saved: an empty store later means it was lost

    def public(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("spec")
        return out


def _config(record: PipelineRecord, env: Any) -> PipelineConfig:
    cfg = parse_config(record.spec, f"pipeline {record.name}", env)
    if cfg.source.type == "mysql" and record.server_id is not None:
        cfg.source.options.server_id = record.server_id
    return cfg


def _store_kind(spec: Any) -> Any:
    checkpoint = spec.get("checkpoint") if isinstance(spec, dict) else None
    return checkpoint.get("store", "file") if isinstance(checkpoint, dict) else "file"


def _store(cfg: PipelineConfig):
    return open_store(cfg.checkpoint.store, cfg.name, cfg.pipeline_dir, cfg)


class Supervisor:
    PREFIX = KV_PIPELINE_PREFIX
    EPOCH_KEY = KV_CONTROLLER_EPOCH

    def __init__(self, kv: KVStore, runtime: Runtime, strategy: str = "sticky", clock=time.time,
                 volatile_gcs: str | None = None) -> None:
        if strategy not in STRATEGIES:
            raise DbusError(f"unknown placement strategy {strategy!r} (known: {', '.join(STRATEGIES)})")
        self.kv = kv
        self.runtime = runtime
        self.strategy = strategy
        self.clock = clock
        self.lock = threading.RLock()
        self.desired_lock = threading.Lock()  # pause / resume / stop: never wait for a reconcile step
        self.records: dict[str, PipelineRecord] = {}
        self.handles: dict[str, Any] = {}
        # values of the `${VAR}`s of each spec: in memory only, never in the KV store (nor in logs)
        self.secrets: dict[str, dict[str, str]] = {}
        # why checkpoint store `gcs` would not outlive the head (None: it would, or it is mirrored)
        self.volatile_gcs = volatile_gcs
        self.pool: ThreadPoolExecutor | None = None  # starts several pipelines at once (`_start_all`)
        self.recover()

    # ------------------------------------------------------------------ state
    def recover(self) -> None:
        """Load every pipeline record (after a controller restart: the actors are re-attached by the
        next reconcile, not restarted)."""
        with self.lock:
            restore = getattr(self.kv, "restore", None)  # a durable state (MirroredKV) refills an empty GCS
            if restore is not None:
                restored = restore()
                log.info("controller state %s: %d key(s) restored into the GCS", self.kv.describe(), len(restored))
            for key in self.kv.keys(self.PREFIX):
                value = self.kv.get(key)
                if value:
                    record = PipelineRecord(**json.loads(value))
                    self.records[record.name] = record
            log.info("controller recovered %d pipeline(s)", len(self.records))

    def _persist(self, record: PipelineRecord) -> None:
        record.updated = self.clock()
        self.kv.put(self.PREFIX + record.name, json.dumps(asdict(record), default=str).encode())

    def _next_epoch(self) -> int:
        current = int(self.kv.get(self.EPOCH_KEY) or 0) + 1
        self.kv.put(self.EPOCH_KEY, str(current).encode())
        return current

    # ------------------------------------------------------------------ API (idempotent)
    def _env(self, name: str, secrets: dict[str, str] | None = None) -> Any:
        """Where a spec's `${VAR}`s come from: the submitter's values, then the controller's own
        environment; anything else reads as `***` (starting refuses that, see `_missing`)."""
        return MaskedEnv({**os.environ, **(self.secrets.get(name, {}) if secrets is None else secrets)})

    def _cfg(self, record: PipelineRecord) -> PipelineConfig:
        return _config(record, self._env(record.name))

    def _missing(self, record: PipelineRecord) -> list[str]:
        known = {**os.environ, **self.secrets.get(record.name, {})}
        return sorted(v for v in referenced_vars(record.spec, required=True) if v not in known)

    def _missing_error(self, missing: list[str]) -> str:
        return (f"environment variable {', '.join(missing)} unknown to the controller (secrets are kept in "
                "memory only, by the controller and the pipeline's reader, and both were lost): submit the "
                "pipeline again")

    def submit(self, spec: dict[str, Any], secrets: dict[str, str] | None = None) -> dict[str, Any]:
        """Create a pipeline, or update it when the spec or its secrets changed (new version: restarts
        from its checkpoint). Submitting the same again changes nothing. `spec` keeps its `${VAR}`s;
        `secrets` holds their values and stays in memory."""
        secrets = dict(secrets or {})
        name = spec.get("name", "?") if isinstance(spec, dict) else "?"
        try:
            cfg = parse_config(spec, f"pipeline {name}", self._env(name, secrets))
        except ConfigError as exc:
            raise DbusError(str(exc)) from None
        if cfg.checkpoint.store == "gcs" and self.volatile_gcs:
            raise DbusError(f"pipeline {cfg.name}: checkpoint store gcs refused: {self.volatile_gcs}")
        with self.lock:
            record = self.records.get(cfg.name)
            server_id = self._server_id(cfg, record)
            known = self.secrets.get(cfg.name)  # None after a controller restart: values not known yet
            self.secrets[cfg.name] = secrets
            if record is None:
                record = PipelineRecord(cfg.name, spec, cfg.project, server_id=server_id)
            elif record.spec != spec or (known is not None and known != secrets):
                record.spec, record.project, record.server_id = spec, cfg.project, server_id
                record.version += 1
                record.attempts, record.retry_at, record.error = 0, 0.0, None
                self._halt(record, "pending")  # the next reconcile starts the new version
            elif known is None and record.state == "failed":
                record.attempts, record.retry_at = 0, 0.0  # the secrets it waited for are here: start now
            else:
                return record.public()
            self._persist(record)  # first: a store that refuses the write leaves no pipeline behind
            self.records[cfg.name] = record
            return record.public()

    def _server_id(self, cfg: PipelineConfig, record: PipelineRecord | None) -> int | None:
        if cfg.source.type != "mysql":
            return None
        used = {r.server_id: r.name for r in self.records.values() if r.server_id and r.name != cfg.name}
        wanted = cfg.source.options.server_id
        if wanted != "auto":
            if wanted in used:
                raise DbusError(f"pipeline {cfg.name}: server_id {wanted} is already used by pipeline {used[wanted]}")
            return int(wanted)
        if record is not None and record.server_id and record.server_id not in used:
            return record.server_id
        candidate = SERVER_ID_BASE
        while candidate in used:
            candidate += 1
        return candidate

    def set_desired(self, name: str, desired: str) -> dict[str, Any]:
        """Record what the operator wants and answer at once: the reconcile loop acts on it (it may hold
        `self.lock` for seconds while it starts or stops actors); `dbus stop --wait` waits for the state."""
        with self.desired_lock:
            record = self._get(name)
            if record.desired != desired:
                record.desired = desired
                record.attempts, record.retry_at = 0, 0.0
                self._persist(record)
            return record.public()

    def remove(self, name: str) -> None:
        with self.lock:
            record = self._get(name)
            self._halt(record, "stopped")
            self.runtime.clear_epoch(name)
            del self.records[name]
            self.kv.delete(self.PREFIX + name)

    # Reads take no lock: they answer while a reconcile step waits on a slow start or stop.
    def list(self, project: str | None = None) -> list[dict[str, Any]]:
        return [r.public() for r in sorted(list(self.records.values()), key=lambda r: r.name)
                if project is None or r.project == project]

    def get(self, name: str) -> dict[str, Any]:
        return self._get(name).public()

    def _get(self, name: str) -> PipelineRecord:
        record = self.records.get(name)
        if record is None:
            raise DbusError(f"no pipeline named {name!r}")
        return record

    def participants(self) -> list[dict[str, Any]]:
        nodes = self.runtime.nodes()
        running = {name: record.node for name, record in list(self.records.items()) if name in self.handles}
        return [{"node": n, "capacity": c, "pipelines": sorted(p for p, at in running.items() if at == n)}
                for n, c in sorted(nodes.items())]

    def spec(self, name: str) -> dict[str, Any]:
        return self._get(name).spec

    def checkpoint(self, name: str) -> dict[str, Any] | None:
        with self.lock:
            cfg = self._resolved(self._get(name))
        return _store(cfg).load()

    def set_checkpoint(self, name: str, position: str) -> dict[str, Any]:
        """Replace a stopped or paused pipeline's checkpoint; it resumes from there."""
        with self.lock:
            record = self._get(name)
            if record.desired == "running" or name in self.handles:
                raise DbusError(f"pipeline {name} is running: pause or stop it before setting its checkpoint")
            cfg = self._resolved(record)
            try:
                source = registry.source_class(cfg.source.type).parse_position(position)
            except ValueError as exc:
                raise DbusError(str(exc)) from None
            checkpoint = Checkpoint(source, 0, self.clock(), set_by="operator").to_dict()
            _store(cfg).save(checkpoint)
            record.checkpointed = True
            self._persist(record)
            return checkpoint

    def _resolved(self, record: PipelineRecord) -> PipelineConfig:
        """The pipeline's config with every `${VAR}` known (DbusError naming the missing ones otherwise)."""
        missing = self._missing(record)
        if missing:
            raise DbusError(f"pipeline {record.name}: {self._missing_error(missing)}")
        try:
            return self._cfg(record)
        except ConfigError as exc:
            raise DbusError(str(exc)) from None

    # ------------------------------------------------------------------ reconcile
    def reconcile(self) -> None:
        """One step: settle each pipeline's desired state, health-check every running one in one batch
        (`Runtime.health_many`: all calls fired at once, one timeout, so a step costs about one round trip
        whatever the number of pipelines), then place and start what should run."""
        with self.lock:
            now = self.clock()
            checked: dict[str, Any] = {}
            for record in list(self.records.values()):
                try:
                    handle = self._settle(record, now)
                except Exception as exc:  # noqa: BLE001 - one pipeline's trouble is its state, not a loop of tracebacks
                    self._failed(record, reason(exc), now)
                    handle = None
                if handle is not None:
                    checked[record.name] = handle
            results = self._health(checked)
            for name, handle in checked.items() if results is not None else ():
                record = self.records[name]
                try:
                    self._apply_health(record, handle, results.get(name), now)
                except Exception as exc:  # noqa: BLE001 - as above
                    self._failed(record, reason(exc), now)
            for record in list(self.records.values()):
                self._mirror_checkpoint(record)
            nodes = self.runtime.nodes()
            wanted = [r.name for r in self.records.values() if r.desired == "running"]
            current = {n: self.records[n].node if n in self.handles else None for n in wanted}
            targets = place(self.strategy, wanted, nodes, current)
            starting: list[tuple[PipelineRecord, str]] = []
            for name in sorted(wanted):
                record = self.records[name]
                target = targets.get(name)
                handle = self.handles.get(name)
                if handle is not None and record.node == target:
                    continue
                if handle is not None:  # two-phase move: the old owner stops before the new one starts
                    log.info("[%s] moving from node %s to %s", name, record.node, target)
                    self._halt(record, "pending")
                if target is None or now < record.retry_at:
                    continue
                starting.append((record, target))
            self._start_all(starting)

    def _health(self, handles: dict[str, Any]) -> dict[str, Any] | None:
        """`Runtime.health_many`; None when the batch itself failed (the controller cannot reach Ray: no
        pipeline is judged by that, they are checked again next step)."""
        if not handles:
            return {}
        try:
            return self.runtime.health_many(dict(handles))
        except Exception as exc:  # noqa: BLE001 - logged; the next step checks again
            log.warning("health check of %d pipeline(s) failed: %s", len(handles), reason(exc))
            return None

    def _mirror_checkpoint(self, record: PipelineRecord) -> bool:
        """Copy a `gcs` checkpoint to the durable state, if there is one (a restored cluster resumes from
        it; one a reconcile step behind at worst: rows again, none lost). False when the copy failed."""
        mirror = getattr(self.kv, "mirror", None)
        if mirror is None or _store_kind(record.spec) != "gcs":
            return True
        try:
            mirror(checkpoint_key(record.name))
        except Exception as exc:  # noqa: BLE001 - retried next step; the pipeline runs on
            log.warning("[%s] checkpoint not copied to the durable state: %s", record.name, reason(exc))
            return False
        return True

    def _settle(self, record: PipelineRecord, now: float) -> Any | None:
        """Halt what should not run; re-attach the live actors of a running pipeline after a controller
        restart. The handle to health-check (None: nothing runs for it)."""
        name = record.name
        handle = self.handles.get(name)
        if record.desired != "running":
            if handle is not None or record.state not in (record.desired,):
                self._halt(record, record.desired)
            return None
        if handle is None and record.epoch and record.state in ("running", "starting"):
            # after a controller restart: the pipeline's reader still holds the `${VAR}` values
            if name not in self.secrets:
                found = self.runtime.secrets(name, record.epoch)
                if found is not None:
                    self.secrets[name] = found
            missing = self._missing(record)
            if missing:  # its actors are gone with the values: nobody can start it again
                self._failed(record, self._missing_error(missing), now)
                return None
            handle = self.runtime.attach(self._cfg(record), record.epoch)
            if handle is not None:
                self.handles[name] = handle
        return handle

    def _apply_health(self, record: PipelineRecord, handle: Any, status: Any, now: float) -> None:
        """Act on one pipeline's health answer: a status, or the exception its check raised (dead, hung)."""
        name = record.name
        if self.handles.get(name) is not handle:  # halted or replaced meanwhile
            return
        if status is None:
            status = DbusError("no health answer")
        if isinstance(status, BaseException):  # dead or hung: restart under a new epoch
            log.warning("[%s] unhealthy (%s): restarting", name, reason(status))
            self.runtime.kill(handle)
            self.handles.pop(name, None)
            record.state, record.error = "pending", f"restarted: {reason(status)}"
            self._persist(record)
            return
        record.status = status
        # `checkpointed` (a later start demands a checkpoint) is durable only once the checkpoint is
        if status.get("checkpoint_saved") and not record.checkpointed and self._mirror_checkpoint(record):
            record.checkpointed = True
            self._persist(record)
        if status["state"] == "failed":
            self.runtime.kill(handle)
            self.handles.pop(name, None)
            self._failed(record, status["error"], now)
        elif record.state != "running" or (record.attempts and now - record.started >= STABLE_S):
            record.state, record.error = "running", None
            if now - record.started >= STABLE_S:
                record.attempts = 0  # healthy long enough: the next failure starts the backoff anew
            self._persist(record)

    def _start_all(self, starting: list[tuple[PipelineRecord, str]]) -> None:
        """Start pipelines on their nodes, up to `START_PARALLELISM` at once: a step that starts many (a lost
        node's, a new cluster's) waits for the slowest few, not for the sum of them."""
        ready = [(record, cfg) for record, node in starting if (cfg := self._prepare_start(record, node)) is not None]
        if ready and self.pool is None:
            self.pool = ThreadPoolExecutor(START_PARALLELISM, thread_name_prefix="start")
        futures = [(record, self.pool.submit(self._call_start, record, cfg)) for record, cfg in ready]
        for record, future in futures:
            self._started(record, future.result())

    def _prepare_start(self, record: PipelineRecord, node: str) -> PipelineConfig | None:
        """The config to start, under a new epoch that fences every older owner (None: it cannot start)."""
        missing = self._missing(record)
        if missing:
            self._failed(record, self._missing_error(missing), self.clock())
            return None
        try:
            cfg = self._cfg(record)
        except ConfigError as exc:
            self._failed(record, str(exc), self.clock())
            return None
        record.epoch = self._next_epoch()
        record.node, record.state, record.status = node, "starting", {}  # no figures of an older owner
        self.runtime.set_epoch(record.name, record.epoch)  # fences every older owner
        self._persist(record)
        return cfg

    def _call_start(self, record: PipelineRecord, cfg: PipelineConfig) -> Any:
        """`Runtime.start` (in a pool thread when several start at once): the handle, or the exception."""
        try:
            return self.runtime.start(cfg, record.epoch, record.node, dict(self.secrets.get(record.name, {})),
                                      record.checkpointed)
        except Exception as exc:  # noqa: BLE001 - a failure is a state, retried with backoff
            return exc

    def _started(self, record: PipelineRecord, handle: Any) -> None:
        if isinstance(handle, BaseException):
            self._failed(record, reason(handle), self.clock())
            return
        self.handles[record.name] = handle
        record.state, record.error, record.started = "running", None, self.clock()
        self._persist(record)

    def _failed(self, record: PipelineRecord, error: str, now: float) -> None:
        record.attempts += 1
        record.state, record.error = "failed", error
        record.retry_at = now + min(MAX_BACKOFF_S, 2.0 ** record.attempts)
        log.error("[%s] failed (attempt %d, retry in %.0fs): %s", record.name, record.attempts,
                  record.retry_at - now, error)
        self._persist(record)

    def _halt(self, record: PipelineRecord, state: str) -> None:
        handle = self.handles.pop(record.name, None)
        if handle is not None:
            try:
                final = self.runtime.stop(handle)
                if final:
                    record.status = final
            except Exception as exc:  # noqa: BLE001 - it is going away either way
                log.warning("[%s] did not stop cleanly (%s): killed", record.name, reason(exc))
                self.runtime.kill(handle)
        record.state = state
        self._persist(record)
