"""Controller actor `dbus:controller` (namespace `dbus`, see `dbus_ray.constants`): one per Ray cluster,
detached, restarted by Ray when it dies. A thin shell: the logic is `dbus_ray.controller.Supervisor`; this
file holds the Ray side (`RayRuntime`) and the reconcile thread."""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

import ray

from dbus_ray import fencing
from dbus_ray.config import PipelineConfig
from dbus_ray.constants import CONTROLLER_NAME, NAMESPACE
from dbus_ray.controller import LoopTimes, Supervisor
from dbus_ray.errors import DbusError, reason
from dbus_ray.hosting import reader_handle
from dbus_ray.pipeline import Pipeline
from dbus_ray.storage.durable import MirroredKV, open_state
from dbus_ray.storage.kv_store import GcsKV, gcs_storage

log = logging.getLogger("dbus.controller")

HEALTH_TIMEOUT_S = 10.0
#: GCS backends that survive the head node (`dbus_ray.storage.kv_store.gcs_storage`)
FAULT_TOLERANT = ("redis", "rocksdb")


def gcs_warning(storage: str | None) -> str | None:
    """The one line saying the GCS does not survive its head node (None when it does)."""
    if storage in FAULT_TOLERANT:
        return None
    how = "keeps its data in memory" if storage == "memory" else "did not say where it keeps its data"
    return (f"GCS fault tolerance is off (the head's GCS {how}): the head's death stops every pipeline; "
            "start the head with RAY_REDIS_ADDRESS (README \"High availability\") or give the controller "
            "--state file:///shared/dir")


def volatile_gcs(storage: str | None, state: str | None) -> str | None:
    """Why checkpoint store `gcs` would be lost with the head (None: GCS FT is on or it is mirrored)."""
    if storage in FAULT_TOLERANT or state:
        return None
    return ("GCS fault tolerance is off and the controller has no durable state, so the checkpoint would die "
            "with the head node: use checkpoint store file or kafka, or start the head with RAY_REDIS_ADDRESS, "
            "or the controller with --state file:///shared/dir (README \"High availability\")")


class RayRuntime:
    """Pipelines as detached actors pinned (softly) to a node."""

    def nodes(self) -> dict[str, float]:
        return {n["NodeID"]: float(n["Resources"].get("dbus_capacity", 1.0))
                for n in ray.nodes() if n["Alive"]}

    def start(self, cfg: PipelineConfig, epoch: int, node: str, secrets: dict[str, str],
              expect_checkpoint: bool) -> Pipeline:
        pipeline = Pipeline(cfg, epoch=epoch, node_id=node, detached=True, secrets=secrets,
                            expect_checkpoint=expect_checkpoint)
        pipeline.kill_strays()
        pipeline.start()
        return pipeline

    def attach(self, cfg: PipelineConfig, epoch: int) -> Pipeline | None:
        return Pipeline.attach(cfg, epoch)

    def secrets(self, pipeline: str, epoch: int) -> dict[str, str] | None:
        return Pipeline.secrets_of(pipeline, epoch)

    def health_many(self, handles: dict[str, Pipeline],
                    timeout: float = HEALTH_TIMEOUT_S) -> dict[str, dict[str, Any] | BaseException]:
        """The health of every pipeline of `handles` (name -> handle): its reader's status, or the exception
        its check ended with. Every call is fired first and all are awaited together under one `timeout`, so
        a check of N pipelines costs about one round trip, not N; one that does not answer in time gets a
        GetTimeoutError and does not delay the others' answers."""
        probes = _probes(handles)
        refs = [ref for _, calls, _ in probes for ref in calls]
        ready: set[Any] = set()
        if refs:
            done, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout, fetch_local=True)
            ready = set(done)
        out: dict[str, dict[str, Any] | BaseException] = {}
        for names, calls, answer in probes:
            if not all(ref in ready for ref in calls):
                late = ray.exceptions.GetTimeoutError(f"no health answer within {timeout:.0f}s")
                out.update(dict.fromkeys(names, late))
                continue
            try:
                out.update(answer(ray.get(calls)))
            except Exception as exc:  # noqa: BLE001 - dead actor, failed call: that pipeline's answer
                out.update(dict.fromkeys(names, exc))
        return out

    def stop(self, handle: Pipeline) -> dict[str, Any] | None:
        return handle.stop(timeout=30.0)

    def kill(self, handle: Pipeline) -> None:
        handle.kill()

    def set_epoch(self, pipeline: str, epoch: int) -> None:
        fencing.set_epoch(pipeline, epoch)

    def clear_epoch(self, pipeline: str) -> None:
        fencing.clear_epoch(pipeline)


def _probes(handles: dict[str, Pipeline]) -> list[tuple[list[str], list[Any], Any]]:
    """The calls that check `handles`, fired now, as probes: (the pipeline names a probe answers for, its
    object refs, a function turning their values into {name: status | exception}). One probe a pipeline
    (every actor of it must answer, the reader's status is the pipeline's), but pipelines sharing a host
    actor share one probe: one `health_all` call a host, split by name."""
    probes = []
    hosts: dict[str, tuple[Any, list[str]]] = {}
    for name, handle in handles.items():
        if handle.host is None:
            probes.append(_probe(name, handle))
        else:
            hosts.setdefault(handle.host._actor_id.hex(), (handle, []))[1].append(name)
    for handle, names in hosts.values():
        probes.append((names, [handle.host.health_all.remote()], _split(names, handle.host_name)))
    return probes


def _probe(name: str, handle: Pipeline) -> tuple[list[str], list[Any], Any]:
    calls = [handle.reader.status.remote()] + [a.stats.remote() for a in handle.actors[1:]]
    return [name], calls, lambda values: {name: values[0]}


def _split(names: list[str], host: str) -> Any:
    def answer(values: list[Any]) -> dict[str, dict[str, Any] | BaseException]:
        statuses = values[0]
        return {name: statuses[name] if name in statuses
                else DbusError(f"pipeline {name} is not in its host {host} any more") for name in names}
    return answer


@ray.remote(num_cpus=0, max_restarts=-1, max_concurrency=16)
class Controller:
    def __init__(self, strategy: str = "sticky", interval_s: float = 1.0, state: str | None = None) -> None:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
        self.state = state
        self.gcs_storage = gcs_storage()  # `dbus controller` warns (once, in its output) when it is `memory`
        kv = GcsKV() if state is None else MirroredKV(GcsKV(), open_state(state))
        self.supervisor = Supervisor(kv, RayRuntime(), strategy, volatile_gcs=volatile_gcs(self.gcs_storage, state))
        self.interval = interval_s
        self.started = time.time()
        self.loops = 0
        self.loop_times = LoopTimes()
        self.thread = threading.Thread(target=self._loop, name="reconcile", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while True:
            began = time.monotonic()
            try:
                self.supervisor.reconcile()
            except Exception as exc:  # noqa: BLE001 - keep reconciling; the error is logged
                log.exception("reconcile failed: %s", reason(exc))
            self.loop_times.add(time.monotonic() - began)
            self.loops += 1
            time.sleep(self.interval)

    def submit(self, spec: dict[str, Any], secrets: dict[str, str] | None = None) -> dict[str, Any]:
        return self.supervisor.submit(spec, secrets)

    def pause(self, name: str) -> dict[str, Any]:
        return self.supervisor.set_desired(name, "paused")

    def resume(self, name: str) -> dict[str, Any]:
        return self.supervisor.set_desired(name, "running")

    def stop(self, name: str) -> dict[str, Any]:
        return self.supervisor.set_desired(name, "stopped")

    def remove(self, name: str) -> None:
        self.supervisor.remove(name)

    def list(self, project: str | None = None) -> list[dict[str, Any]]:
        return self.supervisor.list(project)

    def get(self, name: str) -> dict[str, Any]:
        return self.supervisor.get(name)

    def participants(self) -> list[dict[str, Any]]:
        return self.supervisor.participants()

    def spec(self, name: str) -> dict[str, Any]:
        return self.supervisor.spec(name)

    def checkpoint(self, name: str) -> dict[str, Any] | None:
        return self.supervisor.checkpoint(name)

    def set_checkpoint(self, name: str, position: str) -> dict[str, Any]:
        return self.supervisor.set_checkpoint(name, position)

    def backfill(self, name: str, tables: list[str], where: str | None = None) -> dict[str, Any]:
        """Ask the pipeline's reader for an on-demand snapshot of `tables` (`dbus snapshot`)."""
        self.supervisor.get(name)  # a pipeline by that name
        reader = reader_handle(name)  # its actor, or its stand-in in a shared host
        if reader is None:
            raise DbusError(f"pipeline {name} is not running")
        try:
            return ray.get(reader.backfill.remote(tables, where), timeout=60)
        except ray.exceptions.RayTaskError as exc:
            raise DbusError(reason(exc)) from None

    def rebalance(self) -> None:
        self.supervisor.reconcile()

    def info(self, since: float | None = None) -> dict[str, Any]:
        """`loop`: the reconcile steps' times (p50/p99/max ms) over the recent ones, or those that ended at or
        after `since` (a `time.time()`)."""
        return {"pid": os.getpid(), "started": self.started, "loops": self.loops,
                "strategy": self.supervisor.strategy, "node": ray.get_runtime_context().get_node_id(),
                "state": self.state, "gcs_storage": self.gcs_storage,
                "pipelines": len(self.supervisor.records), "running": len(self.supervisor.handles),
                "loop": self.loop_times.summary(since)}


def get_controller(create: bool = True, strategy: str = "sticky", state: str | None = None) -> Any:
    """The cluster's controller; created if missing (get-if-exists, so concurrent callers share one).
    `state`: the URL of its durable state (`dbus_ray.storage.durable`), used when it is created."""
    if not create:
        return ray.get_actor(CONTROLLER_NAME, namespace=NAMESPACE)
    return Controller.options(
        name=CONTROLLER_NAME, namespace=NAMESPACE, lifetime="detached", get_if_exists=True
    ).remote(strategy, state=state)


def start_controller(strategy: str, state: str | None, join: Any) -> dict[str, Any]:
    """`dbus controller`: check `state` (a bad URL or an unreachable store fails here in one line, not in the
    actor), `join()` the cluster, create the controller if missing and return its `info`. ValueError for a bad
    `state` or one that is not the running controller's (chosen when it was created)."""
    if state is not None:
        try:
            open_state(state)
        except (ValueError, RuntimeError, OSError) as exc:
            raise ValueError(f"--state: {exc}") from None
    join()
    info = ray.get(get_controller(strategy=strategy, state=state).info.remote(), timeout=60)
    if state is not None and info.get("state") != state:
        raise ValueError(f"--state {state}: the running controller keeps its durable state in "
                         f"{info.get('state') or 'none'} (it is chosen when the controller is created: kill actor "
                         "dbus:controller first, its pipelines keep running)")
    return info
