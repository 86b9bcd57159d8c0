"""`dbus_ray.heap.collector_paused`: the cyclic collector off inside, back as it was after, nested and from
several threads; and a writer hands its batch to the sink inside it. `dbus_ray.heap.trim`: at most one
`malloc_trim` per `TRIM_EVERY_S`, and one owed by a call too soon is made once that time is up.
`dbus_ray.heap.without_pandas`: pyarrow does not load pandas after it (seen in `sys.modules` of a fresh
interpreter), while an import of pandas and pyarrow's conversions to and from it still work; without it the
same conversions load pandas (so the check can fail)."""

from __future__ import annotations

import gc
import subprocess
import sys
import threading
import time

import pytest

from dbus_ray import heap
from dbus_ray.heap import collector_paused


@pytest.fixture(autouse=True)
def collector_on():
    gc.enable()
    yield
    gc.enable()


def test_off_inside_on_after():
    with collector_paused:
        assert not gc.isenabled()
    assert gc.isenabled()


def test_back_on_after_an_exception():
    with pytest.raises(ValueError), collector_paused:
        raise ValueError("sink failed")
    assert gc.isenabled()


def test_nested_stays_off_until_the_outer_block_ends():
    with collector_paused:
        with collector_paused:
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()


def test_left_off_when_it_was_off_before():
    gc.disable()
    with collector_paused:
        assert not gc.isenabled()
    assert not gc.isenabled()


def test_two_threads_overlapping_end_with_the_collector_on():
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    seen: list[bool] = []

    def first() -> None:
        with collector_paused:
            first_in.set()
            second_in.wait(5)
        first_out.set()

    def second() -> None:
        first_in.wait(5)
        with collector_paused:
            second_in.set()
            first_out.wait(5)
            seen.append(gc.isenabled())  # the first left, this one is still inside

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert seen == [False]
    assert gc.isenabled()


def test_a_writer_hands_the_batch_to_its_sink_with_the_collector_off(tmp_path):
    from dbus_ray.actors.writer import Writer
    from dbus_ray.config import parse_config
    from dbus_ray.model import RowBatch
    from dbus_ray.parcel import Parcel

    class Call:  # the writer's calls to its reader actor, recorded
        def __init__(self) -> None:
            self.calls: list[tuple] = []

        def remote(self, *args) -> None:
            self.calls.append(args)

    class Reader:
        ack, sink_failed = Call(), Call()

    cfg = parse_config({"name": "p", "source": {"type": "mock", "rows": 1},
                        "sinks": [{"name": "n", "type": "null"}], "data_dir": str(tmp_path)}, "test", {})
    reader = Reader()
    writer = Writer(cfg, cfg.sinks[0], reader)
    states: list[bool] = []
    writer.sink.write = lambda batch: states.append(gc.isenabled())
    batch = RowBatch("p", 1)
    writer.deliver(Parcel.put(batch, local=True), [batch])
    assert states == [False]
    assert gc.isenabled()
    assert reader.ack.calls == [("n", 1)]


def test_trim_at_most_once_per_period_and_the_owed_one_after(monkeypatch: pytest.MonkeyPatch) -> None:
    trims: list[float] = []
    monkeypatch.setattr(heap, "_TRIM", lambda pad: trims.append(time.monotonic()))
    monkeypatch.setattr(heap, "TRIM_EVERY_S", 0.3)
    monkeypatch.setattr(heap, "_last_trim", 0.0)
    start = time.monotonic()
    for _ in range(50):  # a burst of small batches
        heap.trim()
    assert len(trims) == 1  # the first one; the others are owed to one timer
    deadline = time.monotonic() + 5
    while len(trims) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(trims) == 2, "the trim owed by the burst was never made"
    assert trims[1] - trims[0] >= 0.29
    time.sleep(0.5)
    assert len(trims) == 2 and heap._timer is None  # nothing more owed
    assert time.monotonic() - start < 5


CONVERSIONS = """
import sys
import pyarrow as pa, pyarrow.compute as pc
pa.array([1, 2]); pa.array(["x", None]); pa.array([b"x"], pa.binary()); pa.table({"a": [1.5, None]})
pc.if_else(pa.array([True]), pa.array([1]), pa.array([2]))
print("pandas" in sys.modules)
import pandas as pd
assert pa.table({"a": [1]}).to_pandas().shape == (1, 1)
assert pa.array(pd.Series([1, 2])).type == pa.int64()
"""


def fresh(first: str) -> bool:
    """Whether pandas was loaded after pyarrow's conversions, in a fresh interpreter that runs `first`."""
    out = subprocess.run([sys.executable, "-c", first + CONVERSIONS], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip() == "True"


def test_without_pandas_pyarrow_does_not_load_it_and_an_import_still_gets_it():
    assert fresh("") is True  # pyarrow on its own loads pandas on its first conversion of a list
    assert fresh("from dbus_ray import heap; heap.without_pandas()\n") is False
