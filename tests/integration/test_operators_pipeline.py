"""Each operator of the filter stage end to end through real Ray actors: the rows each sink receives are
exactly what `route()` computes in-process on the same source rows, in source order; filtered-out rows
still count as delivered and the checkpoint reaches the end."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import ray

from dbus_ray.actors.router import build_routes, route
from dbus_ray.checkpoints import FileCheckpointStore
from dbus_ray.config import parse_config
from dbus_ray.model import RowBatch
from dbus_ray.pipeline import Pipeline, run_pipeline
from dbus_ray.sources.mock import MockSource

pytestmark = pytest.mark.usefixtures("ray_session")

ROWS = 3000
SOURCE = {"type": "mock", "rows": ROWS, "keys": 90, "tables": 3}

OPERATORS: dict[str, list[dict[str, Any]]] = {
    "select": [{"type": "select", "include": ["mock.*"], "exclude": ["mock.items_2"]}],
    "filter": [{"type": "filter", "expr": "op in ('insert', 'update') and after.amount > 50000"}],
    "regex": [{"type": "regex", "column": "after.name", "pattern": "^item-1[0-9]-"}],
    "rename": [{"type": "rename", "tables": {"mock.items_0": "mock.zero"}, "columns": {"amount": "total"}}],
    "drop_columns": [{"type": "drop_columns", "columns": ["seq", "name"]}],
    "mask": [{"type": "mask", "columns": ["name"]}, {"type": "mask", "columns": ["amount"], "method": "blank"}],
    "route": [{"type": "route", "sinks": ["b"], "match": ["mock.items_1"], "expr": "op == 'delete'"}],
    "split": [{"type": "split", "by": "rows", "rows": 7}, {"type": "split"}],
}


def make_config(tmp_path: Path, name: str, filters: list[dict[str, Any]], **source: Any):
    raw = {
        "name": name,
        "source": {**SOURCE, **source},
        "filters": filters,
        "sinks": [{"name": "a", "type": "jsonl", "path": str(tmp_path / "a.jsonl")},
                  {"name": "b", "type": "jsonl", "path": str(tmp_path / "b.jsonl")}],
        "flow": {"read_batch_rows": 400, "sink_batch_rows": 1000, "max_rows_in_flight": 2000},
        "data_dir": str(tmp_path / "data"),
    }
    return parse_config(raw, f"{name}.yaml", {})


def comparable(row: dict[str, Any]) -> tuple:
    return row["db"], row["table"], row["op"], row["pos"]["offset"], json.dumps(row["key"]), \
        json.dumps(row["before"], sort_keys=True), json.dumps(row["after"], sort_keys=True)


def by_table(row: tuple) -> tuple:
    return row[0], row[1]


def expected_rows(cfg) -> list[list[tuple]]:
    source = MockSource(cfg.name, cfg.source.options)
    source.open(None)
    batch: RowBatch = source.poll(ROWS, 1)
    ops, sinks = build_routes(cfg)
    return [[comparable(c.to_dict()) for c in out.changes()] for out in route(batch, ops, sinks)]


@pytest.mark.parametrize("name", list(OPERATORS))
def test_operator_through_ray(tmp_path: Path, name: str) -> None:
    cfg = make_config(tmp_path, f"op-{name.replace('_', '-')}", OPERATORS[name])
    final = run_pipeline(cfg, until_caught_up=True, interval=0.05)
    assert final["state"] == "stopped" and final["error"] is None
    assert final["rows_read"] == final["rows_delivered"] == ROWS  # dropped rows count as delivered
    assert FileCheckpointStore(cfg.pipeline_dir).load()["source"] == {"next": ROWS}
    want_a, want_b = expected_rows(cfg)
    for sink, want in (("a", want_a), ("b", want_b)):
        path = tmp_path / f"{sink}.jsonl"
        got = [comparable(json.loads(line)) for line in path.read_text().splitlines()] if path.exists() else []
        # the mock source groups each batch's rows by table: compare each table's rows, in order
        assert sorted(got, key=by_table) == sorted(want, key=by_table), f"sink {sink}"
    if name == "select":
        assert len(want_a) == 2000
    elif name == "route":
        assert len(want_a) < len(want_b) == ROWS
    elif name not in ("split", "rename", "drop_columns", "mask"):
        assert 0 < len(want_a) < ROWS


def test_bad_expression_at_runtime_fails_the_pipeline_and_keeps_the_checkpoint(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, "op-bad", [{"type": "filter", "expr": "after.name > 3"}])
    final = run_pipeline(cfg, until_caught_up=True, interval=0.05)
    assert final["state"] == "failed"
    assert "cannot compare string with int" in final["error"]
    assert FileCheckpointStore(cfg.pipeline_dir).load() is None


def test_count_reaches_rays_prometheus_endpoint(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, "op-count", [{"type": "count", "name": "seen", "by": ["table", "op"]}],
                      rows=None, rate=3000)
    port = ray._private.worker.global_worker.node.metrics_export_port
    pipeline = Pipeline(cfg)
    pipeline.start()

    def scrape() -> dict[tuple[str, str], float]:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        found: dict[tuple[str, str], float] = {}
        for line in text.splitlines():
            if line.startswith("ray_dbus_operator_rows") and 'pipeline="op-count"' in line:
                labels = dict(part.split("=", 1) for part in line.split("{", 1)[1].split("}", 1)[0].split(","))
                assert labels['operator'] == '"seen"' and labels["db"] == '""'
                key = (labels["table"].strip('"'), labels["op"].strip('"'))
                found[key] = found.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
        return found

    try:
        deadline = time.monotonic() + 60
        found: dict[tuple[str, str], float] = {}
        while time.monotonic() < deadline:
            found = scrape()
            if {t for t, _ in found} == {"items_0", "items_1", "items_2"} and {o for _, o in found} >= {"insert"}:
                break
            time.sleep(1)
        delivered = pipeline.status()["rows_read"]
    finally:
        pipeline.stop()
    assert {t for t, _ in found} == {"items_0", "items_1", "items_2"}
    assert 0 < sum(found.values()) <= delivered
