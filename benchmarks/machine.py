"""How fast the machine is while the benchmarks run, so that figures of two runs can be read side by side:
the writer's thread measured 4.55 us per row in one run and 7.2 three hours later on the same VM with the same
code (its fresh page faults then took 4.3 us). Taken before and after the run (`machine.at_start`,
`machine.at_end` in bench-results.json):

- `page_fault_us`: one first touch of a fresh anonymous 4 KiB page (128 MiB mapped and written, page by page);
  every new heap page a batch's objects take costs one;
- `python_ns_per_add`: `sum(range(10,000,000))` per element: the interpreter's plain speed;
- `handoff_us`: one round trip between two processes over a pipe (a byte each way): what waking another
  process or thread costs, which every hand-off between actors and between a reader's threads pays;
- `copy_gb_s`: copying 256 MiB already in memory (GB/s): the memory's speed, which Arrow buffers and
  socket reads lean on;
- `loadavg_1m`: the load average over the last minute (2 cores: above ~0.5 the machine was not quiet).

The first two alone did not tell the machine's states apart: the quick run of 2026-12-01 evening and the
full run of 2026-12-02 morning gave 2.8-3.0 us / 13.1 ns and 3.1-3.5 us / 13.1-16.1 ns, while the transport
figure (code unchanged in between) was 4.4M rows/s in the first and 1.9M in the second; hence the last two.

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


def handoff_us(rounds: int = 20_000) -> float:
    best = float("inf")
    for _ in range(3):
        there_r, there_w = os.pipe()
        back_r, back_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the echo: a byte back for each byte
            try:
                for _ in range(rounds):
                    os.read(there_r, 1)
                    os.write(back_w, b"x")
            finally:
                os._exit(0)
        t0 = time.perf_counter()
        for _ in range(rounds):
            os.write(there_w, b"x")
            os.read(back_r, 1)
        best = min(best, time.perf_counter() - t0)
        os.waitpid(pid, 0)
        for fd in (there_r, there_w, back_r, back_w):
            os.close(fd)
    return round(best / rounds * 1e6, 2)


def copy_gb_s(size: int = 256 * 1024 * 1024) -> float:
    src, dst = bytearray(size), bytearray(size)
    src[:] = b"\1" * size  # both touched before the timing: no page fault in it
    dst[:] = src
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        dst[:] = src
        best = min(best, time.perf_counter() - t0)
    return round(size / best / 1e9, 2)


def machine_state() -> dict[str, Any]:
    return {"page_fault_us": page_fault_us(), "python_ns_per_add": python_ns_per_add(),
            "handoff_us": handoff_us(), "copy_gb_s": copy_gb_s(), "loadavg_1m": round(os.getloadavg()[0], 2)}


if __name__ == "__main__":
    print(json.dumps(machine_state(), indent=2))
