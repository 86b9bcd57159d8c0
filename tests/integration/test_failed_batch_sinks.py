"""A failed batch is never skipped, for every sink and both delivery modes: the writer of each built-in sink
(jsonl, parquet, stdout, kafka at-least-once and exactly-once, postgres, delta with and without a commit
interval) is handed batches 1, 2, 3 while its destination refuses batch 2 once and then works again. The writer
delivers and acknowledges nothing after batch 2; the destination holds batch 1's rows only (after the writer
closed, so nothing pending is committed at close); the checkpoint, whether the reader's (acknowledgements fed
to the real bookkeeping, `dbus_ray.acks`) or the one the sink commits with its rows (exactly-once stores), stays
at batch 1. A new writer, as after the pipeline's restart, then delivers batches 2 and 3: every row once.

The Writer runs in this process (its sink against the real broker, PostgreSQL and files); its reader is a
stand-in that records the calls and keeps the pipeline's real acknowledgement bookkeeping."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pytest
from deltalake import DeltaTable

from dbus_ray.acks import SubmittedBatches
from dbus_ray.actors.writer import Writer
from dbus_ray.checkpoints import open_store
from dbus_ray.config import parse_config
from dbus_ray.model import Position, RowBatch, RowChange, TableRows
from dbus_ray.parcel import Parcel
from tests.support.topics import read_topic

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_session")]

IMAGE = pa.struct([("id", pa.int64()), ("v", pa.string())])
BATCH_IDS = {1: [1, 2], 2: [3, 4], 3: [5, 6]}  # the ids each batch inserts


def position_after(seq: int) -> dict[str, Any]:
    return {"file": "b.000001", "offset": seq * 100 + 99}


def batch(pipeline: str, seq: int) -> RowBatch:
    changes = [RowChange(pipeline, "shop", "items", "insert", {"id": i}, None, {"id": i, "v": f"v{i}"},
                         Position("b.000001", seq * 100 + n), f"tx{seq}", 0.0, 0.0)
               for n, i in enumerate(BATCH_IDS[seq])]
    return RowBatch(pipeline, seq, [TableRows.from_changes(changes, IMAGE)], position_after(seq))


def parcel(b: RowBatch) -> Parcel:
    return Parcel(b.pipeline, b.seq, b.num_rows, frozenset({("shop", "items")}), b.checkpoint, b.ts, [])


class Remote:
    def __init__(self, fn: Callable[..., Any]) -> None:
        self.remote = fn


class Reader:
    """What the writer calls on its reader, recorded, and applied to the pipeline's real bookkeeping."""

    def __init__(self, sink: str) -> None:
        self.calls: list[tuple[str, int]] = []
        self.book = SubmittedBatches([sink])
        for seq in (1, 2, 3):
            self.book.submit(len(BATCH_IDS[seq]), position_after(seq), 0.0)
        self.ack = Remote(self._ack)
        self.sink_failed = Remote(self._failed)

    def _ack(self, sink: str, seq: int) -> None:
        self.calls.append(("ack", seq))
        self.book.ack(sink, seq, time.time())

    def _failed(self, sink: str, first_seq: int, reason: str) -> None:
        self.calls.append(("failed", first_seq))
        self.book.fail(sink, first_seq, reason)


class Case:
    def __init__(self, sink: dict[str, Any], delivered: Callable[[], list[int]], store: str = "file") -> None:
        self.sink, self.delivered, self.store = sink, delivered, store


def jsonl_ids(path: Path) -> list[int]:
    return [json.loads(line)["key"]["id"] for line in path.read_text().splitlines()] if path.exists() else []


def parquet_ids(path: Path) -> list[int]:
    files = sorted(path.rglob("*.parquet"))
    return [] if not files else [a["id"] for a in ds.dataset(files, format="parquet").to_table()
                                 .column("after").to_pylist()]


def kafka_ids(bootstrap: str, topic: str) -> list[int]:
    return [json.loads(m.key())["id"] for m in read_topic(bootstrap, topic, committed=True, missing_ok=True)]


def postgres_ids(postgres: Any, schema: str) -> list[int]:
    with postgres.connect() as conn:
        found = conn.execute("SELECT to_regclass(%s)", (f"{schema}.items",)).fetchone()[0]
        return [] if found is None else [r[0] for r in conn.execute(f"SELECT id FROM {schema}.items")]


def delta_ids(path: Path) -> list[int]:
    table = path / "shop" / "items"
    return [] if not (table / "_delta_log").exists() else \
        [r["id"] for r in DeltaTable(str(table)).to_pyarrow_table().to_pylist()]


def stdout_ids(capsys: pytest.CaptureFixture[str]) -> list[int]:
    out = capsys.readouterr().out
    stdout_ids.seen.extend(json.loads(line)["key"]["id"] for line in out.splitlines() if line.startswith("{"))
    return list(stdout_ids.seen)


stdout_ids.seen = []  # type: ignore[attr-defined]

SINKS = ["jsonl", "parquet", "stdout", "kafka-at-least-once", "kafka-exactly-once", "postgres", "delta",
         "delta-commit-interval"]


@pytest.fixture(params=SINKS)
def case(request: pytest.FixtureRequest, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Case:
    kind = request.param
    if kind == "jsonl":
        return Case({"type": "jsonl", "path": str(tmp_path / "out.jsonl"), "fsync": False},
                    lambda: jsonl_ids(tmp_path / "out.jsonl"))
    if kind == "parquet":
        return Case({"type": "parquet", "path": str(tmp_path / "pq")}, lambda: parquet_ids(tmp_path / "pq"))
    if kind == "stdout":
        stdout_ids.seen = []  # type: ignore[attr-defined]
        return Case({"type": "stdout"}, lambda: stdout_ids(capsys))
    if kind.startswith("kafka"):
        broker = request.getfixturevalue("broker")
        topic = f"fbs-{uuid.uuid4().hex[:8]}"
        eos = kind == "kafka-exactly-once"
        sink = {"type": "kafka", "bootstrap": broker.bootstrap, "topic": topic,
                "delivery": "exactly_once" if eos else "at_least_once"}
        return Case(sink, lambda: kafka_ids(broker.bootstrap, topic), "kafka" if eos else "file")
    if kind == "postgres":
        postgres = request.getfixturevalue("postgres")
        schema = f"fbs_{uuid.uuid4().hex[:8]}"
        return Case({"type": "postgres", "dsn": postgres.conninfo(), "schema": schema},
                    lambda: postgres_ids(postgres, schema), "postgres")
    interval = 30.0 if kind == "delta-commit-interval" else 0.0
    return Case({"type": "delta", "path": str(tmp_path / "lake"), "commit_interval_s": interval},
                lambda: delta_ids(tmp_path / "lake"), "delta")


def test_a_batch_the_sink_fails_is_never_passed(case: Case, tmp_path: Path) -> None:
    name = f"fbs-{uuid.uuid4().hex[:6]}"
    cfg = parse_config({"name": name, "source": {"type": "mock"}, "data_dir": str(tmp_path / "data"),
                        "sinks": [{"name": "out", **case.sink}], "checkpoint": {"store": case.store}})
    store = open_store(cfg.checkpoint.store, name, cfg.pipeline_dir, cfg)
    reader = Reader("out")
    writer = Writer(cfg, cfg.sinks[0], reader)
    real_write, refused = writer.sink.write, []

    def refuse_batch_2_once(b: RowBatch) -> None:
        if b.seq == 2 and not refused:
            refused.append(b.seq)
            raise OSError("destination refused the batch")
        real_write(b)

    writer.sink.write = refuse_batch_2_once  # type: ignore[method-assign]
    batches = {seq: batch(name, seq) for seq in (1, 2, 3)}
    assert writer.deliver(parcel(batches[1]), [batches[1]]) == 2
    for seq in (2, 3):
        with pytest.raises(RuntimeError, match="destination refused the batch"):
            writer.deliver(parcel(batches[seq]), [batches[seq]])
    writer.close()

    assert refused == [2]
    assert reader.calls == [("ack", 1), ("failed", 2)], "the writer acknowledged a batch after the failed one"
    assert writer.stats()["batches"] == 1
    assert sorted(case.delivered()) == BATCH_IDS[1], "a row of a batch at or after the failed one was delivered"
    # the reader's checkpoint (at-least-once) and the one the sink committed (exactly-once) stay at batch 1
    assert reader.book.checkpoint is not None and reader.book.checkpoint.source == batches[1].checkpoint
    if case.store != "file":
        saved = store.load()
        assert saved is not None and saved["source"] == batches[1].checkpoint, saved

    again = Writer(cfg, cfg.sinks[0], Reader("out"))  # the restarted pipeline resumes after batch 1
    for seq in (2, 3):
        assert again.deliver(parcel(batches[seq]), [batches[seq]]) == 2
    again.close()
    assert sorted(case.delivered()) == [i for seq in (1, 2, 3) for i in BATCH_IDS[seq]]
    if case.store != "file":
        assert store.load()["source"] == batches[3].checkpoint
