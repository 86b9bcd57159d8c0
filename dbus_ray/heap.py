"""Keeping a process's heap close to what it holds. A batch's row objects and Arrow buffers are transient,
but allocators keep the peak of their heap mapped: glibc until `malloc_trim`, Arrow's default mimalloc
pool on its own schedule. The reader and the writer call `use_system_pool()` when they start (Arrow then
allocates with malloc) and `trim()` after each batch (at most once a second), so their RSS follows what they
hold instead of the largest batch ever seen (measured: the reader's anonymous memory 155 -> 119 MB in a
1M-row catch-up).

`collector_paused`: Python's cyclic garbage collector held off while a writer hands a batch to its sink. A
sink's per-row path (the Kafka sink's json and avro) builds a few dicts per row that live until their slice
is produced; they trigger collections that walk every tracked object of the process (Ray's and the
libraries' included), which cost the writer 1.6 us of its 3.8 us per row of serialization (measured with
Ray imported; 2.2 us with the collector held off). Row objects hold no reference cycles, so reference
counting frees them all the same; a cycle made during a batch waits for the next collection after it.

`without_pandas`: pyarrow loads pandas on its first conversion of a Python list (to recognise pandas
objects in it), ~30 MB of private memory in every process that does, and no stage of a pipeline hands it
pandas objects. A Ray worker process that imports `dbus_ray` calls it first thing (`dbus_ray/__init__.py`):
pyarrow's one probe then finds no pandas and pyarrow never loads it itself (measured: a split pipeline's two
processes 254 -> 198 MB PSS at start, peak during a 1M-row catch-up 390 -> 337 MB). Code that imports pandas
itself still gets it, and pyarrow's `to_pandas` works; but pyarrow there does not know pandas objects:
`pa.array` reads a pandas Series as a plain sequence of its values, so pandas' own missing value (`pd.NA`,
e.g. of a nullable `Int64` Series, or in a list with `from_pandas=True`) fails the conversion with
ArrowInvalid instead of becoming null."""

from __future__ import annotations

import ctypes
import gc
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pyarrow as pa


def _libc(name: str) -> Callable[..., int] | None:
    try:
        return getattr(ctypes.CDLL("libc.so.6"), name)
    except (OSError, AttributeError):  # no glibc
        return None


_TRIM = _libc("malloc_trim")
_MALLOPT = _libc("mallopt")
M_TRIM_THRESHOLD = -1  # mallopt's parameter number (malloc.h)
#: glibc hands the top of its heap back to the kernel on any `free` that leaves more than this free there
#: (128 KiB by default). A loop that allocates and frees a buffer per value (orjson, per row) then takes a
#: fresh page fault per call: measured 2.2 us per `orjson.dumps` of a short string, against 64 ns with the
#: threshold raised. The processes that call `use_system_pool` trim after each batch (`trim`) instead.
TRIM_THRESHOLD_BYTES = 64 << 20


def use_system_pool() -> None:
    """Arrow allocates with malloc in this process (so `trim` hands its freed buffers back too), and glibc
    keeps the top of its heap between two trims (`TRIM_THRESHOLD_BYTES`)."""
    if _TRIM is not None:
        pa.set_memory_pool(pa.system_memory_pool())
    if _MALLOPT is not None:
        _MALLOPT(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)


#: `trim` hands memory back at most this often. `malloc_trim` walks the whole heap, and the pages it hands
#: back fault in again for the next batch: measured ~0.5 ms a call with a fragmented 50 MB heap, which after
#: every small batch (one-row transactions read as they commit, ~100 batches/s) was ~10 % of a core.
TRIM_EVERY_S = 1.0
_lock = threading.Lock()
_last_trim = 0.0
_timer: threading.Timer | None = None


def trim() -> None:
    """Hand the heap's free memory back to the kernel (after a batch). A call within `TRIM_EVERY_S` of the
    last trim leaves it to a timer that trims once that time is up, so the memory of a burst's last batch
    goes back while the process idles after it."""
    global _last_trim, _timer
    if _TRIM is None:
        return
    with _lock:
        wait = _last_trim + TRIM_EVERY_S - time.monotonic()
        if wait > 0:
            if _timer is None:
                _timer = threading.Timer(wait, _trim_when_due)
                _timer.daemon = True
                _timer.start()
            return
        _last_trim = time.monotonic()
    _TRIM(0)


def _trim_when_due() -> None:
    global _timer
    with _lock:
        _timer = None
    trim()


class _CollectorPause:
    """`with collector_paused:` the cyclic collector is off inside (nested and from several threads: off
    until the last one leaves), back on after unless it was off before the first one entered."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0
        self._resume = False

    def __enter__(self) -> None:
        with self._lock:
            if self._depth == 0:
                self._resume = gc.isenabled()
                gc.disable()
            self._depth += 1

    def __exit__(self, *exc: Any) -> None:
        with self._lock:
            self._depth -= 1
            if self._depth == 0 and self._resume:
                gc.enable()


collector_paused = _CollectorPause()


class _NoPandas:
    """An import finder that finds no `pandas` (installed only for pyarrow's probe in `without_pandas`)."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "pandas":
            raise ModuleNotFoundError("No module named 'pandas'", name="pandas")


def without_pandas() -> None:
    """pyarrow decides now, without pandas, that there is none (unless pandas is loaded already): it does not
    load it on its own later. Call before anything converts a Python list with pyarrow."""
    finder = _NoPandas()
    sys.meta_path.insert(0, finder)
    try:
        pa.array([0])  # converting a list probes twice: pyarrow's C++ converter and its `_pandas_api`
    finally:
        sys.meta_path.remove(finder)
