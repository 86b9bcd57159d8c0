"""Debezium itself, for the side-by-side test (tests/peer: its embedded engine) and the peer benchmark
(benchmarks/peer.py: Kafka Connect standalone): where `make peer-deps` put the jars (java/debezium/pom.xml,
$DBUS_DEBEZIUM_JARS), whether it can run here, and ``JavaProcess``, one JVM of it in its own session with
its log, stopped with SIGTERM (it commits its offsets) and SIGKILL after a grace period."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from dbus_ray.devstack.process import _tail, _terminate

JARS = Path(os.environ.get("DBUS_DEBEZIUM_JARS", Path.home() / ".cache" / "dbus-ray" / "debezium-3.5.0"))


def missing(what: str, *jars: str) -> str | None:
    """Why `what` cannot run here (None when it can): no java, or no jar matching one of `jars` in JARS."""
    if shutil.which("java") is None:
        return "no java on PATH (make peer-deps installs default-jdk-headless)"
    if not all(any(JARS.glob(pattern)) for pattern in jars):
        return f"no {what} jars in {JARS}: run `make peer-deps`"
    return None


class JavaProcess:
    """One JVM writing to `log`; `stop_grace` seconds between SIGTERM and SIGKILL (`name` in the log line of a
    SIGKILL)."""

    name = "java"
    stop_grace = 20.0

    def __init__(self, workdir: Path, log: Path) -> None:
        self.workdir = workdir
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def _spawn(self, argv: list[str]) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=self.workdir,
                                         start_new_session=True, stdin=subprocess.DEVNULL)

    def exited(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def tail(self, lines: int = 30) -> str:
        return _tail(self.log, lines)

    def stop(self) -> None:
        if self.proc is not None:
            _terminate(self.proc.pid, self.proc, name=self.name, timeout=self.stop_grace)
