"""The CLI never hangs: with no address and the head gone (Ray's cluster file left behind by a crashed
`ray start`), `dbus submit` says so in one line with exit code 3 within seconds; stop / pause / resume
answer at once and `--wait` waits for the state; `dbus run` in a process already connected to Ray uses that
Ray, whatever the cluster file says."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import ray

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_submit_after_the_head_crashed_fails_fast_in_one_line(tmp_path: Path) -> None:
    ray_tmp = tmp_path / "raytmp"
    (ray_tmp / "ray").mkdir(parents=True)
    dead = f"127.0.0.1:{free_port()}"  # what a crashed head leaves: its GCS address, nothing listening
    cluster_file = ray_tmp / "ray" / "ray_current_cluster"
    cluster_file.write_text(dead)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_TMPDIR=str(ray_tmp), DBUS_OUT=str(tmp_path / "out.jsonl"), DBUS_DATA=str(tmp_path / "data"))
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "dbus_ray.cli", "submit", str(ROOT / "configs/mock-jsonl.yaml")],
                          env=env, capture_output=True, text=True, timeout=30)
    took = time.monotonic() - started
    assert done.returncode == 3, done.stderr
    assert took < 10, f"took {took:.1f}s"
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"error: no Ray cluster at {dead} ")
    assert str(cluster_file) in lines[0] and "ray start --head" in lines[0]


@pytest.mark.usefixtures("ray_session")
def test_run_in_a_process_already_connected_to_ray_ignores_a_stale_cluster_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A notebook or test that called `ray.init` runs pipelines on that Ray, whatever a crashed head left in
    the cluster file."""
    from typer.testing import CliRunner

    from dbus_ray.cli import app

    (tmp_path / "raytmp" / "ray").mkdir(parents=True)
    (tmp_path / "raytmp" / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{free_port()}")
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path / "raytmp"))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("DBUS_OUT", str(tmp_path / "out.jsonl"))
    monkeypatch.setenv("DBUS_DATA", str(tmp_path / "data"))
    result = CliRunner().invoke(app, ["run", str(ROOT / "configs/mock-jsonl.yaml"), "--until-caught-up"])
    assert result.exit_code == 0, result.output
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 20000  # the file's `rows`


@pytest.mark.usefixtures("ray_session")
def test_stop_answers_at_once_and_wait_waits(controller: Any, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from dbus_ray.cli import app
    from tests.support.helpers import wait_for

    spec = {"name": "c-wait", "data_dir": str(tmp_path / "data"),
            "source": {"type": "mock", "rows": None, "rate": 2000, "keys": 50},
            "sinks": [{"name": "file", "type": "jsonl", "path": str(tmp_path / "out.jsonl"), "fsync": False}]}
    ray.get(controller.submit.remote(spec))
    wait_for(lambda: ray.get(controller.get.remote("c-wait"))["state"] == "running", what="running")
    runner = CliRunner()
    result = runner.invoke(app, ["stop", "c-wait", "--wait"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().endswith("pipeline c-wait: stopped")
    assert ray.get(controller.get.remote("c-wait"))["state"] == "stopped"
    result = runner.invoke(app, ["resume", "c-wait", "--wait"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().endswith("pipeline c-wait: running")
    for action, state in (("pause", "paused"), ("resume", "running"), ("stop", "stopped")):
        started = time.monotonic()  # without --wait: answered at once, the controller acts next
        result = runner.invoke(app, [action, "c-wait"])
        took = time.monotonic() - started
        assert result.exit_code == 0 and took < 2, (action, f"{took:.1f}s", result.output)
        assert result.stdout.startswith(f"pipeline c-wait: {action} requested"), result.output
        wait_for(lambda s=state: ray.get(controller.get.remote("c-wait"))["state"] == s, what=state)
        print(f"{action}: answered in {took:.2f}s")
