"""Things the dev stack gets from Maven Central with the project's own poms: a version pinned in a pom, and a
cache directory under ``~/.cache/dbus-ray/`` that ``mvn`` fills once (the Kafka jars, the schema registry)."""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from dbus_ray.devstack.process import DevStackError, _remove_dir, log


def pom_property(pom: Path, name: str) -> str:
    """The value of ``<name>`` in the properties of ``pom``."""
    match = re.search(rf"<{re.escape(name)}>([^<]+)</{re.escape(name)}>", pom.read_text())
    if match is None:
        raise DevStackError(f"{pom}: no <{name}> property")
    return match.group(1).strip()


def cache_dir(name: str) -> Path:
    """``~/.cache/dbus-ray/<name>`` (``$XDG_CACHE_HOME`` when set)."""
    cache_home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache_home / "dbus-ray" / name


def maven_cached(target: Path, what: str, pom: Path, goals: list[str], hint: str, timeout: float,
                 produced: str | None = None) -> Path:
    """``target``, filled once by ``mvn -f pom <goals>`` when missing (``{dir}`` in a goal is the directory
    being filled; ``produced``: a file the build must leave there).

    Builds into a temp dir beside the cache and renames it into place, so concurrent callers never see half a
    cache; a lock file makes a second caller wait for the first one's build."""
    if (target / ".complete").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / ".complete").exists():
            return target
        mvn = shutil.which("mvn")
        if mvn is None:
            raise DevStackError(f"{what} is not in {target} and `mvn` is missing: {hint}")
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        t0 = time.monotonic()
        log.info("getting %s from Maven Central into %s", what, target)
        try:
            res = subprocess.run(
                [mvn, "-q", "-B", "-f", str(pom), *(g.format(dir=tmp) for g in goals)],
                stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout, check=False,
            )
            if res.returncode != 0 or (produced and not (tmp / produced).exists()):
                raise DevStackError(
                    f"mvn could not get {what} with {pom} (exit {res.returncode}):\n"
                    + "\n".join((res.stdout + res.stderr).splitlines()[-20:])
                )
            (tmp / ".complete").write_text(what + "\n")
            _remove_dir(target)  # an incomplete leftover
            os.rename(tmp, target)
        finally:
            _remove_dir(tmp)
        log.info("got %s in %.1f s", what, time.monotonic() - t0)
    return target
