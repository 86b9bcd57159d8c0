"""What `dbus run` needs besides the command itself: the live progress line, stopping on signals, which
sources end, and printing a failure once."""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from dbus_ray.config import PipelineConfig


class Progress:
    """One live line: rows in/out, rows/s, lag; a newline at the end."""

    def __init__(self, stream=sys.stderr) -> None:
        self.stream = stream
        self.live = stream.isatty()
        self.last = (time.monotonic(), 0)
        self.rate = 0.0
        self.printed = 0.0
        self.width = 100

    def __call__(self, status: dict[str, Any]) -> None:
        now = time.monotonic()
        then, rows = self.last
        if now - then >= 0.5:
            self.rate = (status["rows_delivered"] - rows) / (now - then)
            self.last = (now, status["rows_delivered"])
        line = (
            f"{status['pipeline']}: {status['state']}  in {status['rows_read']:,}  out {status['rows_delivered']:,}"
            f"  {self.rate:,.0f} rows/s  lag {status['lag_seconds']:.1f}s"
        )
        snap = (status.get("snapshot") or {})
        if snap.get("state") == "running":
            from dbus_ray.client import snapshot_line

            line += f"  [{snapshot_line(snap)}]"
        if self.live:
            self.stream.write("\r" + line.ljust(self.width))
            self.width = max(self.width, len(line))
            self.stream.flush()
        elif now - self.printed >= 5:
            self.printed = now
            self.stream.write(line + "\n")

    def end(self, status: dict[str, Any]) -> None:
        self(status)
        if self.live:
            self.stream.write("\n")


class StopSignals:
    """SIGINT (Ctrl-C) and SIGTERM (systemd, `docker stop`) ask `dbus run` to stop: the pipeline is stopped
    cleanly (in-flight rows delivered, final checkpoint) and the command exits 0. No exception is thrown
    into the middle of a Ray call; a second signal while stopping only says that it is stopping."""

    def __init__(self, pipeline: str) -> None:
        import signal
        import threading

        self.pipeline = pipeline
        self.requested = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        import signal

        name = signal.Signals(signum).name
        if self.requested.is_set():
            os.write(2, f"\n{self.pipeline}: {name}: already stopping, waiting for the final checkpoint\n".encode())
            return
        self.requested.set()
        os.write(2, f"\n{self.pipeline}: {name}: stopping with a final checkpoint ...\n".encode())


def finite(cfg: PipelineConfig) -> bool:
    """A source that ends: `mock` with a number of `rows`, `binlog_files` without `follow`."""
    if cfg.source.type == "binlog_files":
        return not cfg.source.options.follow
    return cfg.source.type == "mock" and getattr(cfg.source.options, "rows", None) is not None


def hide_forwarded_failure(pipeline: str) -> None:
    """`dbus run` prints a failure once, as its last line: drop the reader's own log line of it from the actor
    output Ray forwards to this terminal (other actor output still shows)."""
    try:
        from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher
    except ImportError:
        return
    marker = f"[{pipeline}] pipeline failed: "
    with dispatcher._lock:
        handlers = list(dispatcher.handlers)

    def without_failure(handle: Any):
        def emit(data: dict[str, Any]) -> None:
            lines = [line for line in data.get("lines", []) if marker not in line]
            if lines or not data.get("lines"):
                handle({**data, "lines": lines})

        return emit

    with dispatcher._lock:
        dispatcher.handlers = [(name, without_failure(handle) if name == "ray_print_logs" else handle)
                               for name, handle in handlers]
