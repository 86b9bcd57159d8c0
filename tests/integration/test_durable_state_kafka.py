"""The controller's durable state in a compacted Kafka topic (`--state kafka://host:port/topic`) on the session's
broker: what is written is read back by a new store (a new cluster's controller), deletes are tombstones, the
topic is created compacted, and a controller rebuilt on it (fake runtime, empty GCS) resumes its pipelines."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource

from dbus_ray.controller import Supervisor
from dbus_ray.devstack import Broker, free_port
from dbus_ray.storage.durable import KafkaKV, MirroredKV, open_state
from dbus_ray.storage.kv_store import MemoryKV
from tests.support.topics import read_topic
from tests.unit.test_supervisor import Clock, FakeRuntime, spec

pytestmark = pytest.mark.integration


def test_kafka_state_reads_back_what_was_written(broker: Broker) -> None:
    topic = f"state-{uuid.uuid4().hex[:8]}"
    url = f"kafka://{broker.bootstrap}/{topic}"
    kv = open_state(url)
    assert isinstance(kv, KafkaKV) and kv.describe() == url
    kv.put("controller:pipeline:a", b"1")
    kv.put("controller:pipeline:b", b"2")
    kv.put("controller:pipeline:a", b"3")
    kv.put("controller:pipeline:a", b"3")  # unchanged: not written again
    kv.delete("controller:pipeline:b")
    kv.delete("controller:pipeline:never")
    again = open_state(url)
    assert again.keys("controller:") == ["controller:pipeline:a"] and again.get("controller:pipeline:a") == b"3"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    described = admin.describe_configs([ConfigResource("topic", topic)])
    [entries] = [f.result(30) for f in described.values()]
    assert entries["cleanup.policy"].value == "compact"
    log = [(m.key(), m.value()) for m in read_topic(broker.bootstrap, topic)]
    assert log == [(b"controller:pipeline:a", b"1"), (b"controller:pipeline:b", b"2"), (b"controller:pipeline:a", b"3"),
                   (b"controller:pipeline:b", None)]


def test_unreachable_broker_is_a_one_line_error() -> None:
    port = free_port()
    with pytest.raises(RuntimeError) as err:
        KafkaKV(f"127.0.0.1:{port}", "state", timeout_s=3)
    assert str(err.value).startswith(f"controller state kafka://127.0.0.1:{port}/state: ")
    assert "\n" not in str(err.value)


def test_a_controller_rebuilt_on_the_kafka_state_resumes(broker: Broker) -> None:
    url = f"kafka://{broker.bootstrap}/state-{uuid.uuid4().hex[:8]}"
    clock = Clock()

    def controller() -> tuple[FakeRuntime, Supervisor]:
        runtime = FakeRuntime({"n1": 1})
        return runtime, Supervisor(MirroredKV(MemoryKV(), open_state(url)), runtime, "sticky", clock)

    runtime, sup = controller()
    sup.submit(spec("k1"))
    sup.submit(spec("k2"))
    sup.set_desired("k2", "stopped")
    sup.reconcile()
    epoch: Any = sup.get("k1")["epoch"]
    runtime2, sup2 = controller()
    assert {p["name"]: p["desired"] for p in sup2.list()} == {"k1": "running", "k2": "stopped"}
    sup2.reconcile()
    assert sorted(runtime2.live) == ["k1"] and sup2.get("k1")["epoch"] > epoch
