"""Pipeline metrics through `ray.util.metrics` (exported by every Ray node in Prometheus format),
tagged by pipeline and, for sinks, by sink. Names start with `dbus_`.

Ray exports the current values only (a history needs a Prometheus server scraping them), so the reader
also keeps `Samples`: a bounded ring of its own figures, one a second for the last hour, which
`bus.lag()` plots."""

from __future__ import annotations

from collections import deque
from typing import Any

from ray.util import metrics

LATENCY_BOUNDARIES_S = [0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]


def percentile(ordered: list[float], p: float) -> float:
    """The `p` quantile (0-1) of `ordered` (sorted, not empty): the value at rank int(p * n), the last one
    for p close to 1 (the controller's loop times and the benchmarks' latencies)."""
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


class ReaderMetrics:
    def __init__(self, pipeline: str) -> None:
        tags = {"pipeline": pipeline}
        self.rows_in = metrics.Counter("dbus_rows_in", "Row changes read from the source", ("pipeline",))
        self.rows_delivered = metrics.Counter(
            "dbus_rows_delivered", "Row changes delivered to every sink", ("pipeline",)
        )
        self.errors = metrics.Counter("dbus_errors", "Pipeline failures", ("pipeline",))
        self.lag = metrics.Gauge("dbus_lag_seconds", "Seconds behind the source", ("pipeline",))
        self.in_flight = metrics.Gauge("dbus_rows_in_flight", "Rows read, not yet delivered", ("pipeline",))
        for m in (self.rows_in, self.rows_delivered, self.errors, self.lag, self.in_flight):
            m.set_default_tags(tags)


class WriterMetrics:
    def __init__(self, pipeline: str, sink: str) -> None:
        tags = {"pipeline": pipeline, "sink": sink}
        self.rows_out = metrics.Counter("dbus_rows_out", "Row changes a sink acknowledged", ("pipeline", "sink"))
        self.errors = metrics.Counter("dbus_sink_errors", "Failed sink writes", ("pipeline", "sink"))
        self.latency = metrics.Histogram(
            "dbus_batch_delivery_seconds", "Time to deliver one batch to the sink", LATENCY_BOUNDARIES_S,
            ("pipeline", "sink"),
        )
        for m in (self.rows_out, self.errors, self.latency):
            m.set_default_tags(tags)


SAMPLE_FIELDS = ("time", "rows_read", "rows_delivered", "lag_seconds", "rows_in_flight")


class Samples:
    """The newest `keep` samples of a reader's figures, at most one every `every_s` seconds."""

    def __init__(self, keep: int = 3600, every_s: float = 1.0) -> None:
        self.ring: deque[tuple[float, int, int, float, int]] = deque(maxlen=keep)
        self.every_s = every_s

    def add(self, now: float, rows_read: int, rows_delivered: int, lag_seconds: float, rows_in_flight: int) -> bool:
        if self.ring and now - self.ring[-1][0] < self.every_s:
            return False
        self.ring.append((now, rows_read, rows_delivered, lag_seconds, rows_in_flight))
        return True

    def since(self, t: float = 0.0) -> list[dict[str, Any]]:
        return [dict(zip(SAMPLE_FIELDS, s)) for s in self.ring if s[0] >= t]
