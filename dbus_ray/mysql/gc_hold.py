"""Holding Python's cyclic garbage collector off while the binlog stream decodes a poll's rows.

Until a poll's batch is built, every pending row is ~10 tracked containers (its segment, the segment's
column lists): with one-row transactions the collector ran every ~70 rows and re-scanned all of them, 14 %
of the reader's time. Nothing the decoding builds is cyclic (reference counts free it), so the collector is
held off for one read (at most one poll budget) and runs after it as before. Reads of several streams in
one process (threads) share the hold: the collector is off while any holds it and back on (if it was) when
the last lets go.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_holders = 0
_was_enabled = False


@contextmanager
def gc_held() -> Iterator[None]:
    global _holders, _was_enabled
    with _lock:
        if _holders == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _holders += 1
    try:
        yield
    finally:
        with _lock:
            _holders -= 1
            if _holders == 0 and _was_enabled:
                gc.enable()
