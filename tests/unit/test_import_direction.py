"""Imports go one way: the actors (`actors/`, installed as `dbus_ray.actors`) use the core and the plugins,
never the other way round. Only the pipeline runtime, the client of the controller and the CLI start actors."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: modules that may import dbus_ray.actors: the runtime that starts a pipeline's actors, the client that
#: finds or starts the controller actor, and the CLI
ALLOWED = {"dbus_ray/pipeline.py", "dbus_ray/client.py", "dbus_ray/cli.py"}
#: known offenders, each with what must change: the entry goes once the module no longer imports actors
PENDING: dict[str, str] = {}


def actor_imports(source: str) -> list[int]:
    """The line numbers of the imports of `dbus_ray.actors` (or one of its modules) in `source`."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        if any(n == "dbus_ray.actors" or n.startswith("dbus_ray.actors.") for n in names):
            lines.append(node.lineno)
    return sorted(lines)


def test_the_scanner_finds_every_form() -> None:
    source = ("import os\nfrom dbus_ray import actors\ndef f():\n    from dbus_ray.actors.reader import Reader\n"
              "import dbus_ray.actors.writer\nfrom dbus_ray import model\nfrom dbus_ray.actorsx import y\n")
    assert actor_imports(source) == [2, 4, 5]


def test_core_plugins_and_serializers_never_import_actors() -> None:
    offenders = {}
    for path in sorted([*ROOT.glob("dbus_ray/**/*.py"), *ROOT.glob("serializers/**/*.py")]):
        rel = path.relative_to(ROOT).as_posix()
        lines = actor_imports(path.read_text())
        if lines and rel not in ALLOWED:
            offenders[rel] = lines
    unexpected = {rel: lines for rel, lines in offenders.items() if rel not in PENDING}
    assert not unexpected, f"modules importing dbus_ray.actors (only {sorted(ALLOWED)} may): {unexpected}"
    stale = [rel for rel in PENDING if (ROOT / rel).exists() and rel not in offenders]
    assert not stale, f"no longer imports dbus_ray.actors: remove from PENDING: {stale}"
