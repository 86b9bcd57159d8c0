"""Pipeline metrics through `ray.util.metrics` (exported by every Ray node in Prometheus format),
tagged by pipeline and, for sinks, by sink. Names start with `dbus_`."""

from __future__ import annotations

from ray.util import metrics

LATENCY_BOUNDARIES_S = [0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]


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
