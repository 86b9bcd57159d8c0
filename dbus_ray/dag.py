"""A pipeline's stages and sinks with live rows/s: as text for the terminal and as an SVG picture
(`dbus dag PIPELINE [--svg FILE]`)."""

from __future__ import annotations

import html
from dataclasses import dataclass

from dbus_ray.config import PipelineConfig


@dataclass
class Flow:
    """Measured rows/s: into the pipeline (read) and out of each sink (acknowledged)."""

    read: float
    sinks: dict[str, float]


def describe_filters(cfg: PipelineConfig) -> str:
    parts = []
    for f in cfg.filters:
        opts = f.options
        if f.type == "select":
            text = "select " + ",".join(opts.include)
            if opts.exclude:
                text += " -" + ",".join(opts.exclude)
            parts.append(text)
        else:
            parts.append(f.type)
    return "; ".join(parts) or "no filters"


def as_text(cfg: PipelineConfig, flow: Flow) -> str:
    head = f"{cfg.source.type} source -> reader ({flow.read:,.0f} rows/s) -> router [{describe_filters(cfg)}]"
    lines = [f"pipeline {cfg.name}", head]
    for i, sink in enumerate(cfg.sinks):
        branch = "└─" if i == len(cfg.sinks) - 1 else "├─"
        match = ",".join(sink.match)
        lines.append(f"    {branch}> batcher:{sink.name} -> writer:{sink.name} ({sink.type}, match {match})"
                     f"  {flow.sinks.get(sink.name, 0.0):,.0f} rows/s")
    return "\n".join(lines)


def as_svg(cfg: PipelineConfig, flow: Flow) -> str:
    """Boxes for source, reader, router and one batcher/writer pair per sink, arrows labelled rows/s."""
    w, h, gap, row = 170, 44, 40, 64
    n = max(len(cfg.sinks), 1)
    height = 40 + n * row
    mid = 20 + (n * row - h) / 2
    boxes: list[str] = []
    arrows: list[str] = []

    def box(x: float, y: float, title: str, sub: str) -> None:
        boxes.append(f'<rect x="{x}" y="{y}" width="{w}" height="{h}" rx="6" fill="#eef3fb" stroke="#3b6fb6"/>'
                     f'<text x="{x + w / 2}" y="{y + 18}" text-anchor="middle" font-size="13">'
                     f'{html.escape(title)}</text>'
                     f'<text x="{x + w / 2}" y="{y + 34}" text-anchor="middle" font-size="11" fill="#555">'
                     f'{html.escape(sub)}</text>')

    def arrow(x1: float, y1: float, x2: float, y2: float, label: str = "") -> None:
        arrows.append(f'<line x1="{x1}" y1="{y1}" x2="{x2}" y2="{y2}" stroke="#333" marker-end="url(#a)"/>')
        if label:
            arrows.append(f'<text x="{(x1 + x2) / 2}" y="{(y1 + y2) / 2 - 4}" text-anchor="middle" '
                          f'font-size="10">{html.escape(label)}</text>')

    xs = [20 + i * (w + gap) for i in range(5)]
    box(xs[0], mid, f"{cfg.source.type} source", cfg.name)
    box(xs[1], mid, "reader", f"{flow.read:,.0f} rows/s")
    box(xs[2], mid, "router", describe_filters(cfg)[:26])
    arrow(xs[0] + w, mid + h / 2, xs[1], mid + h / 2)
    arrow(xs[1] + w, mid + h / 2, xs[2], mid + h / 2)
    for i, sink in enumerate(cfg.sinks):
        y = 20 + i * row
        box(xs[3], y, f"batcher:{sink.name}", ",".join(sink.match)[:26])
        box(xs[4], y, f"writer:{sink.name}", f"{sink.type}  {flow.sinks.get(sink.name, 0.0):,.0f} rows/s")
        arrow(xs[2] + w, mid + h / 2, xs[3], y + h / 2)
        arrow(xs[3] + w, y + h / 2, xs[4], y + h / 2)
    width = xs[4] + w + 20
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif">'
            '<defs><marker id="a" markerWidth="8" markerHeight="8" refX="7" refY="3" orient="auto">'
            '<path d="M0,0 L7,3 L0,6 z" fill="#333"/></marker></defs>'
            + "".join(arrows) + "".join(boxes) + "</svg>\n")


class Dag:
    """A pipeline's picture for a notebook: SVG inline (`_repr_svg_`), the text form as its repr."""

    def __init__(self, cfg: PipelineConfig, flow: Flow) -> None:
        self.cfg, self.flow = cfg, flow

    def _repr_svg_(self) -> str:
        return as_svg(self.cfg, self.flow)

    def __repr__(self) -> str:
        return as_text(self.cfg, self.flow)
