"""The controller on a real (single-node) Ray: lifecycle, recovery after kill -9, restarts under a new
epoch, fencing of stale epochs, failures as states, server_id uniqueness, one controller."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import ray

from dbus_ray import fencing
from dbus_ray.actors.controller import get_controller
from dbus_ray.checkpoints import FileCheckpointStore
from dbus_ray.config import parse_config
from dbus_ray.hosting import reader_handle
from dbus_ray.pipeline import NAMESPACE, Pipeline, actor_name
from tests.support.helpers import wait_for

pytestmark = pytest.mark.usefixtures("ray_session")


def spec(tmp_path: Path, name: str, **source: Any) -> dict[str, Any]:
    return {"name": name, "project": "shop", "data_dir": str(tmp_path / "data"),
            "source": {"type": "mock", "rows": None, "rate": 2000, "keys": 50, **source},
            "sinks": [{"name": "file", "type": "jsonl", "path": str(tmp_path / f"{name}.jsonl"), "fsync": False}],
            "flow": {"read_batch_rows": 200, "max_rows_in_flight": 2000}}


def state_of(controller: Any, name: str) -> dict[str, Any]:
    return ray.get(controller.get.remote(name))


def reader_of(name: str) -> Any:
    return ray.get_actor(actor_name(name, "reader"), namespace=NAMESPACE)


def offsets(path: Path) -> list[int]:
    return [json.loads(line)["pos"]["offset"] for line in path.read_text().splitlines()]


def test_submit_runs_detached_named_actors(controller: Any, tmp_path: Path) -> None:
    ray.get(controller.submit.remote(spec(tmp_path, "c-run")))
    wait_for(lambda: state_of(controller, "c-run")["state"] == "running", what="running")
    identity = ray.get(reader_of("c-run").identity.remote())
    record = state_of(controller, "c-run")
    assert identity["epoch"] == record["epoch"] > 0
    assert identity["node"] == record["node"]
    assert [p["name"] for p in ray.get(controller.list.remote("shop"))] == ["c-run"]
    assert ray.get(controller.list.remote("other")) == []
    wait_for(lambda: state_of(controller, "c-run")["status"].get("rows_delivered", 0) > 500, what="rows")
    # submitting the same spec again changes nothing
    again = ray.get(controller.submit.remote(spec(tmp_path, "c-run")))
    assert again["version"] == 1 and again["epoch"] == record["epoch"]


def test_controller_kill_9_recovers_without_restarting_pipelines(controller: Any, tmp_path: Path) -> None:
    ray.get(controller.submit.remote(spec(tmp_path, "c-kill")))
    wait_for(lambda: state_of(controller, "c-kill")["state"] == "running", what="running")
    reader_id = reader_of("c-kill")._actor_id.hex()
    epoch = state_of(controller, "c-kill")["epoch"]
    pid = ray.get(controller.info.remote())["pid"]
    os.kill(pid, signal.SIGKILL)
    new_pid = wait_for(lambda: _pid(controller), what="controller back")
    assert new_pid != pid
    record = state_of(controller, "c-kill")
    assert record["epoch"] == epoch and record["state"] == "running"
    loops = ray.get(controller.info.remote())["loops"]
    wait_for(lambda: ray.get(controller.info.remote())["loops"] >= loops + 3, what="three reconcile loops")
    assert reader_of("c-kill")._actor_id.hex() == reader_id
    assert state_of(controller, "c-kill")["epoch"] == epoch


def _pid(controller: Any) -> int | None:
    try:
        return ray.get(controller.info.remote(), timeout=5)["pid"]
    except Exception:  # noqa: BLE001 - still restarting
        return None


def test_dead_reader_restarts_under_new_epoch_without_loss(controller: Any, tmp_path: Path) -> None:
    ray.get(controller.submit.remote(spec(tmp_path, "c-heal")))
    wait_for(lambda: state_of(controller, "c-heal")["status"].get("rows_delivered", 0) > 1000, what="rows")
    epoch = state_of(controller, "c-heal")["epoch"]
    ray.kill(reader_of("c-heal"), no_restart=True)
    wait_for(lambda: state_of(controller, "c-heal")["epoch"] > epoch
             and state_of(controller, "c-heal")["state"] == "running", what="restart")
    ray.get(controller.stop.remote("c-heal"))
    wait_for(lambda: state_of(controller, "c-heal")["state"] == "stopped", what="stopped")
    final = state_of(controller, "c-heal")["status"]
    seen = offsets(tmp_path / "c-heal.jsonl")
    delivered_until = final["checkpoint"]["source"]["next"]
    assert set(range(delivered_until)) <= set(seen), "a row was lost across the restart"
    dups = len(seen) - len(set(seen))
    print(f"duplicates after the reader was killed: {dups}")


def test_dead_writer_of_a_split_pipeline_restarts_it_without_loss(controller: Any, tmp_path: Path) -> None:
    """`flow.placement: split`: the writer is an actor of its own; its death stops the pipeline, which the
    controller restarts from the checkpoint: every row before it delivered."""
    ray.get(controller.submit.remote({**spec(tmp_path, "c-split"),
                                      "flow": {"read_batch_rows": 200, "max_rows_in_flight": 2000,
                                               "placement": "split"}}))
    wait_for(lambda: state_of(controller, "c-split")["status"].get("rows_delivered", 0) > 1000, what="rows")
    epoch = state_of(controller, "c-split")["epoch"]
    ray.kill(ray.get_actor(actor_name("c-split", "writer", "file"), namespace=NAMESPACE), no_restart=True)
    wait_for(lambda: state_of(controller, "c-split")["epoch"] > epoch
             and state_of(controller, "c-split")["state"] == "running"
             and state_of(controller, "c-split")["status"].get("rows_delivered", 0) > 0, what="restart")
    ray.get(controller.stop.remote("c-split"))
    wait_for(lambda: state_of(controller, "c-split")["state"] == "stopped", what="stopped")
    final = state_of(controller, "c-split")["status"]
    seen = offsets(tmp_path / "c-split.jsonl")
    assert set(range(final["checkpoint"]["source"]["next"])) <= set(seen), "a row was lost across the restart"


@pytest.mark.parametrize("placement", ["fused", "shared"])  # a shared host holds the epoch per pipeline
def test_stale_epoch_cannot_commit_a_checkpoint(tmp_path: Path, placement: str) -> None:
    cfg = parse_config({**spec(tmp_path, "c-fence"), "flow": {"placement": placement}}, "x", {})
    fencing.set_epoch("c-fence", 5)
    pipeline = Pipeline(cfg, epoch=5, detached=True)
    pipeline.start()
    try:
        wait_for(lambda: pipeline.status()["checkpoint"] is not None, what="first checkpoint")
        store = FileCheckpointStore(cfg.pipeline_dir)
        wait_for(lambda: store.load() is not None, what="checkpoint saved")
        assert store.load()["epoch"] == 5
        fencing.set_epoch("c-fence", 6)  # the controller reassigned the pipeline
        status = wait_for(lambda: (s := pipeline.status())["state"] == "failed" and s, what="refusal")
        assert status["error"] == "stale epoch 5 (the controller's is 6): checkpoint refused"
        frozen = store.load()
        time.sleep(0.5)  # nothing to wait for: no later checkpoint may appear in this while
        assert store.load() == frozen and frozen["epoch"] == 5
    finally:
        pipeline.kill()
        fencing.clear_epoch("c-fence")
    assert reader_handle("c-fence") is None


def test_pause_resume_update_remove(controller: Any, tmp_path: Path) -> None:
    ray.get(controller.submit.remote(spec(tmp_path, "c-life")))
    wait_for(lambda: state_of(controller, "c-life")["state"] == "running", what="running")
    ray.get(controller.pause.remote("c-life"))
    wait_for(lambda: state_of(controller, "c-life")["state"] == "paused", what="paused")
    with pytest.raises(ValueError):
        reader_of("c-life")
    ray.get(controller.resume.remote("c-life"))
    wait_for(lambda: state_of(controller, "c-life")["state"] == "running", what="resumed")
    epoch = state_of(controller, "c-life")["epoch"]
    changed = spec(tmp_path, "c-life", rate=3000)
    assert ray.get(controller.submit.remote(changed))["version"] == 2
    wait_for(lambda: state_of(controller, "c-life")["epoch"] > epoch
             and state_of(controller, "c-life")["state"] == "running", what="new version running")
    ray.get(controller.remove.remote("c-life"))
    assert ray.get(controller.list.remote()) == []
    assert not [a for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith("dbus:c-life:")]


def test_pipeline_that_cannot_start_is_failed_and_leaves_no_actor(controller: Any, tmp_path: Path) -> None:
    bad = spec(tmp_path, "c-bad")
    bad["sinks"][0]["path"] = "/proc/nope/x.jsonl"
    ray.get(controller.submit.remote(bad))
    record = wait_for(lambda: (r := state_of(controller, "c-bad"))["state"] == "failed" and r, what="failed")
    assert "No such file or directory" in record["error"] and record["attempts"] >= 1
    assert record["retry_at"] > time.time() - 1
    assert not [a for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith("dbus:c-bad:")]
    wait_for(lambda: state_of(controller, "c-bad")["attempts"] >= 2, timeout=20, what="a retry")


def test_server_ids_are_unique(controller: Any, tmp_path: Path) -> None:
    def mysql(name: str, server_id: Any = "auto") -> dict[str, Any]:
        s = spec(tmp_path, name)
        s["source"] = {"type": "mysql", "dsn": "mysql://u:p@127.0.0.1:1", "server_id": server_id}
        return s

    ray.get(controller.pause.remote(ray.get(controller.submit.remote(mysql("c-m1")))["name"]))
    ray.get(controller.pause.remote(ray.get(controller.submit.remote(mysql("c-m2")))["name"]))
    ids = {state_of(controller, n)["server_id"] for n in ("c-m1", "c-m2")}
    assert len(ids) == 2
    taken = state_of(controller, "c-m1")["server_id"]
    with pytest.raises(ray.exceptions.RayTaskError, match=f"server_id {taken} is already used by pipeline c-m1"):
        ray.get(controller.submit.remote(mysql("c-m3", taken)))


def test_concurrent_get_or_create_makes_one_controller(controller: Any) -> None:
    handles = [get_controller() for _ in range(4)]
    pids = {ray.get(h.info.remote())["pid"] for h in handles}
    assert len(pids) == 1
    assert len([a for a in ray.util.list_named_actors(all_namespaces=True) if a["name"] == "dbus:controller"]) == 1


def test_cli_submit_status_pause_remove(controller: Any, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from dbus_ray.cli import app

    path = tmp_path / "p.yaml"
    path.write_text(json.dumps(spec(tmp_path, "c-cli")))  # JSON is YAML
    runner = CliRunner()
    result = runner.invoke(app, ["submit", str(path)])
    assert result.exit_code == 0, result.output
    assert "pipeline c-cli: submitted (version 1" in result.output
    wait_for(lambda: state_of(controller, "c-cli")["state"] == "running", what="running")
    listed = json.loads(runner.invoke(app, ["list", "--project", "shop", "-o", "json"]).stdout)
    assert [r["name"] for r in listed] == ["c-cli"]
    table = runner.invoke(app, ["status", "c-cli"]).stdout
    assert table.splitlines()[0].split()[:4] == ["NAME", "PROJECT", "STATE", "DESIRED"]
    assert "c-cli" in table and "running" in table
    assert runner.invoke(app, ["pause", "c-cli"]).exit_code == 0
    wait_for(lambda: state_of(controller, "c-cli")["state"] == "paused", what="paused")
    missing = runner.invoke(app, ["status", "nope"])
    assert missing.exit_code == 2 and "error: no pipeline named 'nope'" in missing.output
    assert runner.invoke(app, ["remove", "c-cli"]).exit_code == 0
    assert json.loads(runner.invoke(app, ["list", "-o", "json"]).stdout) == []


def test_peek_checkpoint_show_and_set(controller: Any, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from dbus_ray.cli import app
    from dbus_ray.client import Bus

    bus = Bus(controller)
    ray.get(controller.submit.remote(spec(tmp_path, "c-peek")))
    wait_for(lambda: state_of(controller, "c-peek")["status"].get("rows_delivered", 0) > 300, what="rows")
    table = bus.peek("c-peek", 50)
    assert table.num_rows == 50 and table.column_names[:3] == ["db", "table", "op"]
    offsets_seen = table.column("offset").to_pylist()
    assert offsets_seen == sorted(offsets_seen) and len(set(offsets_seen)) == 50
    runner = CliRunner()
    lines = runner.invoke(app, ["peek", "c-peek", "-n", "5"]).stdout.strip().splitlines()
    assert len(lines) == 5 and json.loads(lines[0])["pipeline"] == "c-peek"

    refused = runner.invoke(app, ["checkpoint", "set", "c-peek", "10", "--yes"])
    assert refused.exit_code == 2 and "is running: pause or stop it" in refused.output
    ray.get(controller.pause.remote("c-peek"))
    wait_for(lambda: state_of(controller, "c-peek")["state"] == "paused", what="paused")
    shown = json.loads(runner.invoke(app, ["checkpoint", "show", "c-peek"]).stdout)
    assert shown["source"]["next"] >= 300
    bad = runner.invoke(app, ["checkpoint", "set", "c-peek", "abc", "--yes"])
    assert bad.exit_code == 2 and "bad mock position 'abc'" in bad.output
    assert runner.invoke(app, ["checkpoint", "set", "c-peek", "100"], input="n\n").exit_code == 2
    ok = runner.invoke(app, ["checkpoint", "set", "c-peek", "100", "--yes"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(runner.invoke(app, ["checkpoint", "show", "c-peek"]).stdout)["source"] == {"next": 100}
    ray.get(controller.resume.remote("c-peek"))
    wait_for(lambda: state_of(controller, "c-peek")["state"] == "running", what="resumed")
    # rows from the set position on arrive a second time in the file sink (they were delivered before)
    wait_for(lambda: offsets(tmp_path / "c-peek.jsonl").count(100) == 2, what="row 100 sent again")
    again = offsets(tmp_path / "c-peek.jsonl")
    assert again.count(99) == 1, "the resumed pipeline started before the checkpoint that was set"


def test_dag_text_and_svg(controller: Any, tmp_path: Path) -> None:
    import xml.etree.ElementTree as ET

    from typer.testing import CliRunner

    from dbus_ray.cli import app

    s = spec(tmp_path, "c-dag")
    s["sinks"].append({"name": "count", "type": "null", "match": ["mock.*"]})
    ray.get(controller.submit.remote(s))
    wait_for(lambda: state_of(controller, "c-dag")["status"].get("rows_delivered", 0) > 500, what="rows")
    picture = tmp_path / "dag.svg"
    result = CliRunner().invoke(app, ["dag", "c-dag", "--svg", str(picture)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "pipeline c-dag"
    assert lines[1].startswith("mock source -> reader (")
    assert "writer:file (jsonl, match *.*)" in lines[2] and "writer:count (null, match mock.*)" in lines[3]
    rates = [float(line.rsplit("  ", 1)[1].split()[0].replace(",", "")) for line in lines[2:4]]
    assert all(400 <= r <= 4000 for r in rates), rates  # the source writes 2,000 rows/s
    root = ET.fromstring(picture.read_text())
    texts = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert "writer:count" in texts and "reader" in texts


def test_cli_controller_shows_the_one_controller(controller: Any, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from dbus_ray.cli import app

    pid = ray.get(controller.info.remote())["pid"]
    result = CliRunner().invoke(app, ["controller"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"controller dbus:controller: pid {pid}, node ")
    assert result.stdout.endswith(", state GCS only\n"), result.stdout
    # the test session's Ray keeps its GCS in memory: one warning line, on stderr (with the actors' forwarded logs)
    warnings = [line for line in result.stderr.splitlines() if "GCS fault tolerance is off" in line]
    assert len(warnings) == 1 and warnings[0].startswith(
        "warning: GCS fault tolerance is off (the head's GCS keeps its data in memory)"), result.stderr
    # the durable state is chosen when the controller is created: another one is refused in one line
    # (stderr also carries the actors' log lines Ray forwards to this driver: the error is its one `error:` line)
    other = CliRunner().invoke(app, ["controller", "--state", f"file://{tmp_path}/state"])
    errors = [line for line in other.stderr.splitlines() if line.startswith("error:")]
    assert other.exit_code == 2 and len(errors) == 1 and errors[0].startswith(
        f"error: --state file://{tmp_path}/state: the running controller keeps its durable state in none"), other.output
    bad = CliRunner().invoke(app, ["controller", "--state", "s3://bucket/x"])
    errors = [line for line in bad.stderr.splitlines() if line.startswith("error:")]
    assert bad.exit_code == 2 and errors == ["error: --state: controller state 's3://bucket/x': not a state URL "
                                             "(use file:///path/to/dir or kafka://host:port/topic)"], bad.output


def test_gcs_checkpoints_refused_without_gcs_ft_or_durable_state(controller: Any, tmp_path: Path) -> None:
    with pytest.raises(ray.exceptions.RayTaskError) as err:
        ray.get(controller.submit.remote({**spec(tmp_path, "c-gcs"), "checkpoint": {"store": "gcs"}}))
    assert ("pipeline c-gcs: checkpoint store gcs refused: GCS fault tolerance is off and the controller has no "
            "durable state, so the checkpoint would die with the head node: use checkpoint store file or kafka, or "
            "start the head with RAY_REDIS_ADDRESS, or the controller with --state file:///shared/dir"
            ) in str(err.value)
    assert ray.get(controller.list.remote()) == []


def test_two_clis_at_once_make_one_controller() -> None:
    import subprocess
    import sys

    for a in ray.util.list_named_actors(all_namespaces=True):
        if a["name"] == "dbus:controller":
            ray.kill(ray.get_actor("dbus:controller", namespace="dbus"), no_restart=True)
    wait_for(lambda: not [a for a in ray.util.list_named_actors(all_namespaces=True)
                          if a["name"] == "dbus:controller"], what="no controller")
    address = ray.get_runtime_context().gcs_address
    cmd = [sys.executable, "-m", "dbus_ray.cli", "controller", "--address", address]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    pids = {line.split("pid ")[1].split(",")[0] for out in outs for line in out.splitlines() if "pid " in line}
    assert len(pids) == 1, outs
    handle = ray.get_actor("dbus:controller", namespace="dbus")
    assert str(ray.get(handle.info.remote())["pid"]) in pids
    ray.kill(handle, no_restart=True)


def test_submit_watch_reloads_a_changed_file(controller: Any, tmp_path: Path) -> None:
    import subprocess
    import sys

    path = tmp_path / "w.yaml"
    path.write_text(json.dumps(spec(tmp_path, "c-watch")))
    address = ray.get_runtime_context().gcs_address
    proc = subprocess.Popen([sys.executable, "-m", "dbus_ray.cli", "submit", str(path), "--watch",
                             "--address", address], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        wait_for(lambda: state_of(controller, "c-watch")["version"] == 1 if _known(controller, "c-watch") else None,
                 what="first version")
        wait_for(lambda: any(line.startswith("watching ") for line in lines), what="the CLI watching the file")
        path.write_text(json.dumps(spec(tmp_path, "c-watch", rate=3000)))
        wait_for(lambda: state_of(controller, "c-watch")["version"] == 2, what="reloaded version")
        wait_for(lambda: "pipeline c-watch: reloaded (version 2)\n" in lines, what="the CLI's reloaded line")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        reader.join(timeout=30)


def _known(controller: Any, name: str) -> bool:
    return name in {p["name"] for p in ray.get(controller.list.remote())}


def test_restarted_controller_keeps_supervising_pipelines_with_secrets(controller: Any, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """kill -9 of the controller, then kill -9 of a reader: the pipeline, whose config holds a `${VAR}` known only
    to the submitter and a `${VAR:-default}`, is restarted with the values it had, and rows flow again."""
    monkeypatch.delenv("CTRL_UNSET", raising=False)
    raw = spec(tmp_path, "c-secret")
    raw["sinks"][0]["path"] = "${CTRL_SECRET_DIR}/c-secret.jsonl"
    raw["data_dir"] = "${CTRL_UNSET:-" + str(tmp_path / "data") + "}"
    ray.get(controller.submit.remote(raw, {"CTRL_SECRET_DIR": str(tmp_path)}))
    wait_for(lambda: state_of(controller, "c-secret")["status"].get("rows_delivered", 0) > 200, what="rows")
    epoch = state_of(controller, "c-secret")["epoch"]
    pid = ray.get(controller.info.remote())["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: (_pid(controller) or pid) != pid, what="controller back")
    loops = ray.get(controller.info.remote())["loops"]
    wait_for(lambda: ray.get(controller.info.remote())["loops"] >= loops + 2, what="two reconcile loops")
    os.kill(ray.get(reader_of("c-secret").identity.remote())["pid"], signal.SIGKILL)
    wait_for(lambda: state_of(controller, "c-secret")["epoch"] > epoch
             and state_of(controller, "c-secret")["state"] == "running", what="restart under a new epoch")
    record = state_of(controller, "c-secret")
    assert record["error"] is None, record["error"]
    before = (tmp_path / "c-secret.jsonl").stat().st_size
    wait_for(lambda: (tmp_path / "c-secret.jsonl").stat().st_size > before, what="rows after the restart")


def test_a_lost_checkpoint_fails_the_pipeline_unless_asked_to_start_anew(controller: Any, tmp_path: Path) -> None:
    raw = spec(tmp_path, "c-lost")
    ray.get(controller.submit.remote(raw))
    wait_for(lambda: state_of(controller, "c-lost")["checkpointed"], what="a checkpoint saved")
    ray.get(controller.pause.remote("c-lost"))
    wait_for(lambda: state_of(controller, "c-lost")["state"] == "paused", what="paused")
    store = tmp_path / "data" / "c-lost" / "checkpoint.json"
    assert store.exists()
    store.unlink()  # the store lost it
    ray.get(controller.resume.remote("c-lost"))
    wait_for(lambda: state_of(controller, "c-lost")["state"] == "failed", what="failed")
    error = state_of(controller, "c-lost")["error"]
    assert "checkpoint store file" in error and "is empty, but the pipeline saved checkpoints before" in error, error
    assert "\n" not in error and not store.exists()
    ray.get(controller.submit.remote({**raw, "checkpoint": {"on_missing": "start"}}))
    wait_for(lambda: state_of(controller, "c-lost")["state"] == "running" and store.exists(), what="started anew")
