"""`db.table` patterns: validation and a cached matcher (a decision per table, never per row)."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable


def check_pattern(pattern: str) -> str | None:
    """None when `pattern` is a valid `db.table` glob, else the reason it is not."""
    if not isinstance(pattern, str) or not pattern:
        return "empty pattern: expected db.table (globs allowed, e.g. shop.*)"
    if pattern.count(".") != 1 or pattern.startswith(".") or pattern.endswith("."):
        return f"bad pattern {pattern!r}: expected db.table (globs allowed, e.g. shop.*)"
    depth = 0
    for ch in pattern:
        if ch == "[":
            if depth:
                return f"bad pattern {pattern!r}: nested '['"
            depth = 1
        elif ch == "]" and depth:
            depth = 0
    if depth:
        return f"bad pattern {pattern!r}: unclosed '['"
    return None


class TableMatcher:
    """include/exclude `db.table` globs; the answer for each table is computed once."""

    def __init__(self, include: Iterable[str] = ("*.*",), exclude: Iterable[str] = ()) -> None:
        self._include = _compile(include)
        self._exclude = _compile(exclude)
        self._cache: dict[tuple[str, str], bool] = {}

    def __call__(self, db: str, table: str) -> bool:
        key = (db, table)
        hit = self._cache.get(key)
        if hit is None:
            name = f"{db}.{table}"
            included = self._include is not None and self._include.match(name)
            hit = bool(included) and not (self._exclude is not None and self._exclude.match(name))
            self._cache[key] = hit
        return hit


def _compile(patterns: Iterable[str]) -> re.Pattern[str] | None:
    patterns = list(patterns)
    if not patterns:
        return None
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns))
