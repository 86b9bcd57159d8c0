"""A Ray worker process running a pipeline's modules does not load pandas (`dbus_ray.heap.without_pandas`,
called when a worker imports `dbus_ray`): checked in the worker's own `sys.modules` after it imported the
actors' modules and ran pyarrow's conversions of Python lists, as a reader and a writer do; while in this
driver process, which is no worker, pyarrow still recognises pandas' values."""

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
    """pyarrow in this process still knows pandas: it reads pandas' own missing value as null (in a list with
    `from_pandas=True`, in a nullable Series), which a process where `without_pandas` ran before pandas was
    loaded cannot (`dbus_ray.heap`)."""
    import pandas as pd
    import pyarrow as pa

    assert not sys.argv[0].endswith("default_worker.py")
    assert pa.array([1, pd.NA], from_pandas=True).to_pylist() == [1, None]
    assert pa.array(pd.Series([1, None], dtype="Int64")).to_pylist() == [1, None]
