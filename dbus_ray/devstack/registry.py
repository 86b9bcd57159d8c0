"""The dev stack's schema registry: Apicurio Registry (in-memory storage) serving the Confluent-compatible API
at ``/apis/ccompat/v6`` on a loopback port, for the Avro serializer's tests against a real registry.

``io.apicurio:apicurio-registry-app`` is a Quarkus application library, not a runnable jar: the project's own
``registry/pom.xml`` (beside this module) builds it into one with Quarkus' Maven plugin
(``mvn package``, about a minute and ~80 MB into ``~/.cache/dbus-ray/apicurio-registry-<version>/``,
``$XDG_CACHE_HOME`` honoured) on first use, or ahead of time by ``make registry`` (part of ``make install``).
The registry then runs as ``java -jar DIR/dbus-ray-dev-registry-1-runner.jar`` with ``DIR/lib/`` beside it.

Apicurio 2.0.2: its 3.x apps are compiled for Java 21 (the machines have Java 17), and from 2.1 on the app
needs ``apicurio-registry-schema-util-*`` artifacts that Maven Central here does not serve.
"""

from __future__ import annotations

import os
import time
import urllib.request
from functools import cache
from pathlib import Path
from typing import Any, Self

from dbus_ray.devstack.kafka import _java
from dbus_ray.devstack.maven import cache_dir, maven_cached, pom_property
from dbus_ray.devstack.process import DevStackError, _Component, _make_base_dir, _tail, free_port, log

#: The Maven project that builds the registry (its ``apicurio.version`` is the version the dev stack runs).
POM = Path(__file__).parent / "registry" / "pom.xml"
RUNNER = "dbus-ray-dev-registry-1-runner.jar"
#: The Confluent-compatible API's base path (the ``schema_registry`` URL is ``http://HOST:PORT`` + this).
CCOMPAT = "/apis/ccompat/v6"
_HINT = "run `make registry` (needs Java 17 and Maven: `make java`)"


@cache
def registry_version() -> str:
    """The Apicurio Registry version pinned by ``registry/pom.xml`` (``<apicurio.version>``)."""
    return pom_property(POM, "apicurio.version")


def registry_app_dir(version: str | None = None) -> Path:
    """Where the built registry of ``version`` is cached: ``~/.cache/dbus-ray/apicurio-registry-<version>/``."""
    return cache_dir(f"apicurio-registry-{version or registry_version()}")


def registry_app() -> Path:
    """The cached runnable registry, built with ``mvn`` from Maven Central's artifacts when missing."""
    return maven_cached(registry_app_dir(), f"Apicurio Registry {registry_version()}", POM,
                        ["package", "-Dregistry.build.dir={dir}"], _HINT, timeout=1200, produced=RUNNER)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


class SchemaRegistry(_Component):
    """Apicurio Registry (in-memory storage) on a free loopback port; ``url`` is its Confluent-compatible API
    (``http://127.0.0.1:PORT/apis/ccompat/v6``), ready once ``GET url/subjects`` answers."""

    name = "registry"
    host = "127.0.0.1"

    def __init__(self, *, heap: str = "384m", parent_dir: str | os.PathLike[str] | None = None,
                 startup_timeout: float = 120.0, detached: bool = False) -> None:
        super().__init__(parent_dir=parent_dir, startup_timeout=startup_timeout, detached=detached)
        self.heap = heap
        self.version = registry_version()
        self.start_seconds: float | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}{CCOMPAT}"

    @property
    def log_path(self) -> Path:
        return self.base_dir / "registry.log"

    def start(self) -> Self:
        """Build the app if needed, start the JVM and wait until ``/subjects`` answers; idempotent."""
        if self.running:
            return self
        t0 = time.monotonic()
        java, app = _java(), registry_app()
        self._base_dir = _make_base_dir(self._parent_dir, "registry")
        try:
            port = free_port(self.host)
            argv = [java, f"-Xmx{self.heap}", "-XX:+UseSerialGC", "-XX:+ExitOnOutOfMemoryError",
                    "-XX:TieredStopAtLevel=1", f"-Dquarkus.http.host={self.host}", f"-Dquarkus.http.port={port}",
                    "-Dquarkus.datasource.jdbc.initial-size=2", "-Dquarkus.datasource.jdbc.min-size=2",
                    "-jar", str(app / RUNNER)]
            self._proc = self._spawn(argv, self.log_path)
            deadline = time.monotonic() + self.startup_timeout
            subjects = f"http://{self.host}:{port}{CCOMPAT}/subjects"
            while not _answers(subjects):
                if self._proc.poll() is not None:
                    raise DevStackError(f"registry exited with code {self._proc.returncode} during startup; last "
                                        f"lines of {self.log_path}:\n{_tail(self.log_path)}")
                if time.monotonic() >= deadline:
                    raise DevStackError(f"registry on {self.host}:{port} did not answer {subjects} within "
                                        f"{self.startup_timeout:.0f} s; last lines of {self.log_path}:\n"
                                        f"{_tail(self.log_path)}")
                time.sleep(0.2)
            self._port = port
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - t0
        log.info("Apicurio Registry %s started on %s (pid %d) in %.1f s", self.version, self.url, self.pid,
                 self.start_seconds)
        return self

    def state(self) -> dict[str, Any]:
        return {"pid": self.pid, "url": self.url, "version": self.version, "kind": "Apicurio Registry",
                "base_dir": str(self.base_dir), "log": str(self.log_path)}
