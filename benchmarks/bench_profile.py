"""`make bench-profile`: where the time of a MariaDB -> Kafka catch-up goes, actor by actor.

The catch-up of benchmarks/e2e.py (`rows` pre-written rows of the 7-column table, INSERTs of 1,000 rows, or
one-row transactions with `--one-row`) runs on the local Ray while py-spy samples every actor process of
the pipeline (`py-spy record --format raw`, 200 samples/s, threads holding the GIL only); for each actor it prints the
samples, the functions with the most samples of their own (where the CPU went) and the most samples
in all (what they called included). When py-spy is missing or may not attach (ptrace), it falls back to
cProfile of the two stages in this process: the source's `poll` (the reader's decoding) and the Kafka
sink's `write` (serialize, produce, flush).

`python benchmarks/bench_profile.py [rows] [--one-row] [--placement fused|split|spread]` (defaults: 200,000 rows, the
pipeline's own placement); `DBUS_BENCH_PROFILE_ROWS` sets the rows under `make bench-profile`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

TOP = 20
#: frames every thread of an actor has (thread start, the executor, Ray's loop): left out of "in all"
_PLUMBING = ("<module>", "Thread.", "_bootstrap", "_worker ", "_WorkItem.run", "Worker.main_loop", "BaseEventLoop.",
             "_run_once", "Handle._run")


def py_spy() -> str | None:
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


def summarize(raw: Path, top: int = TOP) -> str:
    """The top functions of a py-spy raw (collapsed stacks) file, by own samples and by samples in all."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        samples += n
        frames = stack.split(";")
        own[frames[-1]] += n
        for frame in set(frames):
            total[frame] += n
    if not samples:
        return "    (no samples: the process was idle or could not be read)"
    lines = [f"    {samples} samples; by own samples:"]
    lines += [f"    {100 * n / samples:5.1f}%  {frame}" for frame, n in own.most_common(top)]
    lines.append("    by samples in all (callees included):")
    lines += [f"    {100 * n / samples:5.1f}%  {frame}" for frame, n in total.most_common(top)
              if not frame.startswith(_PLUMBING)][:top]
    return "\n".join(lines)


def profile_actors(mariadb: Any, broker: Any, rows: int, one_row: bool, placement: str | None, spy: str) -> bool:
    """The e2e catch-up with py-spy on every actor; False when py-spy could not sample."""
    from decoder import write_workload
    from e2e import _config, actor_pids

    from dbus_ray.pipeline import Pipeline

    kind = "one_row_txn" if one_row else "multi_row"
    wl = write_workload(mariadb, f"profile_{kind}_{rows}", rows, one_row_txn=one_row)
    file, pos = wl["start"]
    data = tempfile.mkdtemp(prefix="dbus-bench-")
    cfg = _config(f"bench-profile-{kind}", mariadb, broker, wl["table"], f"bench.profile.{kind}", f"{file}:{pos}",
                  data, 8601)
    if placement:
        cfg.flow.placement = placement
    pipeline = Pipeline(cfg)
    pipeline.start()
    pids = actor_pids(pipeline)
    spies: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
    for name, pid in pids.items():
        out = Path(data) / f"{pid}.raw"
        proc = subprocess.Popen([spy, "record", "--pid", str(pid), "--rate", "200", "--format", "raw",
                                 "--output", str(out), "--nonblocking", "--gil"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        spies[name] = (proc, out)
    started = time.monotonic()
    try:
        while True:
            status = pipeline.status()
            if status["state"] == "failed":
                raise RuntimeError(f"pipeline failed: {status.get('error')}")
            if status["caught_up"] and status["rows_delivered"] >= rows:
                break
            time.sleep(0.05)
        took = time.monotonic() - started
    finally:
        for proc, _ in spies.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        errors = {name: proc.communicate(timeout=60)[1].decode(errors="backslashreplace")
                  for name, (proc, _) in spies.items()}
        pipeline.stop()
    print(f"=== catch-up of {rows:,} rows ({kind}, placement {cfg.flow.placement}): {rows / took:,.0f} rows/s "
          f"while sampled ({took:.1f} s)")
    sampled = False
    for name, (_, out) in spies.items():
        print(f"--- actor {name} (pid {pids[name]})")
        if out.exists():
            sampled = True
            print(summarize(out))
        else:
            print(f"    py-spy wrote nothing: {errors[name].strip()[-500:]}")
    return sampled


def profile_in_process(mariadb: Any, broker: Any, rows: int, one_row: bool) -> None:
    """cProfile of the source's poll and of the Kafka sink's write, one after the other, in this process."""
    import cProfile
    import pstats

    from decoder import read_ours, write_workload
    from kafka_writer import decoded_batches, time_write

    wl = write_workload(mariadb, f"profile_cp_{rows}", rows, one_row_txn=one_row)
    prof = cProfile.Profile()
    prof.enable()
    took = read_ours(mariadb, wl, server_id=8602)
    prof.disable()
    print(f"=== the reader's decoding (MysqlSource.poll), {rows / took:,.0f} rows/s under cProfile")
    pstats.Stats(prof).sort_stats("tottime").print_stats(TOP)
    batches = decoded_batches(mariadb, rows)
    prof = cProfile.Profile()
    prof.enable()
    took = time_write(broker, batches, "at_least_once", 0)
    prof.disable()
    print(f"=== the Kafka writer (KafkaSink.write, at least once), {rows / took:,.0f} rows/s under cProfile")
    pstats.Stats(prof).sort_stats("tottime").print_stats(TOP)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rows", nargs="?", type=int, default=int(os.environ.get("DBUS_BENCH_PROFILE_ROWS", "200000")))
    parser.add_argument("--one-row", action="store_true", help="one-row transactions")
    parser.add_argument("--placement", choices=("fused", "split", "spread"))
    args = parser.parse_args()

    from dbus_ray.devstack import Broker, MariaDB
    from dbus_ray.pipeline import connect_ray

    mariadb = MariaDB().start()
    broker = Broker().start()
    try:
        spy = py_spy()
        connect_ray(num_cpus=2)
        if spy is None or not profile_actors(mariadb, broker, args.rows, args.one_row, args.placement, spy):
            print("py-spy missing or not allowed to attach: cProfile of the stages in this process instead")
            profile_in_process(mariadb, broker, args.rows, args.one_row)
    finally:
        broker.stop()
        mariadb.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
