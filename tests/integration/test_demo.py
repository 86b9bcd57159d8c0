"""`dbus demo`: the real MySQL -> Kafka path on a private MariaDB and broker, end to end."""

from __future__ import annotations

import io

import pytest

from dbus_ray.demo import run_demo

pytestmark = pytest.mark.usefixtures("ray_session")


def test_demo_delivers_every_row_change_once() -> None:
    out = io.StringIO()
    code = run_demo(rows=3000, out=out)
    text = out.getvalue()
    assert code == 0, text
    assert "demo: rows written 3,000, delivered 3,000, in Kafka 3,000" in text
    assert "demo: every row change arrived once" in text
    assert text.count("  partition ") == 3  # three decoded messages shown
