"""`dbus run` whose reader actor is killed (kill -9): the run ends with exit code 1 and one line naming the
pipeline and the reason, no traceback."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.integration.test_cli_signals import Run, endless_config, lines
from tests.support.helpers import actor_pid, wait_for

pytestmark = pytest.mark.integration


@pytest.mark.usefixtures("ray_session")
def test_dbus_run_whose_reader_dies_exits_1_with_one_line(tmp_path: Path) -> None:
    from dbus_ray.pipeline import actor_name

    run = Run(endless_config(tmp_path, "dead-reader"))
    wait_for(lambda: len(lines(tmp_path / "out.jsonl")) >= 100 or run.proc.poll() is not None,
             what="rows delivered", timeout=120)
    assert run.proc.poll() is None, run.stderr()
    os.kill(actor_pid(actor_name("dead-reader", "reader")), signal.SIGKILL)
    code, _, err = run.finish(timeout=120)
    assert code == 1, err
    assert "Traceback" not in err and "ActorDiedError" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: pipeline dead-reader stopped: its reader died ("), err
    assert err.rstrip().splitlines()[-1] == errors[0], err
