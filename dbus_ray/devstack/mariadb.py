"""A private MariaDB server for the dev stack: Debian's ``mariadbd`` with ROW binlog on a free port."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

import pymysql

from dbus_ray.devstack.process import (
    DevStackError,
    _Component,
    _make_base_dir,
    _tail,
    free_port,
    log,
)

_MARIADBD = "/usr/sbin/mariadbd"
_INSTALL_DB = "mariadb-install-db"
_INSTALL_HINT = "apt-get install mariadb-server"


class MariaDB(_Component):
    """A private MariaDB server (Debian's ``mariadbd``) with ROW binlog, on a free port.

    Users: ``root`` (password ``root_password``; via the private socket or TCP from 127.0.0.1)
    and the replication user ``user``/``password`` (``REPLICATION SLAVE, REPLICATION CLIENT,
    SELECT ON *.*``: enough for python-mysql-replication's ``BinLogStreamReader``).  The database
    ``database`` exists.  The setup statements run with ``sql_log_bin=0``, so the binlog starts clean.
    """

    name = "mariadb"
    host = "127.0.0.1"

    def __init__(
        self,
        *,
        user: str = "dbus",
        password: str = "dbus-pass",
        root_password: str = "root-pass",
        database: str = "dbus_test",
        server_id: int = 1,
        port: int | None = None,
        grants: str = "REPLICATION SLAVE, REPLICATION CLIENT, SELECT",
        extra_args: Sequence[str] = (),
        parent_dir: str | os.PathLike[str] | None = None,
        startup_timeout: float = 60.0,
        detached: bool = False,
    ) -> None:
        super().__init__(parent_dir=parent_dir, startup_timeout=startup_timeout, detached=detached)
        self.user = user
        self.password = password
        self.root_user = "root"
        self.root_password = root_password
        self.database = database
        self.server_id = server_id
        self.grants = grants
        self.extra_args = list(extra_args)
        self._requested_port = port
        self._port: int | None = None

    # -- properties
    @property
    def socket(self) -> str:
        return str(self.base_dir / "mysqld.sock")

    @property
    def datadir(self) -> str:
        return str(self.base_dir / "data")

    @property
    def log_path(self) -> Path:
        """The server's error log (startup failures end up here)."""
        return self.base_dir / "mariadbd.err"

    @property
    def dsn(self) -> str:
        """``mysql://user:password@127.0.0.1:PORT`` for the replication user (contains the password)."""
        return f"mysql://{self.user}:{self.password}@{self.host}:{self.port}"

    def connection_settings(self) -> dict[str, Any]:
        """Keyword arguments for ``BinLogStreamReader(connection_settings=...)`` / ``pymysql.connect``."""
        return {"host": self.host, "port": self.port, "user": self.user, "password": self.password}

    # -- connections
    def root_connect(self, db: str | None = None, **kwargs: Any) -> pymysql.connections.Connection:
        """Admin connection as root over the private unix socket (autocommit on)."""
        kwargs.setdefault("autocommit", True)
        kwargs.setdefault("connect_timeout", 5)
        return pymysql.connect(
            unix_socket=self.socket, user=self.root_user, password=self.root_password, database=db, **kwargs
        )

    def connect(self, db: str | None = None, **kwargs: Any) -> pymysql.connections.Connection:
        """Connection as the replication user over TCP (autocommit on)."""
        kwargs.setdefault("autocommit", True)
        kwargs.setdefault("connect_timeout", 5)
        return pymysql.connect(
            host=self.host, port=self.port, user=self.user, password=self.password, database=db, **kwargs
        )

    # -- lifecycle
    def _server_args(self, port: int) -> list[str]:
        args = [
            _MARIADBD,
            "--no-defaults",  # must come first: never read /etc/mysql/* of the system server
            f"--datadir={self.datadir}",
            f"--port={port}",
            f"--bind-address={self.host}",
            "--skip-networking=0",
            f"--socket={self.socket}",
            f"--pid-file={self.base_dir / 'mysqld.pid'}",
            f"--log-error={self.log_path}",
            f"--tmpdir={self.base_dir / 'tmp'}",
            f"--log-bin={self.base_dir / 'data' / 'binlog'}",
            "--binlog-format=ROW",
            "--binlog-row-image=FULL",
            "--binlog-row-metadata=FULL",
            f"--server-id={self.server_id}",
            "--gtid-strict-mode=ON",
            "--character-set-server=utf8mb4",
            "--collation-server=utf8mb4_general_ci",
            "--skip-name-resolve",
            "--performance-schema=OFF",
            "--innodb-buffer-pool-size=64M",
            "--innodb-log-file-size=16M",
            "--innodb-flush-log-at-trx-commit=2",  # survives a mariadbd crash, not a power cut: fine for dev
            "--innodb-buffer-pool-load-at-startup=OFF",
            "--innodb-buffer-pool-dump-at-shutdown=OFF",
            "--max-connections=200",
        ]
        if os.geteuid() == 0:
            args.append("--user=root")
        return args + self.extra_args

    def _install(self) -> None:
        mariadbd = Path(_MARIADBD)
        install_db = shutil.which(_INSTALL_DB) or shutil.which("mysql_install_db")
        if not mariadbd.exists() or install_db is None:
            raise DevStackError(
                f"MariaDB binaries not found ({_MARIADBD}, {_INSTALL_DB}): run `{_INSTALL_HINT}`"
            )
        (self.base_dir / "tmp").mkdir()
        argv = [
            install_db,
            "--no-defaults",
            f"--datadir={self.datadir}",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
            "--skip-name-resolve",
            "--innodb-log-file-size=16M",
            "--innodb-buffer-pool-size=64M",
        ]
        if os.geteuid() == 0:
            argv.append("--user=root")
        install_log = self.base_dir / "install.log"
        with open(install_log, "wb") as out:
            res = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.base_dir,
                timeout=120,
                check=False,
            )
        if res.returncode != 0:
            raise DevStackError(
                f"{_INSTALL_DB} failed (exit {res.returncode}) in {self.datadir}; "
                f"last lines of {install_log}:\n{_tail(install_log)}"
            )

    def _wait_ready(self, proc: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + self.startup_timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise DevStackError(
                    f"mariadbd exited with code {proc.returncode} during startup; last lines of "
                    f"{self.log_path}:\n{_tail(self.log_path)}"
                )
            if os.path.exists(self.socket):
                try:
                    # Fresh datadir: root has no password yet.
                    conn = pymysql.connect(unix_socket=self.socket, user="root", connect_timeout=2)
                except pymysql.err.MySQLError as exc:
                    last_error = exc
                else:
                    conn.close()
                    return
            time.sleep(0.05)
        raise DevStackError(
            f"mariadbd did not answer on {self.socket} within {self.startup_timeout:.0f} s "
            f"(last error: {last_error}); last lines of {self.log_path}:\n{_tail(self.log_path)}"
        )

    def _setup_users(self) -> None:
        conn = pymysql.connect(unix_socket=self.socket, user="root", autocommit=True, connect_timeout=5)
        try:
            with conn.cursor() as cur:
                # Keep accounts (and password hashes) out of the binlog.
                cur.execute("SET SESSION sql_log_bin = 0")
                cur.execute("SELECT user, host FROM mysql.user WHERE user = 'root'")
                for _, host in cur.fetchall():
                    if host in ("localhost", "127.0.0.1", "::1"):
                        cur.execute("ALTER USER 'root'@%s IDENTIFIED BY %s", (host, self.root_password))
                    else:  # root@<hostname>: useless with --skip-name-resolve, and warns at every start
                        cur.execute("DROP USER 'root'@%s", (host,))
                for host in ("127.0.0.1", "localhost"):
                    cur.execute(
                        "CREATE OR REPLACE USER %s@%s IDENTIFIED BY %s", (self.user, host, self.password)
                    )
                    cur.execute(f"GRANT {self.grants} ON *.* TO %s@%s", (self.user, host))
                cur.execute(f"CREATE DATABASE IF NOT EXISTS `{self.database}`")
        finally:
            conn.close()

    def start(self) -> Self:
        """Install a datadir, start ``mariadbd``, wait until it answers and create users; idempotent."""
        if self.running:
            return self
        t0 = time.monotonic()
        self._base_dir = _make_base_dir(self._parent_dir, "mariadb")
        try:
            self._install()
            attempts = 1 if self._requested_port is not None else 3
            for attempt in range(1, attempts + 1):
                port = self._requested_port or free_port(self.host)
                self._proc = self._spawn(self._server_args(port), self.base_dir / "mariadbd.out")
                try:
                    self._wait_ready(self._proc)
                except DevStackError as exc:
                    self._stop_process(timeout=10.0)
                    if attempt < attempts and "already in use" in str(exc):
                        log.info("mariadb port %d was taken meanwhile; retrying on another port", port)
                        continue
                    raise
                self._port = port
                break
            self._setup_users()
        except BaseException:
            self.stop()
            raise
        log.info(
            "mariadb started on %s:%d (pid %d, dir %s) in %.1f s",
            self.host,
            self.port,
            self.pid,
            self.base_dir,
            time.monotonic() - t0,
        )
        return self

    def shutdown(self, timeout: float = 30.0) -> None:
        """Stop ``mariadbd`` cleanly (SIGTERM, SIGKILL after ``timeout``) but keep its datadir and port, so
        ``start_again()`` brings the same server back (a restart is ``shutdown()`` + ``start_again()``)."""
        if self._port is None:
            raise DevStackError("mariadb is not started")
        self._stop_process(timeout)

    def kill(self) -> None:
        """Crash ``mariadbd`` (SIGKILL, no shutdown), keeping its datadir and port for ``start_again()``."""
        proc = self._proc
        if proc is None or self._port is None:
            raise DevStackError("mariadb is not running")
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        self._proc = None

    def start_again(self) -> Self:
        """Start ``mariadbd`` again on the same datadir, socket and port after ``shutdown()``/``kill()`` and wait
        until root (password set by ``start()``) can connect."""
        if self._port is None or self._base_dir is None:
            raise DevStackError("mariadb was never started: use start()")
        if self.running:
            return self
        t0 = time.monotonic()
        self._proc = proc = self._spawn(self._server_args(self._port), self.base_dir / "mariadbd.out")
        deadline = t0 + self.startup_timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                self._proc = None
                raise DevStackError(
                    f"mariadbd exited with code {proc.returncode} on restart; last lines of "
                    f"{self.log_path}:\n{_tail(self.log_path)}"
                )
            try:
                self.root_connect(connect_timeout=2).close()
            except pymysql.err.MySQLError as exc:
                last_error = exc
            else:
                log.info("mariadb restarted on %s:%d (pid %d) in %.1f s", self.host, self._port, proc.pid,
                         time.monotonic() - t0)
                return self
            time.sleep(0.05)
        raise DevStackError(
            f"mariadbd did not answer on {self.socket} within {self.startup_timeout:.0f} s after a restart "
            f"(last error: {last_error}); last lines of {self.log_path}:\n{_tail(self.log_path)}"
        )

    def restart(self, *, crash: bool = False, down_seconds: float = 0.0) -> Self:
        """Stop (cleanly, or SIGKILL when ``crash``) and start the same server again: same datadir,
        binlog, users and port; ``down_seconds`` is how long it stays down in between."""
        if crash:
            self.kill()
        else:
            self.shutdown()
        if down_seconds:
            time.sleep(down_seconds)
        return self.start_again()

    def state(self) -> dict[str, Any]:
        """What ``dev_up`` records (contains passwords: the state file is mode 0600)."""
        return {
            "pid": self.pid,
            "host": self.host,
            "port": self.port,
            "socket": self.socket,
            "datadir": self.datadir,
            "base_dir": str(self.base_dir),
            "log": str(self.log_path),
            "user": self.user,
            "password": self.password,
            "root_user": self.root_user,
            "root_password": self.root_password,
            "database": self.database,
            "dsn": self.dsn,
            "cmd_markers": [Path(_MARIADBD).name, self.datadir],
        }
