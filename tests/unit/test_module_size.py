"""No Python module of the project over ~500 lines (the limit of the design card; 510 leaves room for a
last docstring line): a module that grows past it is split by concept, not left to grow."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIMIT = 510
DIRS = ("dbus_ray", "actors", "serializers", "benchmarks", "tests")


def test_no_module_over_the_limit() -> None:
    sizes = {str(f.relative_to(ROOT)): len(f.read_text().splitlines())
             for d in DIRS for f in (ROOT / d).rglob("*.py")}
    assert len(sizes) > 200, f"only {len(sizes)} modules found under {DIRS}"
    over = {path: n for path, n in sorted(sizes.items()) if n > LIMIT}
    assert not over, f"modules over {LIMIT} lines (split them by concept): {over}"
