"""Assembles one pipeline on Ray (reader -> router -> batcher -> writer per sink), watches it and stops
it cleanly. Actors are named `dbus:<pipeline>:<role>[:<sink>]` in Ray namespace `dbus` (`dbus_ray.constants`).

Placement (`flow.placement`): `spread` runs each stage as its own actor; `fused` runs them all inside
one actor named like the reader (`dbus_ray.actors.fused`), which answers for the others; `split` runs the
reader, router and batchers in that actor and each sink's writer as its own actor; `shared` runs them
as in `fused`, inside a host actor `dbus:host:<n>` holding up to `flow.host_capacity` pipelines
(`dbus_ray.actors.host`): a detached pipeline (the controller's) joins a detached host of its node, one that
`dbus run` owns joins a host this process started. Its reader is found with `dbus_ray.hosting.reader_handle`."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import ray

from dbus_ray.actors.batcher import BatcherActor
from dbus_ray.actors.fused import FusedPipelineActor
from dbus_ray.actors.host import PipelineHostActor
from dbus_ray.actors.reader import ReaderActor
from dbus_ray.actors.router import RouterActor
from dbus_ray.actors.writer import WriterActor
from dbus_ray.config import PipelineConfig
from dbus_ray.constants import (
    BATCHER,
    HOST,
    HOST_PREFIX,
    KV_HOST_NEXT,
    NAMESPACE,
    READER,
    ROUTER,
    WRITER,
    actor_name,
    host_name,
)
from dbus_ray.errors import DbusError, reason
from dbus_ray.hosting import HostedReader, forget_hosted, hosted_reader, reader_handle
from dbus_ray.storage.kv_store import GcsKV

log = logging.getLogger("dbus.pipeline")

START_TIMEOUT_S = 120.0  # creating the actors and opening source and sinks
#: a host's `health_all` answer serves the health checks of its other pipelines for this long
HEALTH_REUSE_S = 0.5

_HOST_CHOICE = threading.Lock()  # one start at a time chooses (and reserves in) a host
_OWN_HOSTS: dict[str, Any] = {}  # name -> handle of the hosts this process started for pipelines it owns
_HOST_HEALTH: dict[str, tuple[float, dict[str, Any]]] = {}  # host actor id -> (asked at, health_all())


def connect_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Join the Ray cluster at `address` (or $RAY_ADDRESS); with neither, Ray's own choice: the cluster of the
    last `ray start` on this machine, else a new local Ray. With `num_cpus`, always a new local Ray of that
    size (a benchmark's), whatever a `ray start` left behind."""
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    kwargs: dict[str, Any] = {"namespace": NAMESPACE, "logging_level": logging.WARNING,
                              "configure_logging": True}
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(address="local" if num_cpus else None, num_cpus=num_cpus, include_dashboard=False, **kwargs)


class Pipeline:
    """The actors of one running pipeline. Started by `dbus run` (owned by that process) or by the
    controller (detached, placed on a node, carrying the epoch of their assignment)."""

    def __init__(
        self,
        cfg: PipelineConfig,
        max_rows: int | None = None,
        epoch: int | None = None,
        node_id: str | None = None,
        detached: bool = False,
        secrets: dict[str, str] | None = None,
        expect_checkpoint: bool = False,
    ) -> None:
        self.cfg = cfg
        self.secrets = dict(secrets or {})
        self.expect_checkpoint = expect_checkpoint
        self.max_rows = max_rows
        self.epoch = epoch
        self.node_id = node_id
        self.detached = detached
        self.actors: list[Any] = []
        self.reader: Any = None
        self.writers: list[Any] = []
        self.host: Any = None  # shared: the host actor running the pipeline
        self.host_name: str | None = None
        self.started_at = 0.0  # time.monotonic() once started in its host

    @property
    def hosted(self) -> bool:
        return self.cfg.placement == "shared"

    def _options(self, role: str, part: str | None = None, name: str | None = None) -> dict[str, Any]:
        options: dict[str, Any] = {"name": name or actor_name(self.cfg.name, role, part), "namespace": NAMESPACE}
        if self.detached:
            options["lifetime"] = "detached"
        if self.node_id:
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            # hard, so all actors of a pipeline share its node (soft affinity spills actors elsewhere), but
            # failing at once when the node is gone instead of waiting for it: the controller re-places
            options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(
                self.node_id, soft=False, _fail_on_unavailable=True
            )
        return options

    def actor_names(self, placement: str | None = None) -> list[str]:
        """The names of the pipeline's own actors (of `placement`, default the config's): none when shared."""
        placement = placement or self.cfg.placement
        if placement == "shared":
            return []
        if placement == "fused":
            return [actor_name(self.cfg.name, READER)]
        if placement == "split":
            return [actor_name(self.cfg.name, READER)] + [actor_name(self.cfg.name, WRITER, s.name)
                                                          for s in self.cfg.sinks]
        names = [actor_name(self.cfg.name, READER), actor_name(self.cfg.name, ROUTER)]
        for sink in self.cfg.sinks:
            names += [actor_name(self.cfg.name, BATCHER, sink.name), actor_name(self.cfg.name, WRITER, sink.name)]
        return names

    @classmethod
    def attach(cls, cfg: PipelineConfig, epoch: int | None) -> Pipeline | None:
        """The running actors of `cfg` if all of them exist and carry `epoch`, else None."""
        pipeline = cls(cfg, epoch=epoch, detached=True)
        if pipeline.hosted:
            reader = hosted_reader(cfg.name)
            try:
                if reader is None or ray.get(reader.identity.remote(), timeout=10)["epoch"] != epoch:
                    return None
            except Exception:  # noqa: BLE001 - its host is dead or does not hold it
                return None
            pipeline._in_host(reader)
            return pipeline
        try:
            actors = [ray.get_actor(n, namespace=NAMESPACE) for n in pipeline.actor_names()]
            if ray.get(actors[0].identity.remote(), timeout=10)["epoch"] != epoch:
                return None
        except Exception:  # noqa: BLE001 - missing or dead: not attachable
            return None
        pipeline.actors = actors
        pipeline.reader = actors[0]
        writer_prefix = actor_name(cfg.name, WRITER) + ":"  # spread's and split's writer actors
        pipeline.writers = [a for n, a in zip(pipeline.actor_names(), actors) if n.startswith(writer_prefix)]
        return pipeline

    @staticmethod
    def secrets_of(pipeline: str, epoch: int | None) -> dict[str, str] | None:
        """The `${VAR}` values the running reader of `pipeline` (under `epoch`) was started with; None
        when there is no such reader."""
        try:
            reader = reader_handle(pipeline)
            if reader is None or ray.get(reader.identity.remote(), timeout=10)["epoch"] != epoch:
                return None
            return ray.get(reader.secrets.remote(), timeout=10)
        except Exception:  # noqa: BLE001 - missing or dead
            return None

    def kill_strays(self) -> None:
        """Kill any actor left under this pipeline's names (by an earlier owner, of any placement), and remove
        it from a host still running it."""
        for n in self.actor_names("spread"):
            try:
                ray.kill(ray.get_actor(n, namespace=NAMESPACE), no_restart=True)
            except ValueError:
                pass
        stray = hosted_reader(self.cfg.name)
        if stray is not None:
            Pipeline(self.cfg, detached=self.detached)._in_host(stray).kill()

    def stage_stats(self, timeout: float = 10.0) -> dict[str, dict[str, Any]]:
        """`stats()` of every stage but the reader, by stage name (`router`, `batcher:<sink>`, `writer:<sink>`)."""
        if self.cfg.placement in ("fused", "shared", "split"):
            return ray.get(self.reader.stage_stats.remote(), timeout=timeout)
        names = [n.split(":", 2)[2] for n in self.actor_names()[1:]]
        return dict(zip(names, ray.get([a.stats.remote() for a in self.actors[1:]], timeout=timeout)))

    def health(self, timeout: float = 10.0) -> dict[str, Any]:
        """The reader's status once every actor answered within `timeout` (raises otherwise). A hosted
        pipeline's comes from its host's `health_all`, one call serving every pipeline of the host."""
        if self.host is not None:
            return self._hosted_health(timeout)
        calls = [self.reader.status.remote()] + [a.stats.remote() for a in self.actors[1:]]
        return ray.get(calls, timeout=timeout)[0]

    def start(self) -> None:
        cfg = self.cfg
        running = reader_handle(cfg.name)
        if isinstance(running, HostedReader):
            raise DbusError(f"pipeline {cfg.name} is already running (in host {running.host_name})")
        if running is not None:
            raise DbusError(f"pipeline {cfg.name} is already running (actor {actor_name(cfg.name, READER)} exists)")
        # the resolved config and the `${VAR}` values go to the actors through the object store: an actor's
        # creation spec, which the GCS keeps (in Redis with GCS fault tolerance), holds references, not values
        cfg_ref = ray.put(cfg)
        args = (cfg_ref, [s.name for s in cfg.sinks], self.max_rows, self.epoch, ray.put(self.secrets),
                self.expect_checkpoint)
        try:
            if self.hosted:
                self._start_hosted(args)
                return
            if cfg.placement in ("fused", "split"):  # one actor: it opens the sinks (split: the writers'), then reads
                self.reader = FusedPipelineActor.options(**self._options(READER)).remote(*args)
                self.actors.append(self.reader)
                if cfg.placement == "split":  # each sink's writer in an actor of its own
                    self.writers = [self._writer(cfg_ref, sink) for sink in cfg.sinks]
                    self.actors += self.writers
                    ray.get([w.stats.remote() for w in self.writers], timeout=START_TIMEOUT_S)  # a sink that fails
                writers = dict(zip([s.name for s in cfg.sinks], self.writers)) or None
                ray.get(self.reader.start.remote(writers), timeout=START_TIMEOUT_S)
                return
            self.reader = ReaderActor.options(**self._options(READER)).remote(*args)
            self.actors.append(self.reader)
            router_at = len(self.actors)
            batchers = []
            for sink in cfg.sinks:
                writer = self._writer(cfg_ref, sink)
                batcher = BatcherActor.options(**self._options(BATCHER, sink.name)).remote(
                    cfg_ref, sink.name, writer, self.reader
                )
                self.writers.append(writer)
                batchers.append(batcher)
                self.actors += [batcher, writer]
            router = RouterActor.options(**self._options(ROUTER)).remote(cfg_ref, batchers, self.reader)
            self.actors.insert(router_at, router)
            ray.get([w.stats.remote() for w in self.writers], timeout=START_TIMEOUT_S)  # a sink that cannot open
            ray.get(self.reader.start.remote(router), timeout=START_TIMEOUT_S)
        except Exception as exc:
            died = self._died(exc)
            self.kill()
            if isinstance(exc, DbusError) and not isinstance(exc, ray.exceptions.RayError):
                raise
            why = f"{died} died ({reason(exc)})" if died else reason(exc)
            raise DbusError(f"pipeline {cfg.name} cannot start: {why}") from None

    def _writer(self, cfg_ref: Any, sink: Any) -> Any:
        """The writer actor of `sink` (spread and split), acknowledging to the reader."""
        return WriterActor.options(**self._options(WRITER, sink.name)).remote(cfg_ref, ray.put(sink), self.reader)

    def _died(self, exc: BaseException) -> str | None:
        """'its reader' (or 'its actor <name>') when `exc` is one of this pipeline's actors dying."""
        if not isinstance(exc, ray.exceptions.RayActorError) or self.hosted or not exc.actor_id:
            return None
        names = self.actor_names()
        handles = self.actors if len(self.actors) == len(names) else self.actors[:1]
        for name, handle in zip(names, handles):
            if handle._actor_id.hex() == exc.actor_id:
                return "its reader" if handle is self.reader else f"its actor {name}"
        return None

    def status(self) -> dict[str, Any]:
        return ray.get(self.reader.status.remote())

    def stop(self, timeout: float = 60.0) -> dict[str, Any]:
        """Deliver what is in flight, save the final checkpoint, remove the actors."""
        try:
            if self.host is not None:
                out = ray.get(self.host.stop_pipeline.remote(self.cfg.name, timeout), timeout=timeout + 10)
                return out["final"]
            final = ray.get(self.reader.stop.remote(timeout), timeout=timeout + 10)
            ray.get([w.close.remote() for w in self.writers], timeout=timeout)
        finally:
            self.kill()
        return final

    def kill(self, timeout: float = 30.0) -> None:
        """kill -9 every actor and return once each process on this node is gone. `ray.kill` only asks,
        and the GCS marks an actor dead before its process exits: one alive for a moment more could
        still write a line or save a checkpoint behind a caller that then reads them. A hosted pipeline is
        removed from its host, which returns once its sinks are closed (the host goes with its last pipeline,
        and with a hung one, taking its other pipelines: the controller restarts them)."""
        if self.host is not None:
            self._kill_hosted(timeout)
        _kill_actors(self.actors, timeout)
        self.actors = []

    # ------------------------------------------------------------------ shared hosts
    def _in_host(self, reader: HostedReader) -> Pipeline:
        self.host, self.host_name, self.reader = reader.host, reader.host_name, reader
        self.started_at = time.monotonic()
        return self

    def _start_hosted(self, args: tuple[Any, ...]) -> None:
        """Start the pipeline in the fullest host it may join, or in a new one. The place is reserved under a
        lock of this process (the controller starts several pipelines at once), so concurrent starts fill one
        host instead of each creating its own."""
        cap = self.cfg.flow.host_capacity
        for _ in range(3):  # a host found with room may be full when asked (another process's start)
            with _HOST_CHOICE:
                chosen = None
                for name, host in self._candidates(cap):
                    if ray.get(host.reserve.remote(self.cfg.name, cap), timeout=START_TIMEOUT_S):
                        chosen = name, host
                        break
                    _retire_if_empty(host)
            if chosen is None:
                continue
            name, host = chosen
            try:
                identity = ray.get(host.add.remote(*args, cap), timeout=START_TIMEOUT_S)
            except Exception:
                _retire_if_empty(host, self.cfg.name)  # one still starting there is dropped once started
                raise
            if identity is not None:
                self._in_host(HostedReader(host, self.cfg.name, name))
                return
            _retire_if_empty(host)
        raise DbusError(f"pipeline {self.cfg.name}: no host took it")

    def _candidates(self, cap: int) -> Iterator[tuple[str, Any]]:
        yield from self._hosts(cap)
        yield self._new_host(cap)

    def _hosts(self, cap: int) -> list[tuple[str, Any]]:
        """(name, handle) of the live hosts this pipeline may join, the fullest first: detached ones on its node
        for a detached pipeline, else the ones this process started."""
        if self.detached:
            handles = {}
            for a in ray.util.list_named_actors(all_namespaces=True):
                if a.get("namespace") == NAMESPACE and a["name"].startswith(HOST_PREFIX):
                    try:
                        handles[a["name"]] = ray.get_actor(a["name"], namespace=NAMESPACE)
                    except ValueError:
                        pass
        else:
            handles = dict(_OWN_HOSTS)
        refs = {name: h.info.remote() for name, h in handles.items()}
        found = []
        for name, ref in refs.items():
            try:
                info = ray.get(ref, timeout=10)
            except Exception:  # noqa: BLE001 - dead or hung: not a place to start in
                continue
            if (info["detached"] == self.detached and not info["retiring"]
                    and (self.node_id is None or info["node"] == self.node_id)
                    and len(info["pipelines"]) < min(cap, info["capacity"])):
                found.append((len(info["pipelines"]), name, handles[name]))
        return [(name, h) for _, name, h in sorted(found, key=lambda f: -f[0])]

    def _new_host(self, cap: int) -> tuple[str, Any]:
        kv = GcsKV()
        for _ in range(100):
            n = int(kv.get(KV_HOST_NEXT) or 0) + 1
            kv.put(KV_HOST_NEXT, str(n).encode())
            name = host_name(n)
            try:
                host = PipelineHostActor.options(**self._options(HOST, name=name)).remote(name, cap, self.detached)
            except ValueError:  # taken by a concurrent start
                continue
            if not self.detached:
                _OWN_HOSTS[name] = host
            return name, host
        raise DbusError(f"pipeline {self.cfg.name}: cannot name a new host actor")

    def _hosted_health(self, timeout: float) -> dict[str, Any]:
        key = self.host._actor_id.hex()
        asked = time.monotonic()
        cached = _HOST_HEALTH.get(key)
        if cached is None or cached[0] < max(asked - HEALTH_REUSE_S, self.started_at):
            cached = _HOST_HEALTH[key] = (asked, ray.get(self.host.health_all.remote(), timeout=timeout))
        status = cached[1].get(self.cfg.name)
        if status is None:
            raise DbusError(f"pipeline {self.cfg.name} is not in its host {self.host_name} any more")
        return status

    def _kill_hosted(self, timeout: float) -> None:
        host, self.host = self.host, None
        try:
            left = ray.get(host.remove.remote(self.cfg.name, timeout), timeout=timeout + 10)
        except ray.exceptions.GetTimeoutError:
            log.warning("[%s] host %s does not answer: killing it with its pipelines", self.cfg.name, self.host_name)
            left = 0
        except Exception:  # noqa: BLE001 - the host is gone, and the pipeline with it
            forget_hosted(self.cfg.name, host._actor_id.hex())
            left = None
        if left == 0:
            _retire(host, timeout)


def _retire_if_empty(host: Any, pipeline: str = "") -> None:
    """Remove `pipeline` from `host` (if named), then kill the host when it holds no pipeline (it then takes
    none: see `PipelineHost.remove`)."""
    try:
        if ray.get(host.remove.remote(pipeline, 10.0), timeout=20) == 0:
            _retire(host, 30.0)
    except Exception:  # noqa: BLE001 - already gone
        pass


def _retire(host: Any, timeout: float) -> None:
    """kill -9 a host and return once its process on this node is gone."""
    _HOST_HEALTH.pop(host._actor_id.hex(), None)
    for name, own in list(_OWN_HOSTS.items()):
        if own._actor_id == host._actor_id:
            del _OWN_HOSTS[name]
    _kill_actors([host], timeout)


def _kill_actors(actors: list[Any], timeout: float) -> None:
    """kill -9 `actors` and return once each one's process on this node is gone (or after `timeout` s)."""
    pids = [_local_pid(actor) for actor in actors]
    for actor in actors:
        try:
            ray.kill(actor, no_restart=True)
        except Exception:  # noqa: BLE001 - already gone
            pass
    deadline = time.monotonic() + timeout
    for pid in filter(None, pids):
        while _running(pid) and time.monotonic() < deadline:
            time.sleep(0.01)


def _local_pid(actor: Any) -> int | None:
    """The process id of `actor` when it runs on this node (from the GCS's actor table), else None."""
    try:
        from ray._private import state

        info = state.actors(actor._actor_id.hex())
        here = ray.get_runtime_context().get_node_id()
        if info.get("State") == "ALIVE" and info.get("Address", {}).get("NodeID") == here:
            return int(info["Pid"]) or None
    except Exception:  # noqa: BLE001 - unknown: nothing to wait for
        pass
    return None


def _running(pid: int) -> bool:
    """Whether process `pid` still runs (a zombie waiting to be reaped does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def run_pipeline(
    cfg: PipelineConfig,
    *,
    max_rows: int | None = None,
    until_caught_up: bool = False,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    interval: float = 0.5,
) -> dict[str, Any]:
    """Run a pipeline until it is caught up (when asked), has read `max_rows`, fails, `should_stop()`
    says so, or Ctrl-C; then stop it cleanly and return its final status."""
    pipeline = Pipeline(cfg, max_rows)
    pipeline.start()
    try:
        while True:
            try:
                status = pipeline.status()
            except ray.exceptions.RayActorError as exc:  # the reader died (kill -9, its node lost): one line
                pipeline.kill()
                raise DbusError(f"pipeline {cfg.name} stopped: its reader died ({reason(exc)})") from None
            if on_progress:
                on_progress(status)
            if status["state"] == "failed":
                break
            if (until_caught_up or max_rows is not None) and status["caught_up"]:
                break
            if should_stop is not None and should_stop():
                break
            time.sleep(interval)
    except KeyboardInterrupt:
        log.warning("[%s] interrupted: stopping with a final checkpoint", cfg.name)
    try:
        return pipeline.stop()
    except ray.exceptions.RayActorError as exc:
        raise DbusError(f"pipeline {cfg.name} stopped: its reader died ({reason(exc)})") from None
