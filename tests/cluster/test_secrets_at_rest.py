"""Submitted `${VAR}` values are not written in clear to the GCS's storage: a head whose GCS lives in a private
Redis (append-only file on disk, as `ray-cluster.yaml` runs it), a pipeline submitted through the controller with
a value only the submitter knows, running; then Redis's keys and values and its files on disk are searched for
that value. Runs in its own pytest process (it starts its own Ray cluster)."""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray

from dbus_ray.actors.controller import get_controller
from tests.support.helpers import wait_for
from tests.support.ray_cluster import start_cluster
from tests.support.redis import Redis


@pytest.fixture()
def redis_head() -> Iterator[Redis]:
    redis = Redis().start()
    os.environ["RAY_REDIS_ADDRESS"] = redis.address
    try:
        c = start_cluster(0, redis_password=redis.password)
        yield redis
        ray.shutdown()
        c.shutdown()
    finally:
        del os.environ["RAY_REDIS_ADDRESS"]
        redis.stop()


def redis_dump(redis: Redis) -> bytes:
    """Everything Redis holds (every key's DUMP), through its plain protocol, after a BGREWRITEAOF is done."""
    with socket.create_connection(("127.0.0.1", redis.port), timeout=10) as conn:
        out = conn.makefile("rb")

        def call(*args: str) -> object:
            conn.sendall(f"*{len(args)}\r\n".encode() + b"".join(
                f"${len(a.encode())}\r\n".encode() + a.encode() + b"\r\n" for a in args))
            return reply(out)

        call("AUTH", redis.password)
        keys = call("KEYS", "*")
        assert isinstance(keys, list) and keys, "Redis holds no keys: the GCS is not stored there"
        return b"\n".join(k + b"=" + (call("DUMP", k.decode("latin-1")) or b"") for k in keys)  # type: ignore[operator]


def reply(out: object) -> object:
    line = out.readline()  # type: ignore[attr-defined]
    kind, rest = line[:1], line[1:-2]
    if kind in (b"+", b"-", b":"):
        return rest
    if kind == b"$":
        n = int(rest)
        return None if n < 0 else out.read(n + 2)[:-2]  # type: ignore[attr-defined]
    if kind == b"*":
        return [reply(out) for _ in range(int(rest))]
    raise AssertionError(f"unexpected Redis reply {line!r}")


def test_submitted_secrets_are_not_in_the_gcs_storage(redis_head: Redis, tmp_path: Path) -> None:
    token = f"tok{secrets.token_hex(8)}"
    out = tmp_path / token
    out.mkdir()
    controller = get_controller()
    for placement in ("fused", "spread"):  # one actor, and reader, router, batcher and writer actors
        raw = {"name": f"at-rest-{placement}", "data_dir": str(tmp_path / "data"),
               "source": {"type": "mock", "rows": None, "rate": 500, "keys": 20},
               "sinks": [{"name": "file", "type": "jsonl", "path": f"${{AT_REST_DIR}}/{placement}.jsonl",
                          "fsync": False}],
               "flow": {"placement": placement}}
        ray.get(controller.submit.remote(raw, {"AT_REST_DIR": str(out)}))
    for placement in ("fused", "spread"):
        file = out / f"{placement}.jsonl"
        wait_for(lambda f=file: f.exists() and f.stat().st_size > 0, timeout=120,
                 what=f"{placement}: rows in the file the secret names")
    held = redis_dump(redis_head)
    files = b"".join(p.read_bytes() for p in redis_head.dir.rglob("*") if p.is_file())
    assert token.encode() not in held, "the submitted value is in the GCS's Redis"
    at = files.find(token.encode())
    assert at < 0, f"the submitted value is in Redis's files on disk: {files[max(0, at - 300):at + 100]!r}"
    for placement in ("fused", "spread"):
        ray.get(controller.remove.remote(f"at-rest-{placement}"))
    ray.kill(controller, no_restart=True)
