"""The state file of ``dbus dev up|status|down``: a dev stack whose processes outlive the CLI, recorded as
JSON (mode 0600: it holds the dev passwords) in a state dir, guarded by a lock file."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dbus_ray.devstack.process import (
    _DETACHED,
    DevStackError,
    _pid_matches,
    _port_answers,
    _remove_dir,
    _terminate,
    log,
)
from dbus_ray.devstack.stack import DevStack

#: Name of the JSON state file that ``dev_up`` writes into its state dir.
STATE_FILE = "devstack.json"
_LOCK_FILE = "devstack.lock"


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
    for key, timeout in (("broker", 30.0), ("mariadb", 30.0)):
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
