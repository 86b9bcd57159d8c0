"""The broker holding a pipeline's `kafka` checkpoint store loses it (the checkpoint topic deleted): the pipeline,
which saved checkpoints before, fails with one line naming the store instead of starting from `source.start`,
unless `checkpoint.on_missing: start` (controller, broker and Ray for real)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
import ray
from confluent_kafka.admin import AdminClient

from tests.support.helpers import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_session")]


def test_a_lost_kafka_checkpoint_topic_fails_the_pipeline_unless_asked_to_start_anew(
    controller: Any, broker: Any, tmp_path: Path
) -> None:
    name = f"lost-k-{uuid.uuid4().hex[:6]}"
    topic, checkpoints = f"{name}-rows", f"{name}-checkpoints"
    raw = {"name": name, "data_dir": str(tmp_path / "data"),
           "source": {"type": "mock", "rows": None, "rate": 500, "keys": 20},
           "sinks": [{"name": "k", "type": "kafka", "bootstrap": broker.bootstrap, "topic": topic,
                      "delivery": "exactly_once", "checkpoint_topic": checkpoints}],
           "checkpoint": {"store": "kafka"}}

    def record() -> dict[str, Any]:
        return ray.get(controller.get.remote(name))

    ray.get(controller.submit.remote(raw))
    wait_for(lambda: record()["checkpointed"], timeout=120, what="a checkpoint saved")
    ray.get(controller.pause.remote(name))
    wait_for(lambda: record()["state"] == "paused", what="paused")
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    for future in admin.delete_topics([checkpoints]).values():  # the broker lost the store
        future.result(timeout=30)
    wait_for(lambda: checkpoints not in admin.list_topics(timeout=10).topics, what="the checkpoint topic gone")

    ray.get(controller.resume.remote(name))
    wait_for(lambda: record()["state"] == "failed", timeout=120, what="failed")
    error = record()["error"]
    assert f"checkpoint store kafka {broker.bootstrap} {checkpoints} key {name}" in error, error
    assert "is empty, but the pipeline saved checkpoints before" in error and "\n" not in error, error
    assert "checkpoint.on_missing: start" in error

    ray.get(controller.submit.remote({**raw, "checkpoint": {"store": "kafka", "on_missing": "start"}}))
    wait_for(lambda: record()["state"] == "running" and record()["error"] is None, timeout=120,
             what="started anew")
    ray.get(controller.remove.remote(name))
