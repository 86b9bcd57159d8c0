"""docs/config.md is what the config classes generate (so it cannot drift), and it documents every key of
every section and plugin, with a meaning."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dbus_ray import config, registry
from dbus_ray.cli import app
from dbus_ray.config_docs import render, rows_of

DOC = Path(__file__).resolve().parents[2] / "docs" / "config.md"


def test_committed_config_md_is_the_generated_one() -> None:
    assert DOC.exists(), "docs/config.md is missing: run `dbus config-docs --output docs/config.md`"
    assert DOC.read_text() == render(), "docs/config.md is stale: run `dbus config-docs --output docs/config.md`"
    result = CliRunner().invoke(app, ["config-docs", "--output", str(DOC), "--check"])
    assert result.exit_code == 0, result.output


def test_every_key_of_every_section_and_plugin_is_in_it() -> None:
    text = DOC.read_text()
    registry.load_builtins()
    sections = [("## Top level", config.PipelineConfig), ("## `flow`", config.FlowOptions),
                ("## `checkpoint`", config.CheckpointOptions)]
    sections += [(f"### source `{n}`", c.Options) for n, c in registry.SOURCES.items()]
    sections += [(f"### filter `{n}`", c.Options) for n, c in registry.OPERATORS.items()]
    sections += [(f"### sink `{n}`", c.Options) for n, c in registry.SINKS.items()]
    for title, cls in sections:
        assert title in text
        part = text.split(title + "\n", 1)[1].split("\n#", 1)[0]
        for f in dataclasses.fields(cls):
            if f.name in ("path", "raw") and cls is config.PipelineConfig:
                continue
            row = next((line for line in part.splitlines() if line.startswith(f"| `{f.name}` |")), None)
            assert row is not None, f"{title}: {f.name} missing"
            assert row.split(" | ")[3].strip(" |"), f"{title}: {f.name} has no meaning"
    assert "| `max_rows` | integer | `1000000` | rows per file |" in text  # parquet: type, default, meaning


def test_a_key_without_a_meaning_fails_naming_it() -> None:
    @dataclasses.dataclass
    class Options:
        documented: int = 1  # what it does
        bare: str = "x"

    with pytest.raises(ValueError, match=r"config key sink demo: bare has no meaning"):
        rows_of(Options, "sink demo")


def test_check_fails_on_a_stale_file(tmp_path: Path) -> None:
    stale = tmp_path / "config.md"
    stale.write_text(render().replace("rows per file", "rows in a file"))
    result = CliRunner().invoke(app, ["config-docs", "--output", str(stale), "--check"])
    assert result.exit_code == 1
    assert "is not what the config classes generate" in result.stderr
