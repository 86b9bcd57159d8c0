"""Each operator of the filter stage end to end through real Ray actors: the rows each sink receives are
exactly what the operators' documented behaviour gives on the mock source's documented rows (computed
here, independently of the router), in source order; filtered-out rows still count as delivered and the
checkpoint reaches the end."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest

from dbus_ray.checkpoints import FileCheckpointStore
from dbus_ray.config import parse_config
from dbus_ray.pipeline import Pipeline, run_pipeline
from tests.support.helpers import metric_samples, wait_for

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


def source_rows() -> list[dict[str, Any]]:
    """The mock source's rows as its documentation defines them: row `seq` changes key `seq % keys` of table
    `items_<key % tables>`; round `seq // keys` 0 inserts, then update, delete, insert ... in turn; an image
    is (id, seq, name `item-<key>-<seq>`, amount `seq * 7919 % 100000`), the before image the key's last."""
    keys, tables = SOURCE["keys"], SOURCE["tables"]

    def image(seq: int) -> dict[str, Any]:
        return {"id": seq % keys, "seq": seq, "name": f"item-{seq % keys}-{seq}", "amount": seq * 7919 % 100_000}

    rows = []
    for seq in range(ROWS):
        rnd = seq // keys
        op = "insert" if rnd == 0 else ("insert", "update", "delete")[rnd % 3]
        rows.append({"db": "mock", "table": f"items_{seq % keys % tables}", "op": op, "pos": {"offset": seq},
                     "key": {"id": seq % keys}, "before": None if op == "insert" else image(seq - keys),
                     "after": None if op == "delete" else image(seq)})
    return rows


def images(row: dict[str, Any], change: Any) -> dict[str, Any]:
    """`row` with `change(image)` applied to each image it has."""
    return {**row, **{side: change(dict(row[side])) for side in ("before", "after") if row[side] is not None}}


def rename(image: dict[str, Any]) -> dict[str, Any]:
    image["total"] = image.pop("amount")
    return image


def drop(image: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in image.items() if k not in ("seq", "name")}


def mask(image: dict[str, Any]) -> dict[str, Any]:
    return {**image, "name": hashlib.sha256(image["name"].encode()).hexdigest(), "amount": None}


def expected_rows(name: str) -> tuple[list[tuple], list[tuple]]:
    """The rows sinks `a` and `b` must get with the operators `OPERATORS[name]`, from the operators' documented
    behaviour applied to `source_rows()` here (not by the router's code)."""
    rows = source_rows()
    if name == "select":
        a = b = [r for r in rows if r["table"] != "items_2"]
    elif name == "filter":
        a = b = [r for r in rows if r["op"] in ("insert", "update") and r["after"]["amount"] > 50000]
    elif name == "regex":
        a = b = [r for r in rows if r["after"] is not None and re.search("^item-1[0-9]-", r["after"]["name"])]
    elif name == "rename":
        a = b = [images({**r, "table": "zero" if r["table"] == "items_0" else r["table"]}, rename) for r in rows]
    elif name == "drop_columns":
        a = b = [images(r, drop) for r in rows]
    elif name == "mask":
        a = b = [images(r, mask) for r in rows]
    elif name == "route":
        a, b = [r for r in rows if not (r["table"] == "items_1" and r["op"] == "delete")], rows
    else:
        assert name == "split"
        a = b = rows
    return [comparable(r) for r in a], [comparable(r) for r in b]


@pytest.mark.parametrize("name", list(OPERATORS))
def test_operator_through_ray(tmp_path: Path, name: str) -> None:
    cfg = make_config(tmp_path, f"op-{name.replace('_', '-')}", OPERATORS[name])
    final = run_pipeline(cfg, until_caught_up=True, interval=0.05)
    assert final["state"] == "stopped" and final["error"] is None
    assert final["rows_read"] == final["rows_delivered"] == ROWS  # dropped rows count as delivered
    assert FileCheckpointStore(cfg.pipeline_dir).load()["source"] == {"next": ROWS}
    want_a, want_b = expected_rows(name)
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
    pipeline = Pipeline(cfg)
    pipeline.start()

    def scrape() -> dict[tuple[str, str], float]:
        found: dict[tuple[str, str], float] = {}
        for _, labels, value in metric_samples("ray_dbus_operator_rows", "op-count"):
            assert labels["operator"] == "seen" and labels["db"] == ""
            key = (labels["table"], labels["op"])
            found[key] = found.get(key, 0.0) + value
        return found

    def counted() -> dict[tuple[str, str], float] | None:
        found = scrape()
        return found if {t for t, _ in found} == {"items_0", "items_1", "items_2"} \
            and {o for _, o in found} >= {"insert"} else None

    try:
        found = wait_for(counted, timeout=60, every=1, what="the operator's counts at the Prometheus endpoint")
        delivered = pipeline.status()["rows_read"]
    finally:
        pipeline.stop()
    assert {t for t, _ in found} == {"items_0", "items_1", "items_2"}
    assert 0 < sum(found.values()) <= delivered
