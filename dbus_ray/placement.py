"""Where pipelines run: Ray nodes are the participants; a strategy maps pipelines to live nodes.

- `round_robin`: pipelines in name order over nodes in id order (simple, may move many on a change).
- `sticky`: a pipeline stays where it is while its node lives; only pipelines of dead nodes, and
  just enough others to even the load out (at most one apart), move.
- `weighted`: like sticky, but each node's share follows its `dbus_capacity` resource.

Pure functions: the controller calls them; unit tests need no Ray.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

STRATEGIES = ("round_robin", "sticky", "weighted")


def place(
    strategy: str,
    pipelines: Sequence[str],
    nodes: Mapping[str, float],
    current: Mapping[str, str | None],
) -> dict[str, str]:
    """pipeline -> node for every pipeline. `nodes`: live node id -> capacity (> 0);
    `current`: where each pipeline runs now (None or a dead node: nowhere)."""
    if not nodes or not pipelines:
        return {}
    if strategy == "round_robin":
        order = sorted(nodes)
        return {p: order[i % len(order)] for i, p in enumerate(sorted(pipelines))}
    if strategy == "sticky":
        return _balanced(pipelines, {n: 1.0 for n in nodes}, current)
    if strategy == "weighted":
        return _balanced(pipelines, {n: max(c, 0.0) or 1.0 for n, c in nodes.items()}, current)
    raise ValueError(f"unknown placement strategy {strategy!r} (known: {', '.join(STRATEGIES)})")


def _quotas(count: int, weights: Mapping[str, float], held: Mapping[str, int]) -> dict[str, int]:
    """How many of `count` pipelines each node should hold, by weight (largest remainders; between equal
    remainders the node holding more now gets the extra one, so fewer pipelines move)."""
    total = sum(weights.values())
    exact = {n: count * w / total for n, w in weights.items()}
    quota = {n: int(x) for n, x in exact.items()}
    left = count - sum(quota.values())
    for n in sorted(exact, key=lambda n: (-(exact[n] - quota[n]), -held.get(n, 0), n))[:left]:
        quota[n] += 1
    return quota


def _balanced(
    pipelines: Sequence[str], weights: Mapping[str, float], current: Mapping[str, str | None]
) -> dict[str, str]:
    held: dict[str, int] = {}
    for p in pipelines:
        node = current.get(p)
        if node in weights:
            held[node] = held.get(node, 0) + 1
    quota = _quotas(len(pipelines), weights, held)
    result: dict[str, str] = {}
    load = {n: 0 for n in weights}
    # keep pipelines where they are, up to each node's quota
    for p in sorted(pipelines):
        node = current.get(p)
        if node in load and load[node] < quota[node]:
            result[p] = node
            load[node] += 1
    # the rest go to the nodes furthest below their quota
    for p in sorted(pipelines):
        if p in result:
            continue
        node = min(load, key=lambda n: (load[n] - quota[n], load[n] / weights[n], n))
        result[p] = node
        load[node] += 1
    return result
