"""Checks shared by the config loader and every plugin's options: `Invalid` (what an option validator
raises: the key, relative to its section, and the reason; the loader turns it into one line naming the file
and the key path) and the checks of names and `db.table` patterns."""

from __future__ import annotations

import re
from collections.abc import Iterable

from dbus_ray.routing import check_pattern


class Invalid(ValueError):
    """Raised by option validators: `key` (relative to the section, may be empty) and reason."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(reason)
        self.key = key
        self.reason = reason


NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


def check_name(value: str, what: str = "name") -> None:
    """A pipeline, project or sink name: 1-63 letters, digits, '_', '.' or '-'."""
    if not NAME_RE.match(value):
        raise Invalid("", f"{what} {value!r} must be 1-63 letters, digits, '_', '.' or '-'")


def check_patterns(patterns: Iterable[str], key: str) -> None:
    """Every one of `patterns` a `db.table` glob; else `Invalid("<key>[i]", reason)` for the first that is not."""
    for i, pattern in enumerate(patterns):
        reason = check_pattern(pattern)
        if reason:
            raise Invalid(f"{key}[{i}]", reason)


def check_columns(columns: list[str], key: str = "columns") -> None:
    """A non-empty list of non-empty column names."""
    if not columns:
        raise Invalid(key, "must name at least one column")
    for i, column in enumerate(columns):
        if not column:
            raise Invalid(f"{key}[{i}]", "must not be empty")
