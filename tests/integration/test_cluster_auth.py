"""Closed by default: the head command of `ray-cluster.yaml`, run here on free ports, starts a cluster with
Ray token authentication: a driver without the token is refused, the dashboard's job API answers 401 without
it, and the `dbus` CLI sends the token it finds in RAY_AUTH_TOKEN (Ray itself sends it to an explicit address
only under RAY_AUTH_MODE=token). The cluster's processes are stopped by pid at the end.

The head keeps its GCS in Redis as the file says (GCS fault tolerance): a private `redis-server` on loopback
stands in for the file's, with its password in the private home's `~/.ray/redis_password`."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import yaml

from dbus_ray.devstack import free_port
from tests.support.redis import Redis

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def cluster_file() -> dict:
    return yaml.safe_load((ROOT / "ray-cluster.yaml").read_text())


def test_ray_cluster_yaml_is_closed_by_default() -> None:
    spec = cluster_file()
    starts = [c for c in spec["head_start_ray_commands"] + spec["worker_start_ray_commands"] if "ray start" in c]
    assert len(starts) == 2 and all("RAY_AUTH_MODE=token ray start" in c for c in starts)
    head = next(c for c in starts if "--head" in c)
    assert "--dashboard-host=127.0.0.1" in head and "0.0.0.0" not in yaml.safe_dump(spec)
    assert any("RAY_AUTH_MODE=token dbus controller" in c for c in spec["head_start_ray_commands"])
    assert spec["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    # GCS fault tolerance: the GCS in an external Redis; every node waits for a restarted GCS
    assert "RAY_REDIS_ADDRESS=" in head and '--redis-password="$(cat ~/.ray/redis_password)"' in head
    assert all("RAY_gcs_rpc_server_reconnect_timeout_s=" in c for c in starts)


def stop_processes_under(directory: str) -> None:
    """Terminate (then kill) every process whose command line names `directory`, and their children."""
    me = {os.getpid(), *(p.pid for p in psutil.Process().parents())}
    found: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if proc.pid not in me and any(directory in arg for arg in proc.info["cmdline"] or []):
                found[proc.pid] = proc
                found.update({c.pid: c for c in proc.children(recursive=True)})
        except psutil.Error:
            pass
    for proc in found.values():
        try:
            proc.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(list(found.values()), timeout=15)
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            pass


class Head:
    def __init__(self, gcs: str, dashboard: str, token: str, env: dict[str, str]) -> None:
        self.gcs, self.dashboard, self.token, self.env = gcs, dashboard, token, env


@pytest.fixture(scope="module")
def token_head() -> Iterator[Head]:
    """The head command of ray-cluster.yaml (auto-scaling config and ulimit left out, free ports, a private
    temp dir and home), with a fresh token in RAY_AUTH_TOKEN."""
    temp = tempfile.mkdtemp(prefix="rauth", dir="/tmp")  # short: Ray's socket paths max out at 107 bytes
    home = Path(temp) / "home"
    home.mkdir()
    token = secrets.token_hex(32)
    redis = Redis().start()
    (home / ".ray").mkdir()
    (home / ".ray" / "redis_password").write_text(redis.password)
    port, dash = free_port(), free_port()
    command = next(c for c in cluster_file()["head_start_ray_commands"] if "ray start --head" in c)
    command = command.replace("ulimit -n 65536; ", "").replace("--port=6379", f"--port={port}")
    command = re.sub(r"RAY_REDIS_ADDRESS=\S+", f"RAY_REDIS_ADDRESS={redis.address}", command)
    command = re.sub(r"--autoscaling-config=\S+", "", command)
    command += (f" --dashboard-port={dash} --dashboard-agent-listen-port={free_port()}"
                f" --dashboard-agent-grpc-port={free_port()} --metrics-export-port={free_port()}"
                f" --runtime-env-agent-port={free_port()} --num-cpus=1 --object-store-memory=100000000"
                " --disable-usage-stats")
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    base.update(HOME=str(home), RAY_TMPDIR=temp, PATH=f"{BIN}:{base.get('PATH', '')}")
    started = subprocess.run(command, shell=True, env={**base, "RAY_AUTH_TOKEN": token}, capture_output=True,
                             text=True, timeout=180, cwd=temp)
    try:
        assert started.returncode == 0, started.stderr[-2000:]
        yield Head(f"127.0.0.1:{port}", f"http://127.0.0.1:{dash}", token, base)
    finally:
        stop_processes_under(temp)
        shutil.rmtree(temp, ignore_errors=True)
        redis.stop()


def http_status(url: str, token: str | None = None) -> int:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_a_driver_without_the_token_is_refused(token_head: Head) -> None:
    code = f"import ray; ray.init(address='{token_head.gcs}'); print('CONNECTED')"
    done = subprocess.run([sys.executable, "-c", code], env=token_head.env, capture_output=True, text=True,
                          timeout=180)
    assert done.returncode != 0 and "CONNECTED" not in done.stdout
    assert "Failed to connect to Ray cluster" in done.stderr


def test_the_dashboard_job_api_wants_the_token(token_head: Head) -> None:
    assert http_status(f"{token_head.dashboard}/api/jobs/") == 401
    assert http_status(f"{token_head.dashboard}/api/jobs/", token_head.token) == 200


def test_the_cli_sends_the_token(token_head: Head) -> None:
    env = {**token_head.env, "RAY_AUTH_TOKEN": token_head.token}  # RAY_AUTH_MODE not set: the CLI turns it on
    done = subprocess.run([str(BIN / "dbus"), "controller", "--address", token_head.gcs], env=env,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("controller dbus:controller: pid ")
    assert "GCS fault tolerance is off" not in done.stderr, done.stderr[-2000:]  # the head's GCS is on Redis
    listed = subprocess.run([str(BIN / "dbus"), "list", "--address", token_head.gcs], env=env,
                            capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0 and listed.stdout.strip() == "(none)", listed.stderr[-2000:]
