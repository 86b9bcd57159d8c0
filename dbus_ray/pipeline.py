"""Assembles one pipeline on Ray (reader -> router -> batcher -> writer per sink), watches it and stops
it cleanly. Actors are named `dbus:<pipeline>:<role>[:<sink>]` in Ray namespace `dbus` (`dbus_ray.constants`).

Placement (`flow.placement`): `spread` runs each stage as its own actor; `fused` runs them all inside
one actor named like the reader (`dbus_ray.actors.fused`), which answers for the others."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

import ray

from dbus_ray.actors.batcher import BatcherActor
from dbus_ray.actors.fused import FusedPipelineActor
from dbus_ray.actors.reader import ReaderActor
from dbus_ray.actors.router import RouterActor
from dbus_ray.actors.writer import WriterActor
from dbus_ray.config import PipelineConfig
from dbus_ray.constants import BATCHER, NAMESPACE, READER, ROUTER, WRITER, actor_name
from dbus_ray.errors import DbusError, reason

log = logging.getLogger("dbus.pipeline")

START_TIMEOUT_S = 120.0  # creating the actors and opening source and sinks


def connect_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Join the Ray cluster at `address` (or $RAY_ADDRESS); with neither, start a local Ray."""
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    kwargs: dict[str, Any] = {"namespace": NAMESPACE, "logging_level": logging.WARNING,
                              "configure_logging": True}
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, **kwargs)


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

    def _options(self, role: str, part: str | None = None) -> dict[str, Any]:
        options: dict[str, Any] = {"name": actor_name(self.cfg.name, role, part), "namespace": NAMESPACE}
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
        """The names of the pipeline's actors (of `placement`, default the config's)."""
        if (placement or self.cfg.placement) == "fused":
            return [actor_name(self.cfg.name, READER)]
        names = [actor_name(self.cfg.name, READER), actor_name(self.cfg.name, ROUTER)]
        for sink in self.cfg.sinks:
            names += [actor_name(self.cfg.name, BATCHER, sink.name), actor_name(self.cfg.name, WRITER, sink.name)]
        return names

    @classmethod
    def attach(cls, cfg: PipelineConfig, epoch: int | None) -> Pipeline | None:
        """The running actors of `cfg` if all of them exist and carry `epoch`, else None."""
        pipeline = cls(cfg, epoch=epoch, detached=True)
        try:
            actors = [ray.get_actor(n, namespace=NAMESPACE) for n in pipeline.actor_names()]
            if ray.get(actors[0].identity.remote(), timeout=10)["epoch"] != epoch:
                return None
        except Exception:  # noqa: BLE001 - missing or dead: not attachable
            return None
        pipeline.actors = actors
        pipeline.reader = actors[0]
        pipeline.writers = actors[3::2]
        return pipeline

    @staticmethod
    def secrets_of(pipeline: str, epoch: int | None) -> dict[str, str] | None:
        """The `${VAR}` values the running reader of `pipeline` (under `epoch`) was started with; None
        when there is no such reader."""
        try:
            reader = ray.get_actor(actor_name(pipeline, READER), namespace=NAMESPACE)
            if ray.get(reader.identity.remote(), timeout=10)["epoch"] != epoch:
                return None
            return ray.get(reader.secrets.remote(), timeout=10)
        except Exception:  # noqa: BLE001 - missing or dead
            return None

    def kill_strays(self) -> None:
        """Kill any actor left under this pipeline's names (by an earlier owner, of either placement)."""
        for n in self.actor_names("spread"):
            try:
                ray.kill(ray.get_actor(n, namespace=NAMESPACE), no_restart=True)
            except ValueError:
                pass

    def stage_stats(self, timeout: float = 10.0) -> dict[str, dict[str, Any]]:
        """`stats()` of every stage but the reader, by stage name (`router`, `batcher:<sink>`, `writer:<sink>`)."""
        if self.cfg.placement == "fused":
            return ray.get(self.reader.stage_stats.remote(), timeout=timeout)
        names = [n.split(":", 2)[2] for n in self.actor_names()[1:]]
        return dict(zip(names, ray.get([a.stats.remote() for a in self.actors[1:]], timeout=timeout)))

    def health(self, timeout: float = 10.0) -> dict[str, Any]:
        """The reader's status once every actor answered within `timeout` (raises otherwise)."""
        calls = [self.reader.status.remote()] + [a.stats.remote() for a in self.actors[1:]]
        return ray.get(calls, timeout=timeout)[0]

    def start(self) -> None:
        cfg = self.cfg
        name = actor_name(cfg.name, READER)
        try:
            ray.get_actor(name, namespace=NAMESPACE)
        except ValueError:
            pass
        else:
            raise DbusError(f"pipeline {cfg.name} is already running (actor {name} exists)")
        # the resolved config and the `${VAR}` values go to the actors through the object store: an actor's
        # creation spec, which the GCS keeps (in Redis with GCS fault tolerance), holds references, not values
        cfg_ref = ray.put(cfg)
        args = (cfg_ref, [s.name for s in cfg.sinks], self.max_rows, self.epoch, ray.put(self.secrets),
                self.expect_checkpoint)
        try:
            if cfg.placement == "fused":  # one actor: it opens the sinks, then reads
                self.reader = FusedPipelineActor.options(**self._options(READER)).remote(*args)
                self.actors.append(self.reader)
                ray.get(self.reader.start.remote(), timeout=START_TIMEOUT_S)
                return
            self.reader = ReaderActor.options(**self._options(READER)).remote(*args)
            self.actors.append(self.reader)
            router_at = len(self.actors)
            batchers = []
            for sink in cfg.sinks:
                writer = WriterActor.options(**self._options(WRITER, sink.name)).remote(
                    cfg_ref, ray.put(sink), self.reader
                )
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
            self.kill()
            if isinstance(exc, DbusError) and not isinstance(exc, ray.exceptions.RayError):
                raise
            raise DbusError(f"pipeline {cfg.name} cannot start: {reason(exc)}") from None

    def status(self) -> dict[str, Any]:
        return ray.get(self.reader.status.remote())

    def stop(self, timeout: float = 60.0) -> dict[str, Any]:
        """Deliver what is in flight, save the final checkpoint, remove the actors."""
        try:
            final = ray.get(self.reader.stop.remote(timeout), timeout=timeout + 10)
            ray.get([w.close.remote() for w in self.writers], timeout=timeout)
        finally:
            self.kill()
        return final

    def kill(self, timeout: float = 30.0) -> None:
        """kill -9 every actor and return once each process on this node is gone. `ray.kill` only asks,
        and the GCS marks an actor dead before its process exits: one alive for a moment more could
        still write a line or save a checkpoint behind a caller that then reads them."""
        pids = [_local_pid(actor) for actor in self.actors]
        for actor in self.actors:
            try:
                ray.kill(actor, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone
                pass
        deadline = time.monotonic() + timeout
        for pid in filter(None, pids):
            while _running(pid) and time.monotonic() < deadline:
                time.sleep(0.01)
        self.actors = []


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
