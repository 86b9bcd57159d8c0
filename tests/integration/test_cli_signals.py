"""`dbus run` in its own process, stopped by signals as systemd / `docker stop` / a user at a terminal do:
SIGTERM stops it like Ctrl-C (in-flight rows delivered, final checkpoint, exit 0) and a second Ctrl-C while
it stops changes nothing (no traceback, no crash). States are waited for (rows in the output file, the
stopping message), not slept for."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

from tests.support.helpers import wait_for


def endless_config(tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        "name": name,
        "source": {"type": "mock", "rows": None, "rate": 3000, "keys": 100},
        "sinks": [{"name": "file", "type": "jsonl", "path": str(tmp_path / "out.jsonl")}],
        "data_dir": str(tmp_path / "data"),
        "flow": {"placement": "spread"},  # the second Ctrl-C test freezes the writer's process alone
    }))
    return path


class Run:
    """`dbus run FILE --address <the session's Ray>` with its stdout and stderr collected as they come (each
    by its own thread: `communicate()` would read stderr too, racing the thread for its lines)."""

    def __init__(self, config: Path) -> None:
        import ray

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dbus_ray.cli", "run", str(config), "--address",
             ray.get_runtime_context().gcs_address],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.out: list[str] = []
        self.err: list[str] = []
        self.readers = [threading.Thread(target=lambda s=s, into=into: into.extend(iter(s.readline, "")), daemon=True)
                        for s, into in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))]
        for reader in self.readers:
            reader.start()

    def stderr(self) -> str:
        return "".join(self.err)

    def finish(self, timeout: float = 120) -> tuple[int, str, str]:
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        for reader in self.readers:
            reader.join(10)
        return self.proc.returncode, "".join(self.out), self.stderr()


def lines(path: Path) -> list[dict]:
    """The complete lines of the output file: one being written while we read has no newline yet."""
    text = path.read_text() if path.exists() else ""
    return [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines()]


def assert_stopped_with_final_checkpoint(tmp_path: Path, name: str, code: int, out: str, err: str) -> None:
    assert code == 0, err
    assert "Traceback" not in err and "Segmentation" not in err, err
    assert "state: stopped" in out
    checkpoint = json.loads((tmp_path / "data" / name / "checkpoint.json").read_text())
    rows = lines(tmp_path / "out.jsonl")
    # the final checkpoint is after the last row delivered: every row in the file, none after it
    assert checkpoint["source"]["next"] == len(rows) > 0
    assert [r["pos"]["offset"] for r in rows] == list(range(len(rows)))


@pytest.mark.usefixtures("ray_session")
def test_sigterm_stops_dbus_run_with_a_final_checkpoint(tmp_path: Path) -> None:
    run = Run(endless_config(tmp_path, "sig-term"))
    wait_for(lambda: len(lines(tmp_path / "out.jsonl")) >= 500, timeout=120, what="rows in the output file")
    run.proc.send_signal(signal.SIGTERM)
    code, out, err = run.finish()
    assert "SIGTERM: stopping with a final checkpoint" in err
    assert_stopped_with_final_checkpoint(tmp_path, "sig-term", code, out, err)


@pytest.mark.usefixtures("ray_session")
def test_second_ctrl_c_while_stopping_does_not_crash(tmp_path: Path) -> None:
    from tests.support.helpers import actor_pid

    run = Run(endless_config(tmp_path, "sig-int"))
    wait_for(lambda: len(lines(tmp_path / "out.jsonl")) >= 500, timeout=120, what="rows in the output file")
    writer = actor_pid("dbus:sig-int:writer:file")
    os.kill(writer, signal.SIGSTOP)  # a slow sink: the stop waits for its in-flight rows
    try:
        run.proc.send_signal(signal.SIGINT)
        wait_for(lambda: "stopping" in run.stderr(), timeout=30, what="the stopping message")
        run.proc.send_signal(signal.SIGINT)  # the second Ctrl-C, while the stop waits for the sink
        wait_for(lambda: "already stopping" in run.stderr(), timeout=30, what="the second signal handled")
        assert run.proc.poll() is None
    finally:
        try:
            os.kill(writer, signal.SIGCONT)
        except ProcessLookupError:
            pass
    code, out, err = run.finish()
    assert_stopped_with_final_checkpoint(tmp_path, "sig-int", code, out, err)
