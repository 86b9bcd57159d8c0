"""Friction an operator met: a stopped pipeline submitted again says how to run it, `dbus dev status` fails
when the stack is down, a DSN password with `/` says to percent-encode, a failure of `dbus run` is printed
once (a real full disk), and `dbus run` of a finite mock source exits when its rows are delivered."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import ray
import yaml
from typer.testing import CliRunner

from dbus_ray.cli import app
from dbus_ray.config import ConfigError, parse_config
from tests.support.helpers import small_tmpfs, wait_for


def dbus_run(config: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`dbus run FILE` in its own process on the session's Ray."""
    return subprocess.run([sys.executable, "-m", "dbus_ray.cli", "run", str(config), "--address",
                           ray.get_runtime_context().gcs_address], capture_output=True, text=True, timeout=timeout)


def write_config(tmp_path: Path, name: str, source: dict[str, Any], out: Path) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "source": {"type": "mock", **source},
                                    "sinks": [{"name": "file", "type": "jsonl", "path": str(out)}],
                                    "data_dir": str(tmp_path / "data")}))
    return path


@pytest.mark.usefixtures("ray_session")
def test_run_of_a_finite_mock_source_exits_when_its_rows_are_delivered(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    done = dbus_run(write_config(tmp_path, "finite", {"rows": 3000, "keys": 100}, out))
    assert done.returncode == 0, done.stderr
    assert "state: stopped" in done.stdout and "rows_delivered: 3000" in done.stdout
    assert [json.loads(line)["pos"]["offset"] for line in out.read_text().splitlines()] == list(range(3000))


@pytest.mark.usefixtures("ray_session")
def test_run_prints_a_full_disk_once(tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    with small_tmpfs(disk, "128k"):
        done = dbus_run(write_config(tmp_path, "full", {"rows": 50_000, "keys": 100}, disk / "out.jsonl"))
    assert done.returncode == 1, done.stderr
    everything = done.stdout + done.stderr
    assert everything.count("No space left on device") == 1, everything
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: pipeline full failed: sink file (jsonl): ")
    assert f"cannot write {disk / 'out.jsonl'}: No space left on device" in last


def test_dsn_password_with_a_slash_says_to_percent_encode() -> None:
    raw = {"name": "x", "source": {"type": "mysql", "dsn": "mysql://dbus:s3/cr3t@db1:3306"},
           "sinks": [{"name": "n", "type": "null"}]}
    with pytest.raises(ConfigError) as error:
        parse_config(raw, "x.yaml", {})
    assert str(error.value) == ("x.yaml: source.dsn: bad DSN port: expected mysql://user:password@host:port "
                                "(the user or password holds '/': percent-encode it, '/' as %2F)")
    assert "s3" not in str(error.value) and "cr3t" not in str(error.value)
    raw["source"]["dsn"] = "mysql://dbus:s3%2Fcr3t@db1:3306"
    assert parse_config(raw, "x.yaml", {}).source.options.dsn.endswith("s3%2Fcr3t@db1:3306")


def test_dev_status_exits_3_when_the_stack_is_down(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import dbus_ray.cli as cli
    from dbus_ray.devstack import STATE_FILE, free_port

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(gone.stdout)  # a process that has exited: a crashed server
    state = {"version": 1, "started_at": 0,
             "mariadb": {"pid": pid, "host": "127.0.0.1", "port": free_port(), "dsn": "mysql://dbus:pw@127.0.0.1:1",
                         "datadir": str(tmp_path), "cmd_markers": ["mariadbd", str(tmp_path)]},
             "broker": {"pid": pid, "host": "127.0.0.1", "port": free_port(), "bootstrap": "127.0.0.1:1",
                        "cmd_markers": ["tansu"]}}
    (tmp_path / STATE_FILE).write_text(json.dumps(state))
    os.chmod(tmp_path / STATE_FILE, 0o600)
    monkeypatch.setattr(cli, "DEV_STATE", tmp_path)
    result = CliRunner().invoke(app, ["dev", "status"])
    assert result.exit_code == 3, result.output
    assert "mariadb  DOWN" in result.stdout and "broker   DOWN" in result.stdout
    assert result.stderr.strip() == ("error: dev stack: mariadb and broker DOWN: `dbus dev down` then "
                                     "`dbus dev up` starts it again")


@pytest.mark.usefixtures("ray_session")
def test_submit_of_a_stopped_pipeline_says_how_to_run_it(controller: Any, tmp_path: Path) -> None:
    path = write_config(tmp_path, "c-stopped", {"rows": None, "rate": 1000}, tmp_path / "out.jsonl")
    runner = CliRunner()
    assert runner.invoke(app, ["submit", str(path)]).exit_code == 0
    wait_for(lambda: ray.get(controller.get.remote("c-stopped"))["state"] == "running", what="running")
    assert runner.invoke(app, ["stop", "c-stopped", "--wait"]).exit_code == 0
    result = runner.invoke(app, ["submit", str(path)])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["pipeline c-stopped: submitted (version 1, state stopped)",
                                          "pipeline c-stopped is stopped: `dbus resume c-stopped` runs it"]
