"""A Ray worker process running a pipeline's modules does not load pandas (`dbus_ray.heap.without_pandas`,
called when a worker imports `dbus_ray`): checked in the worker's own `sys.modules` after it imported the
actors' modules and ran pyarrow's conversions of Python lists, as a reader and a writer do; while this
driver process, which is no worker, converts as before (pyarrow loads pandas there)."""

from __future__ import annotations

import sys

import pytest
import ray

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_session")]


@ray.remote(num_cpus=0)
def modules_after_a_pipelines_work() -> tuple[str, bool, bool]:
    import pyarrow as pa

    import dbus_ray.actors.fused  # noqa: F401 - the reader, router, batcher and writer modules
    import dbus_ray.actors.writer  # noqa: F401
    from dbus_ray.sinks.kafka import KafkaSink  # noqa: F401

    pa.array([1, None]), pa.array(["x"]), pa.table({"a": [b"x"]})
    loaded_by_pyarrow = "pandas" in sys.modules
    import pandas as pd  # still importable there

    return sys.argv[0], loaded_by_pyarrow, pa.array(pd.Series([1, 2])).to_pylist() == [1, 2]


def test_a_worker_running_the_pipeline_modules_has_no_pandas_loaded() -> None:
    entry, loaded, converts = ray.get(modules_after_a_pipelines_work.remote())
    assert entry.endswith("default_worker.py"), entry
    assert not loaded, "pyarrow loaded pandas in a Ray worker process that imported dbus_ray"
    assert converts


def test_the_driver_is_left_as_it_is() -> None:
    import pyarrow as pa

    pa.array([1, 2])
    assert "pandas" in sys.modules  # pyarrow's own behaviour, untouched outside the workers
