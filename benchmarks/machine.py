"""How fast the machine is while the benchmarks run, so that figures of two runs can be read side by side:
the writer's thread measured 4.55 us per row in one run and 7.2 three hours later on the same VM with the same
code (its fresh page faults then took 4.3 us). Taken before and after the run (`machine.at_start`,
`machine.at_end` in bench-results.json):

- `page_fault_us`: one first touch of a fresh anonymous 4 KiB page (128 MiB mapped and written, page by page);
  every new heap page a batch's objects take costs one;
- `python_ns_per_add`: `sum(range(10,000,000))` per element: the interpreter's plain speed;
- `loadavg_1m`: the load average over the last minute (2 cores: above ~0.5 the machine was not quiet).

Standalone: `python benchmarks/machine.py`."""

from __future__ import annotations

import json
import mmap
import os
import time
from typing import Any

PAGE = 4096
FAULT_BYTES = 128 * 1024 * 1024


def page_fault_us() -> float:
    best = float("inf")
    for _ in range(3):
        area = mmap.mmap(-1, FAULT_BYTES)
        t0 = time.perf_counter()
        for i in range(0, FAULT_BYTES, PAGE):
            area[i] = 1
        took = time.perf_counter() - t0
        area.close()
        best = min(best, took)
    # less the loop's own cost per page (the same stores on pages already touched)
    area = mmap.mmap(-1, FAULT_BYTES)
    for i in range(0, FAULT_BYTES, PAGE):
        area[i] = 1
    t0 = time.perf_counter()
    for i in range(0, FAULT_BYTES, PAGE):
        area[i] = 2
    loop = time.perf_counter() - t0
    area.close()
    return round(max(0.0, best - loop) / (FAULT_BYTES // PAGE) * 1e6, 2)


def python_ns_per_add(n: int = 10_000_000) -> float:
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        sum(range(n))
        best = min(best, time.perf_counter() - t0)
    return round(best / n * 1e9, 2)


def machine_state() -> dict[str, Any]:
    return {"page_fault_us": page_fault_us(), "python_ns_per_add": python_ns_per_add(),
            "loadavg_1m": round(os.getloadavg()[0], 2)}


if __name__ == "__main__":
    print(json.dumps(machine_state(), indent=2))
