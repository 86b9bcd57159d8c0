"""A source's options parsed as a pipeline file gives them (with a `null` sink), and the error of a bad
one, checked to be one line."""

from __future__ import annotations

from typing import Any

import pytest

from dbus_ray.config import ConfigError, parse_config


def source_options(source: dict[str, Any], file: str = "x.yaml") -> Any:
    """The parsed options of `source` (a pipeline file's `source:` mapping) in a pipeline file named `file`."""
    raw = {"name": "p", "source": source, "sinks": [{"name": "n", "type": "null"}]}
    return parse_config(raw, file, {}).source.options


def source_error(source: dict[str, Any], file: str = "x.yaml") -> str:
    """The config error of `source`, which must be one line."""
    with pytest.raises(ConfigError) as info:
        source_options(source, file)
    text = str(info.value)
    assert "\n" not in text, text
    return text
