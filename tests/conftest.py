"""Fixtures shared by every test, each started on first use and once per session: one local Ray, a
private MariaDB, an Apache Kafka broker and a PostgreSQL (see `dbus_ray.devstack`)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

from dbus_ray.devstack import Broker, MariaDB

os.environ.setdefault("RAY_AUTH_MODE", "disabled")


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    """A local Ray (2 CPUs, no dashboard) for the whole session; pipeline actors need no CPU."""
    import ray

    if not ray.is_initialized():
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            namespace="dbus",
            _temp_dir=tempfile.mkdtemp(prefix="ray", dir="/tmp"),
            object_store_memory=200 * 1024**2,
        )
    yield


@pytest.fixture(scope="session")
def mariadb() -> Iterator[MariaDB]:
    """A private MariaDB 10.11 with ROW binlog (``log_bin``, FULL row image and metadata), on a free port.

    Users: ``mariadb.user``/``mariadb.password`` (replication grants) and root (``root_connect()``);
    the database ``dbus_test`` exists.  Shared by the whole session: use your own table names.
    """
    server = MariaDB().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def broker() -> Iterator[Broker]:
    """An Apache Kafka broker (KRaft, one node) on a free port: ``broker.bootstrap`` is ``127.0.0.1:PORT``.

    Started once per session (a JVM start takes seconds): use your own topic names.  Auto-created topics
    get one partition; create a topic explicitly when the partition count or its configs matter.
    """
    server = Broker().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[Any]:
    """A private PostgreSQL (Debian's initdb + postgres, run as user postgres when we are root) on 127.0.0.1 and
    a free port, trust authentication: ``postgres.conninfo()`` is the postgres sink's `dsn`, ``connect()`` a
    superuser connection to database ``dbus_test``. Shared by the whole session: use your own schema names."""
    from dbus_ray.devstack.postgres import PostgreSQL

    server = PostgreSQL().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture()
def root(mariadb: MariaDB) -> Iterator[Any]:
    """A root connection to the session's MariaDB, database `dbus_test`, time zone UTC."""
    conn = mariadb.root_connect("dbus_test")
    with conn.cursor() as cur:
        cur.execute("SET time_zone = '+00:00'")
    yield conn
    conn.close()


@pytest.fixture
def controller(ray_session: None) -> Iterator[Any]:
    """The cluster's controller for one test; its pipelines are removed and it is killed afterwards."""
    import ray

    from dbus_ray.actors.controller import get_controller
    from tests.support.helpers import wait_for

    handle = get_controller()
    ray.get(handle.info.remote())
    yield handle
    for p in ray.get(handle.list.remote()):
        ray.get(handle.remove.remote(p["name"]))
    ray.kill(handle, no_restart=True)
    wait_for(lambda: not [a for a in ray.util.list_named_actors(all_namespaces=True)
                          if a["name"] == "dbus:controller"], what="controller gone")


@pytest.fixture(scope="module")
def compressed() -> Iterator[MariaDB]:
    """A private MariaDB that compresses every binlog event of 10 bytes or more (`log_bin_compress`), one per
    test module that asks for it."""
    server = MariaDB(extra_args=["--log-bin-compress=ON", "--log-bin-compress-min-len=10"]).start()
    try:
        yield server
    finally:
        server.stop()
