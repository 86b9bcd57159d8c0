"""Snapshot worker actors `dbus:<pipeline>:snapshot:<i>`: read key-range chunks of a parallel snapshot
(`source.snapshot_parallelism` >= 2), each worker inside its own consistent-snapshot transaction, and
hand back the rows as an Arrow image plus the binlog position the transaction sees (see
`dbus_ray.mysql.snapshot.parallel.ParallelSnapshot`). The pool is started by the pipeline's reader (which owns
the workers: they end with it), spread over the cluster's nodes."""

from __future__ import annotations

import logging
import os
from typing import Any

import pyarrow as pa
import pymysql
import ray

from dbus_ray.actors.owned import start_owned
from dbus_ray.constants import actor_name
from dbus_ray.errors import DbusError
from dbus_ray.mysql import connection as pf
from dbus_ray.mysql.snapshot.catalog import SnapTable, open_consistent
from dbus_ray.mysql.snapshot.parallel import WorkerLost
from dbus_ray.mysql.snapshot.text_rows import fetch

log = logging.getLogger("dbus.snapshot")

#: Reconnects (each under a new consistent snapshot, whose position goes with the chunk) per chunk.
RECONNECT_ATTEMPTS = 3


@ray.remote(num_cpus=0, max_restarts=0)
class SnapshotWorker:
    def __init__(self, ep: pf.Endpoint, pipeline: str, index: int) -> None:
        self.ep = ep
        self.pipeline = pipeline
        self.index = index
        self.conn: pymysql.connections.Connection | None = None
        self.at = ("", 0)
        self.rows = 0

    def pid(self) -> int:
        return os.getpid()

    def read(self, t: SnapTable, lo: tuple[Any, ...] | None, hi: tuple[Any, ...] | None
             ) -> tuple[pa.StructArray, str, int]:
        """The rows of `t` with lo < key <= hi in key order, and the binlog position they are read at."""
        sql, args = t.range_sql(lo, hi)
        for attempt in range(RECONNECT_ATTEMPTS + 1):
            if self.conn is None:
                self.conn, file, offset = open_consistent(self.ep)
                self.at = (file, offset)
            try:
                rows = fetch(self.conn, sql, args)
                break
            except pymysql.err.OperationalError as exc:
                code = exc.args[0] if exc.args else None
                self.close()
                if code not in (2006, 2013, 2003) or attempt == RECONNECT_ATTEMPTS:
                    raise DbusError(f"snapshot of {t.name} failed on {self.ep.where}: {exc.args[-1]}") from None
                log.warning("[%s] snapshot worker %d: connection lost (%s), reading on under a new snapshot",
                            self.pipeline, self.index, exc.args[-1])
        self.rows += len(rows)
        return rows.image(t), self.at[0], self.at[1]

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:  # noqa: BLE001 - already broken
                pass
            self.conn = None


class WorkerPool:
    """`n` snapshot workers, spread over the nodes (Ray's SPREAD scheduling)."""

    def __init__(self, ep: pf.Endpoint, pipeline: str, n: int) -> None:
        self.ep = ep
        self.pipeline = pipeline
        self.workers: list[Any] = [self._start(i) for i in range(n)]

    def _start(self, i: int) -> Any:
        # the endpoint (with its password) through the object store: the GCS keeps references only
        return start_owned(SnapshotWorker, "snapshot worker", actor_name(self.pipeline, "snapshot", str(i)), "SPREAD",
                           ray.put(self.ep), self.pipeline, i)

    def read(self, i: int, t: SnapTable, lo: Any, hi: Any) -> Any:
        return self.workers[i].read.remote(t, lo, hi)

    def result(self, ref: Any) -> tuple[pa.StructArray, str, int]:
        try:  # (the caller is the reader's polling thread, not its event loop: wait on a future)
            return ref.future().result()
        except ray.exceptions.RayActorError as exc:
            raise WorkerLost(type(exc).__name__) from None
        except ray.exceptions.RayTaskError as exc:
            cause = exc.cause if isinstance(exc.cause, Exception) else exc
            raise cause from None

    def replace(self, i: int) -> None:
        try:
            ray.kill(self.workers[i], no_restart=True)
        except Exception:  # noqa: BLE001 - already gone
            pass
        self.workers[i] = self._start(i)

    def close(self) -> None:
        for w in self.workers:
            try:
                ray.kill(w, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self.workers = []
