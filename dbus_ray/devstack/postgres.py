"""A private PostgreSQL server for the tests: Debian's ``initdb`` + ``postgres`` on a free loopback port.

The binaries are looked up on PATH, then in ``/usr/lib/postgresql/<version>/bin`` (where Debian's
``postgresql`` package puts them; ``make install`` installs it when missing). PostgreSQL refuses to run as
root: as root the cluster is created and run as the ``postgres`` user (Debian's package creates it), its
temp dir handed to that user."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Self

from dbus_ray.devstack.process import (
    _LIVE,
    DevStackError,
    _Component,
    _make_base_dir,
    _open_log,
    _tail,
    free_port,
    log,
)

_INSTALL_HINT = "apt-get install postgresql"
_RUN_AS = "postgres"  # the user the server runs as when we are root


def pg_bin(name: str) -> str:
    """The path of PostgreSQL program `name` (initdb, postgres): PATH first, then Debian's versioned dir."""
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                      key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if versions:
        return versions[-1]
    raise DevStackError(f"PostgreSQL program {name} not found on PATH nor in /usr/lib/postgresql/*/bin: "
                        f"run `{_INSTALL_HINT}`")


class PostgreSQL(_Component):
    """A private PostgreSQL cluster on 127.0.0.1 and a free port, trust authentication from loopback only.

    Superuser ``user`` (default ``dbus``), database ``database`` (default ``dbus_test``); ``conninfo`` is the
    libpq connection string the postgres sink takes as `dsn`."""

    name = "postgres"
    host = "127.0.0.1"

    def __init__(
        self,
        *,
        user: str = "dbus",
        database: str = "dbus_test",
        port: int | None = None,
        parent_dir: str | os.PathLike[str] | None = None,
        startup_timeout: float = 60.0,
    ) -> None:
        super().__init__(parent_dir=parent_dir, startup_timeout=startup_timeout, detached=False)
        self.user = user
        self.database = database
        self._requested_port = port
        self._port: int | None = None

    @property
    def datadir(self) -> str:
        return str(self.base_dir / "data")

    @property
    def log_path(self) -> Path:
        return self.base_dir / "postgres.log"

    def conninfo(self, database: str | None = None) -> str:
        return f"host={self.host} port={self.port} user={self.user} dbname={database or self.database}"

    def connect(self, database: str | None = None, **kwargs: Any) -> Any:
        """A psycopg connection (autocommit on) as the superuser."""
        import psycopg

        kwargs.setdefault("autocommit", True)
        kwargs.setdefault("connect_timeout", 5)
        return psycopg.connect(self.conninfo(database), **kwargs)

    # -- process plumbing
    def _account(self) -> dict[str, Any]:
        """Popen arguments that run a program as the `postgres` user when we are root."""
        if os.geteuid() != 0:
            return {}
        try:
            pw = pwd.getpwnam(_RUN_AS)
        except KeyError:
            raise DevStackError(f"running as root and there is no user {_RUN_AS!r} to run PostgreSQL as: "
                                f"run `{_INSTALL_HINT}` (it creates the user)") from None
        return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": [],
                "env": {**os.environ, "HOME": str(self.base_dir), "USER": _RUN_AS, "LOGNAME": _RUN_AS}}

    def _run(self, argv: list[str], log_path: Path) -> subprocess.Popen[bytes]:
        out = _open_log(log_path)
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    cwd=self.base_dir, close_fds=True, **self._account())
        finally:
            out.close()
        _LIVE.add(self)
        return proc

    def _install(self) -> None:
        initdb = pg_bin("initdb")
        if os.geteuid() == 0:
            account = self._account()
            os.chown(self.base_dir, account["user"], account["group"])
        argv = [initdb, "-D", self.datadir, "-U", self.user, "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8",
                "--no-sync"]
        install_log = self.base_dir / "initdb.log"
        proc = self._run(argv, install_log)
        try:
            code = proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise DevStackError(f"initdb did not finish in 120 s; see {install_log}") from None
        if code != 0:
            raise DevStackError(f"initdb failed (exit {code}) in {self.datadir}; last lines of {install_log}:\n"
                                f"{_tail(install_log)}")

    def _server_args(self, port: int) -> list[str]:
        return [
            pg_bin("postgres"), "-D", self.datadir,
            "-c", f"listen_addresses={self.host}", "-c", f"port={port}",
            "-c", f"unix_socket_directories={self.base_dir}",
            "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",  # dev only
            "-c", "shared_buffers=32MB", "-c", "max_connections=100",
            "-c", "logging_collector=off",
        ]

    def _wait_ready(self, proc: subprocess.Popen[bytes]) -> None:
        import psycopg

        deadline = time.monotonic() + self.startup_timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise DevStackError(f"postgres exited with code {proc.returncode} during startup; last lines of "
                                    f"{self.log_path}:\n{_tail(self.log_path)}")
            try:
                psycopg.connect(self.conninfo("postgres"), connect_timeout=2).close()
            except psycopg.Error as exc:
                last_error = exc
            else:
                return
            time.sleep(0.05)
        raise DevStackError(f"postgres did not answer on {self.host}:{self._port} within "
                            f"{self.startup_timeout:.0f} s (last error: {last_error}); last lines of "
                            f"{self.log_path}:\n{_tail(self.log_path)}")

    # -- lifecycle
    def start(self) -> Self:
        """Create a cluster in a temp dir, start ``postgres``, wait until it answers, create the database."""
        if self.running:
            return self
        t0 = time.monotonic()
        self._base_dir = _make_base_dir(self._parent_dir, "postgres")
        try:
            self._install()
            attempts = 1 if self._requested_port is not None else 3
            for attempt in range(1, attempts + 1):
                port = self._requested_port or free_port(self.host)
                self._port = port
                self._proc = self._run(self._server_args(port), self.log_path)
                try:
                    self._wait_ready(self._proc)
                except DevStackError as exc:
                    self._stop_process(timeout=10.0)
                    if attempt < attempts and "already in use" in str(exc):
                        log.info("postgres port %d was taken meanwhile; retrying on another port", port)
                        continue
                    raise
                break
            with self.connect("postgres") as conn:
                conn.execute(f'CREATE DATABASE "{self.database}"')
        except BaseException:
            self.stop()
            raise
        log.info("postgres started on %s:%d (pid %d, dir %s) in %.1f s", self.host, self.port, self.pid,
                 self.base_dir, time.monotonic() - t0)
        return self

