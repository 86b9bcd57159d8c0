"""Session fixtures for integration tests: a private MariaDB and a Kafka-protocol broker.

Both are started lazily (only when a test asks for them), once per test session, and stopped
(process gone, temp dir removed) at the end of the session.  See ``dbus_ray.devstack``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dbus_ray.devstack import Broker, MariaDB


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
    """A Tansu broker (memory storage) on a free port: ``broker.bootstrap`` is ``127.0.0.1:PORT``.

    Shared by the whole session: use your own topic names.  Read with ``Consumer.assign()``, not
    ``subscribe()`` (group joins take ~20 s on Tansu); see the ``Broker`` docstring for its quirks.
    """
    server = Broker().start()
    try:
        yield server
    finally:
        server.stop()
