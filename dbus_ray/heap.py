"""Keeping a process's heap close to what it holds. A batch's row objects and Arrow buffers are transient,
but allocators keep the peak of their heap mapped: glibc until `malloc_trim`, Arrow's default mimalloc
pool on its own schedule. The reader and the writer call `use_system_pool()` when they start (Arrow then
allocates with malloc) and `trim()` after each batch, so their RSS follows what they hold instead of the
largest batch ever seen (measured: the reader's anonymous memory 155 -> 119 MB in a 1M-row catch-up)."""

from __future__ import annotations

import ctypes
from collections.abc import Callable

import pyarrow as pa


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # no glibc
        return None


_TRIM = _malloc_trim()


def use_system_pool() -> None:
    """Arrow allocates with malloc in this process (so `trim` hands its freed buffers back too)."""
    if _TRIM is not None:
        pa.set_memory_pool(pa.system_memory_pool())


def trim() -> None:
    if _TRIM is not None:
        _TRIM(0)
