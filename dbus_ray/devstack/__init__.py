"""Private dev stack: a throwaway MariaDB (binlog on) and an Apache Kafka broker (KRaft, one JVM).

Used by the integration tests (session fixtures), by ``dbus demo``, the benchmarks and by
``dbus dev up|down|status``.  Nothing here ever touches a server somebody else started: every process
gets its own temp dir (``/tmp/dbus-dev-XXXX``), free TCP ports on 127.0.0.1 and, for MariaDB, its own
unix socket.  One module per component: ``process`` (child processes, ports, pids), ``mariadb``,
``kafka`` (the broker and its jars, fetched by ``pom.xml``), ``stack`` (both together) and ``state``
(the state file of the CLI); ``registry`` (Apicurio Registry, built by ``registry/pom.xml``) is started
by the Avro serializer's tests alone; ``debezium`` (Debezium's jars and JVM process) serves the Debezium
side-by-side test and the peer benchmark.

In-process use::

    with DevStack() as stack:
        conn = stack.mariadb.root_connect("dbus_test")
        producer = Producer({"bootstrap.servers": stack.broker.bootstrap})

Processes that outlive the caller (the CLI)::

    state = dev_up(Path("~/.dbus/dev").expanduser())
    dev_status(state_dir)   # -> dict | None
    dev_down(state_dir)     # -> bool
"""

from dbus_ray.devstack.kafka import Broker, kafka_libs, kafka_version
from dbus_ray.devstack.mariadb import MariaDB
from dbus_ray.devstack.process import DevStackError, free_port
from dbus_ray.devstack.stack import DevStack
from dbus_ray.devstack.state import STATE_FILE, dev_down, dev_status, dev_up, redacted

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
    "kafka_libs",
    "kafka_version",
    "redacted",
]
