"""What `bus.metrics()` and `bus.lag()` show in a notebook: the pipelines' figures as a DataFrame, and lag and
rows/s over time from the samples each reader keeps (`dbus_ray.metrics.Samples`: one a second, the last hour)
as a matplotlib picture (`LagPlot`, displayed inline through `_repr_png_`)."""

from __future__ import annotations

import io
from typing import Any

METRIC_COLUMNS = ("name", "state", "rows_read", "rows_delivered", "rows_in_flight", "max_rows_in_flight",
                  "lag_seconds", "caught_up", "rows_per_second", "error")


def metrics_frame(records: list[dict[str, Any]], rates: dict[str, float | None]) -> Any:
    """One row per pipeline (`records`: the controller's `list()`), with rows/s delivered over the last samples."""
    import pandas as pd

    rows = []
    for p in records:
        status = p.get("status") or {}
        row = {k: status.get(k) for k in METRIC_COLUMNS}
        row["name"], row["state"] = p.get("name"), p.get("state")
        row["rows_per_second"] = rates.get(p.get("name"))
        row["error"] = p.get("error")
        rows.append(row)
    return pd.DataFrame(rows, columns=list(METRIC_COLUMNS))


def lag_frame(samples: list[dict[str, Any]]) -> Any:
    """Samples -> a DataFrame indexed by time (UTC) with lag_seconds, rows_in_flight, and rows/s read and
    delivered between consecutive samples."""
    import pandas as pd

    frame = pd.DataFrame(samples, columns=["time", "rows_read", "rows_delivered", "lag_seconds", "rows_in_flight"])
    dt = frame["time"].diff()
    frame["read_per_second"] = (frame["rows_read"].diff() / dt).fillna(0.0)
    frame["delivered_per_second"] = (frame["rows_delivered"].diff() / dt).fillna(0.0)
    frame.index = pd.to_datetime(frame.pop("time"), unit="s", utc=True)
    return frame


def rate(samples: list[dict[str, Any]], window_s: float = 10.0) -> float | None:
    """Rows/s delivered over the last `window_s` seconds of samples; None with fewer than two."""
    if len(samples) < 2:
        return None
    last = samples[-1]
    first = next((s for s in samples if s["time"] >= last["time"] - window_s), samples[0])
    if first is last:
        first = samples[-2]
    return (last["rows_delivered"] - first["rows_delivered"]) / max(last["time"] - first["time"], 1e-9)


class LagPlot:
    """Lag (seconds) and rows/s over time of one pipeline: `data` is the DataFrame, `figure` the matplotlib
    Figure (made without pyplot, so a notebook shows it once, through `_repr_png_`)."""

    def __init__(self, pipeline: str, data: Any, minutes: float) -> None:
        self.pipeline, self.data, self.minutes = pipeline, data, minutes
        self.figure = self._draw()

    def _draw(self) -> Any:
        from matplotlib.figure import Figure

        fig = Figure(figsize=(8, 4.5), tight_layout=True)
        lag_ax, rate_ax = fig.subplots(2, 1, sharex=True)
        d = self.data
        lag_ax.plot(d.index, d["lag_seconds"], color="#c0392b")
        lag_ax.set_ylabel("lag (s)")
        lag_ax.set_title(f"pipeline {self.pipeline}: the last {self.minutes:g} minutes ({len(d)} samples)")
        rate_ax.plot(d.index, d["read_per_second"], label="read", color="#3b6fb6")
        rate_ax.plot(d.index, d["delivered_per_second"], label="delivered", color="#27ae60")
        rate_ax.set_ylabel("rows/s")
        rate_ax.legend(loc="upper left")
        for ax in (lag_ax, rate_ax):
            ax.grid(alpha=0.3)
        fig.autofmt_xdate()
        return fig

    def to_pandas(self) -> Any:
        return self.data

    def _repr_png_(self) -> bytes:
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        FigureCanvasAgg(self.figure)
        buf = io.BytesIO()
        self.figure.savefig(buf, format="png", dpi=80)
        return buf.getvalue()

    def __repr__(self) -> str:
        return f"<LagPlot of {self.pipeline}: {len(self.data)} samples over {self.minutes:g} minutes>"
