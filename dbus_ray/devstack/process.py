"""Child processes of the dev stack: free ports, pid checks that survive pid reuse, and ``_Component``,
one server process living in its own temp dir (``/tmp/dbus-dev-<kind>-XXXX``)."""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Self

log = logging.getLogger("dbus_ray.devstack")

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
        text = path.read_text(errors="backslashreplace")  # bytes not UTF-8 shown as \xNN, not altered
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
    return [os.fsdecode(part) for part in raw.split(b"\0") if part]  # as the markers (paths) are decoded


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
        self._port: int | None = None

    # -- shared properties
    @property
    def base_dir(self) -> Path:
        if self._base_dir is None:
            raise DevStackError(f"{self.name} is not started")
        return self._base_dir

    @property
    def port(self) -> int:
        """The port it listens on (chosen when it starts, unless given)."""
        if self._port is None:
            raise DevStackError(f"{self.name} is not started")
        return self._port

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

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the process (SIGTERM, SIGKILL after ``timeout``) and remove its temp dir."""
        _LIVE.discard(self)
        try:
            self._stop_process(timeout)
        finally:
            _remove_dir(self._base_dir)
            self._base_dir = None
            self._port = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
