"""The mock pipeline end to end through real Ray actors: delivery, order, fan-out, back-pressure,
resume and failure. Every test of the pipeline contract runs in each placement (`flow.placement`): each
stage its own actor (`spread`), all stages in one actor (`fused`), all but the writers in one actor and each
writer in its own (`split`), and all stages as one object in a host actor running several pipelines
(`shared`)."""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import ray
from typer.testing import CliRunner

from dbus_ray.checkpoints import FileCheckpointStore
from dbus_ray.cli import app
from dbus_ray.config import parse_config
from dbus_ray.errors import DbusError
from dbus_ray.hosting import HostedReader, reader_handle
from dbus_ray.pipeline import NAMESPACE, Pipeline, run_pipeline
from tests.support.helpers import metric_samples, wait_for

pytestmark = pytest.mark.usefixtures("ray_session")

PLACEMENT = {"now": "spread"}  # the placement `config()` asks for, set per test by the fixture below


@pytest.fixture(autouse=True, params=["fused", "split", "spread", "shared"])
def placement(request: pytest.FixtureRequest) -> str:
    PLACEMENT["now"] = request.param
    return request.param


def config(tmp_path: Path, name: str, source: dict[str, Any], sinks: list[dict[str, Any]], **extra: Any):
    raw = {"name": name, "source": {"type": "mock", **source}, "sinks": sinks, "data_dir": str(tmp_path / "data")}
    raw.update(extra)
    raw["flow"] = {**raw.get("flow", {}), "placement": PLACEMENT["now"]}
    return parse_config(raw, f"{name}.yaml", {})


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def assert_each_row_once_in_key_order(rows: list[dict[str, Any]], total: int) -> None:
    offsets = [r["pos"]["offset"] for r in rows]
    assert len(offsets) == total
    assert sorted(offsets) == list(range(total)), "a row is missing or duplicated"
    per_key: dict[Any, list[int]] = defaultdict(list)
    for r in rows:
        per_key[(r["table"], r["key"]["id"])].append(r["pos"]["offset"])
    for key, seen in per_key.items():
        assert seen == sorted(seen), f"key {key} out of order"


def test_every_row_arrives_once_in_order(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    cfg = config(tmp_path, "e2e", {"rows": 12_000, "keys": 300},
                 [{"name": "file", "type": "jsonl", "path": str(out)}],
                 flow={"read_batch_rows": 1000, "sink_batch_rows": 2500, "max_rows_in_flight": 5000})
    final = run_pipeline(cfg, until_caught_up=True, interval=0.05)
    assert final["state"] == "stopped" and final["error"] is None
    assert final["rows_read"] == final["rows_delivered"] == 12_000
    rows = read_jsonl(out)
    assert_each_row_once_in_key_order(rows, 12_000)
    # the documented JSON form, and images that make sense for each op
    first = rows[0]
    assert set(first) == {"pipeline", "db", "table", "op", "key", "before", "after", "pos", "txid", "ts", "read_ts"}
    for r in rows:
        assert (r["before"] is None) == (r["op"] == "insert")
        assert (r["after"] is None) == (r["op"] == "delete")
    assert FileCheckpointStore(cfg.pipeline_dir).load()["source"] == {"next": 12_000}
    # actors are gone after the run
    assert not [a for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith("dbus:e2e:")]
    assert not [a for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith("dbus:host:")]


def test_filter_and_fan_out(tmp_path: Path) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    cfg = config(
        tmp_path, "fan", {"rows": 6000, "keys": 60, "tables": 3},
        [
            {"name": "a", "type": "jsonl", "path": str(a), "match": ["mock.items_0", "mock.items_1"]},
            {"name": "b", "type": "jsonl", "path": str(b), "match": ["mock.items_1"]},
            {"name": "all", "type": "null"},
        ],
        filters=[{"type": "select", "include": ["mock.*"], "exclude": ["mock.items_2"]}],
    )
    final = run_pipeline(cfg, until_caught_up=True, interval=0.05)
    assert final["rows_delivered"] == 6000
    rows_a, rows_b = read_jsonl(a), read_jsonl(b)
    assert {r["table"] for r in rows_a} == {"items_0", "items_1"}
    assert {r["table"] for r in rows_b} == {"items_1"}
    assert len(rows_a) == 4000 and len(rows_b) == 2000
    assert [r["pos"]["offset"] for r in rows_b] == sorted(r["pos"]["offset"] for r in rows_b)


def test_back_pressure_bounds_rows_in_flight(tmp_path: Path) -> None:
    bound = 4000
    cfg = config(tmp_path, "slow", {"rows": 1_000_000, "keys": 100},
                 [{"name": "slow", "type": "null", "delay_ms": 100}],
                 flow={"read_batch_rows": 500, "sink_batch_rows": 1000, "max_rows_in_flight": bound})
    seen: list[dict[str, Any]] = []
    final = run_pipeline(cfg, on_progress=seen.append, interval=0.02,
                         should_stop=lambda: len(seen) >= 20 and seen[-1]["rows_delivered"] >= 6000)
    for status in seen:
        assert status["rows_read"] - status["rows_delivered"] <= bound
    assert final["max_rows_in_flight"] <= bound
    # a 100 ms sink takes at most 1,000 rows a write: the reader was held back, far from its million rows
    assert final["rows_read"] <= seen[-1]["rows_delivered"] + bound
    assert final["rows_delivered"] == final["rows_read"]


def test_resume_after_stop_delivers_each_row_once(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    cfg = config(tmp_path, "resume", {"rows": 10_000, "keys": 250},
                 [{"name": "file", "type": "jsonl", "path": str(out)}],
                 flow={"read_batch_rows": 700, "max_rows_in_flight": 2800})
    first = run_pipeline(cfg, max_rows=4_300, interval=0.05)
    assert first["rows_delivered"] == 4_300
    assert len(read_jsonl(out)) == 4_300
    second = run_pipeline(cfg, until_caught_up=True, interval=0.05)
    assert second["rows_delivered"] == 5_700
    assert_each_row_once_in_key_order(read_jsonl(out), 10_000)


def test_stop_while_running_then_resume(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    cfg = config(tmp_path, "interrupt", {"rows": 30_000, "keys": 100, "rate": 10_000},
                 [{"name": "file", "type": "jsonl", "path": str(out)}],
                 flow={"read_batch_rows": 500, "max_rows_in_flight": 2000})
    stop = threading.Event()
    threading.Timer(1.0, stop.set).start()
    first = run_pipeline(cfg, should_stop=stop.is_set, interval=0.05)
    assert 0 < first["rows_delivered"] < 30_000
    run_pipeline(cfg, until_caught_up=True, interval=0.05)
    assert_each_row_once_in_key_order(read_jsonl(out), 30_000)


def test_sink_failure_fails_pipeline_and_keeps_checkpoint(tmp_path: Path) -> None:
    cfg = config(tmp_path, "full", {"rows": 5000},
                 [{"name": "disk", "type": "jsonl", "path": "/dev/full", "fsync": False}])
    final = run_pipeline(cfg, until_caught_up=True, interval=0.05)
    assert final["state"] == "failed"
    assert final["error"].startswith("sink disk (jsonl): [Errno 28] cannot write /dev/full: No space left on device")
    assert final["rows_delivered"] == 0
    assert FileCheckpointStore(cfg.pipeline_dir).load() is None


def test_sink_that_cannot_open_is_a_clear_error(tmp_path: Path) -> None:
    cfg = config(tmp_path, "noopen", {"rows": 10}, [{"name": "x", "type": "jsonl", "path": "/proc/nope/x.jsonl"}])
    with pytest.raises(DbusError, match=r"^pipeline noopen cannot start: .*'/proc/nope'"):
        Pipeline(cfg).start()
    assert not [a for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith("dbus:noopen:")]
    assert reader_handle("noopen") is None


def test_actors_are_named_and_a_second_run_is_refused(tmp_path: Path, placement: str) -> None:
    cfg = config(tmp_path, "named", {"rows": None, "rate": 100}, [{"name": "n", "type": "null"}])
    pipeline = Pipeline(cfg)
    pipeline.start()
    try:
        names = {a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                 if a["namespace"] == NAMESPACE and a["name"].startswith("dbus:named:")}
        stages = {"dbus:named:reader", "dbus:named:router", "dbus:named:batcher:n", "dbus:named:writer:n"}
        assert names == {"spread": stages, "fused": {"dbus:named:reader"}, "shared": set(),
                         "split": {"dbus:named:reader", "dbus:named:writer:n"}}[placement]
        if placement == "shared":  # in a host actor of its own process, which the stand-in of its reader reaches
            assert isinstance(reader_handle("named"), HostedReader)
            assert ray.get(reader_handle("named").identity.remote())["pipeline"] == "named"
            assert any(a["name"].startswith("dbus:host:") for a in ray.util.list_named_actors(all_namespaces=True))
        # every stage answers for itself either way
        wait_for(lambda: pipeline.stage_stats()["writer:n"]["rows"] > 0, what="rows through the writer")
        assert set(pipeline.stage_stats()) == {"router", "batcher:n", "writer:n"}
        with pytest.raises(DbusError, match="^pipeline named is already running"):
            Pipeline(cfg).start()
        if placement != "shared":  # as a restarted controller takes over running actors: its writers too
            attached = Pipeline.attach(cfg, pipeline.epoch)
            assert attached is not None

            def ids(handles: list) -> list[str]:
                return [h._actor_id.hex() for h in handles]
            assert ids(attached.actors) == ids(pipeline.actors)
            assert ids(attached.writers) == ids(pipeline.writers) and len(attached.writers) == (placement != "fused")
    finally:
        pipeline.stop()


def test_cli_run_until_caught_up(tmp_path: Path) -> None:
    out = tmp_path / "cli.jsonl"
    path = tmp_path / "p.yaml"
    path.write_text(
        f"name: cli\nsource: {{type: mock, rows: 3000, keys: 50}}\n"
        f"sinks: [{{name: f, type: jsonl, path: '{out}'}}]\ndata_dir: '{tmp_path / 'data'}'\n"
        f"flow: {{placement: {PLACEMENT['now']}}}\n"
    )
    result = CliRunner().invoke(app, ["run", str(path), "--until-caught-up", "--output", "json"])
    assert result.exit_code == 0, result.output
    final = json.loads(result.stdout.strip().splitlines()[-1])
    assert final["rows_delivered"] == 3000 and final["state"] == "stopped"
    assert len(read_jsonl(out)) == 3000


def test_metrics_reach_rays_prometheus_endpoint(tmp_path: Path, placement: str) -> None:
    cfg = config(tmp_path, f"metered-{placement}", {"rows": None, "rate": 5000}, [{"name": "n", "type": "null"}])
    pipeline = Pipeline(cfg)
    pipeline.start()

    def scrape() -> dict[str, float] | None:
        pipeline.status()  # refreshes the lag and in-flight gauges
        found: dict[str, float] = {}
        for name, _, value in metric_samples("ray_dbus_", f"metered-{placement}"):
            found[name] = found.get(name, 0.0) + value
        return found if found.get("ray_dbus_rows_out_total", 0) > 0 and "ray_dbus_lag_seconds" in found else None

    try:
        found = wait_for(scrape, timeout=60, every=1, what="the pipeline's metrics at the Prometheus endpoint")
        delivered = pipeline.status()["rows_delivered"]
    finally:
        pipeline.stop()
    assert 0 < found["ray_dbus_rows_out_total"] <= delivered
    assert 0 < found["ray_dbus_rows_in_total"]
    assert "ray_dbus_batch_delivery_seconds_count" in found
    assert found["ray_dbus_lag_seconds"] >= 0
