"""Placement strategies, without Ray."""

from __future__ import annotations

from collections import Counter

import pytest

from dbus_ray.placement import place

PIPES = [f"p{i}" for i in range(7)]


def test_round_robin_spreads_evenly() -> None:
    result = place("round_robin", PIPES, {"a": 1, "b": 1, "c": 1}, {})
    assert set(result) == set(PIPES)
    assert sorted(Counter(result.values()).values()) == [2, 2, 3]


def test_sticky_keeps_pipelines_on_live_nodes() -> None:
    current = {p: ("a" if i < 4 else "b") for i, p in enumerate(PIPES)}
    result = place("sticky", PIPES, {"a": 1, "b": 1}, current)
    assert result == current


def test_sticky_moves_only_what_a_dead_node_held() -> None:
    current = {"p0": "a", "p1": "a", "p2": "b", "p3": "b", "p4": "c", "p5": "c"}
    result = place("sticky", list(current), {"a": 1, "b": 1}, current)
    moved = {p for p in current if result[p] != current[p]}
    assert moved == {"p4", "p5"}
    assert Counter(result.values()) == {"a": 3, "b": 3}


def test_sticky_on_join_moves_as_few_as_needed() -> None:
    current = {p: ("a" if i % 2 else "b") for i, p in enumerate(PIPES[:6])}
    result = place("sticky", list(current), {"a": 1, "b": 1, "c": 1}, current)
    moved = [p for p in current if result[p] != current[p]]
    assert len(moved) == 2  # 3+3 -> 2+2+2
    assert sorted(Counter(result.values()).values()) == [2, 2, 2]


@pytest.mark.parametrize("new", ["0", "z"])  # the joining node's id sorts before or after the others
def test_sticky_join_with_a_remainder_moves_one(new: str) -> None:
    current = {p: ("a" if i % 2 else "b") for i, p in enumerate(PIPES[:5])}  # 2 on a, 3 on b
    result = place("sticky", list(current), {"a": 1, "b": 1, new: 1}, current)
    moved = [p for p in current if result[p] != current[p]]
    assert len(moved) == 1  # 2+3 -> 2+2+1: one pipeline moves, whatever the ids
    assert Counter(result.values())[new] == 1


def test_weighted_follows_capacity() -> None:
    pipes = [f"p{i}" for i in range(8)]
    result = place("weighted", pipes, {"big": 3, "small": 1}, {})
    assert Counter(result.values()) == {"big": 6, "small": 2}


def test_no_nodes_no_placement() -> None:
    assert place("sticky", PIPES, {}, {}) == {}


def test_unknown_strategy() -> None:
    with pytest.raises(ValueError, match="unknown placement strategy 'random'"):
        place("random", PIPES, {"a": 1}, {})
