"""Graph algorithms over a neighbour function: breadth-first traversal, fewest-hops path, cycle detection.

This module owns the algorithms only; it knows nothing of keys or records.
Each takes the graph as a function ``hop(node) -> [neighbour ids]`` (the
memory graph passes one range scan of the adjacency keys) or as an
adjacency dict, so it runs inside a transaction's reads unchanged.
Invariants: every node is visited at most once; neighbours are followed in
the order ``hop`` returns them, so results are deterministic.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

__all__ = ["breadth_first", "fewest_hops", "has_directed_cycle"]


def breadth_first(start: str, hop: Callable[[str], list[str]],
                  max_depth: int | None) -> list[tuple[str, int, list[str]]]:
    """``(node, depth, path)`` of every node reachable from ``start`` within ``max_depth`` hops (None: no
    limit), breadth-first, ``start`` first at depth 0; ``path`` runs from ``start`` along the BFS tree.
    O(reachable nodes + their edges) calls of ``hop``'s work."""
    seen = {start}
    order = [(start, 0, [start])]
    queue = deque(order)
    while queue:
        node, depth, path = queue.popleft()
        if max_depth is not None and depth >= max_depth:
            continue
        for nxt in hop(node):
            if nxt not in seen:
                seen.add(nxt)
                item = (nxt, depth + 1, [*path, nxt])
                order.append(item)
                queue.append(item)
    return order


def fewest_hops(start: str, goal: str, hop: Callable[[str], list[str]]) -> list[str] | None:
    """The ids of a fewest-hops path from ``start`` to ``goal`` (``[start]`` if equal), or None. Breadth-first."""
    if start == goal:
        return [start]
    parent: dict[str, str] = {start: start}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for nxt in hop(node):
            if nxt not in parent:
                parent[nxt] = node
                if nxt == goal:
                    path = [nxt]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return path[::-1]
                queue.append(nxt)
    return None


def has_directed_cycle(adj: dict[str, list[str]]) -> bool:
    """Whether the directed graph ``{node: [successors]}`` has a cycle (a self-loop counts).
    Iterative depth-first search with three colours: O(nodes + edges), no recursion limit."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    for root in adj:
        if root in state:
            continue
        state[root] = 1
        stack = [(root, iter(adj[root]))]
        while stack:
            node, it = stack[-1]
            for nxt in it:
                st = state.get(nxt)
                if st == 1:
                    return True
                if st is None:
                    state[nxt] = 1
                    stack.append((nxt, iter(adj.get(nxt, ()))))
                    break
            else:
                state[node] = 2
                stack.pop()
    return False
