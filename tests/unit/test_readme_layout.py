"""The README's layout paragraph names every package of the repository and every module of the core, the
plugin packages, the serializers and the benchmarks (a module added without a word there fails here)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: packages whose modules are `type:` names (documented with their options in docs/config.md)
PLUGIN_PACKAGES = {"sources", "sinks"}


def layout() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("Layout. `pyproject.toml` maps")
    return text[start : text.index("\n## ", start)]


def named(text: str, stem: str) -> bool:
    return f"`{stem}`" in text or f"`{stem}.py`" in text or f"`{stem}/`" in text


def test_every_package_is_named() -> None:
    text = layout()
    packages = [p.parent for p in ROOT.glob("dbus_ray/*/__init__.py")]
    missing = [f"dbus_ray/{p.name}/" for p in packages if f"`dbus_ray/{p.name}/`" not in text]
    missing += [f"{d}/" for d in ("actors", "serializers", "benchmarks", "configs", "tests", "docs", "examples")
                if f"`{d}/`" not in text]
    missing += [f"tests/{p.parent.name}/" for p in ROOT.glob("tests/*/__init__.py")
                if f"`{p.parent.name}/`" not in text]
    assert not missing, f"README layout paragraph does not name: {missing}"


def test_every_module_of_the_core_and_its_packages_is_named() -> None:
    text = layout()
    dirs = [ROOT / "dbus_ray", ROOT / "serializers", ROOT / "benchmarks", ROOT / "dbus_ray/mysql/snapshot"]
    dirs += [p.parent for p in ROOT.glob("dbus_ray/*/__init__.py") if p.parent.name not in PLUGIN_PACKAGES]
    missing = sorted(str(f.relative_to(ROOT)) for d in dirs for f in d.glob("*.py")
                     if f.stem != "__init__" and not named(text, f.stem))
    assert not missing, f"README layout paragraph does not name: {missing}"
