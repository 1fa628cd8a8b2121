"""Best-first (A*) search over the program decoder's (C3's) choices: the most probable programs first.

A program is a sequence of decisions: the node count, then for each node its shape (``{} * {}``) and one operand
per slot (a number mention, an earlier node, a constant). C3 gives a distribution for each. A decision whose top
choice has probability ≥ θ is taken as is (no branching: an easy problem is one pass); below θ its top
``width`` alternatives are kept. Partial programs are expanded in order of their total −log p, so the first
complete programs out are the most probable ones the budget allows; the caller executes them and keeps the first
that computes (sympy prunes the rest) and that the answer-format check accepts.

Structural rules prune before anything runs: a node may read only earlier nodes; every node but the last must be
read by a later one (the teacher's programs are pruned to the answer's ancestors, so a student's must be too).

>>> import numpy as np
>>> d = Decisions(count=np.log([0.0001, 0.9999]), shapes=np.log([[0.9, 0.1]]), shape_slots=[2, 1],
...               pointers=np.log([[[0.8, 0.2], [0.3, 0.7]]]), n_mentions=2, n_constants=0)
>>> [c.program for c in best_first(d, theta=0.95, width=2, budget=10)][:2]
[[(0, (0, 1))], [(0, (0, 0))]]
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

import numpy as np

Choice = tuple[int, tuple[int, ...]]  # (shape index, one pointer class per slot)


@dataclass
class Decisions:
    """C3's log-probabilities for one problem. Pointer classes: [0, M) mentions, [M, M + N) nodes, then constants."""

    count: np.ndarray  # [N + 1] over node counts 0..N
    shapes: np.ndarray  # [N, S]
    shape_slots: list[int]  # slots of each shape
    pointers: np.ndarray  # [N, max_slots, M + N + C]
    n_mentions: int
    n_constants: int

    @property
    def max_nodes(self) -> int:
        return self.shapes.shape[0]


@dataclass(order=True)
class Candidate:
    cost: float
    program: list[Choice] = field(compare=False)
    count: int = field(compare=False)


@dataclass
class SearchStats:
    expanded: int = 0
    complete: int = 0
    pruned: int = 0
    branched: int = 0  # decisions below θ, where alternatives were kept


def _options(logp: np.ndarray, theta: float, width: int, allowed: np.ndarray | None = None) -> list[tuple[int, float]]:
    """(index, −log p) of the choices kept for one decision: the top one alone if p ≥ θ, else the top ``width``."""
    lp = logp.astype(np.float64).copy()
    if allowed is not None:
        lp[~allowed] = -np.inf
    order = [int(i) for i in np.argsort(-lp) if np.isfinite(lp[i])]
    if not order:
        return []
    if np.exp(lp[order[0]]) >= theta:
        return [(order[0], -float(lp[order[0]]))]
    return [(i, -float(lp[i])) for i in order[:width]]


def _reads_every_node(program: list[Choice], n_mentions: int, max_nodes: int) -> bool:
    read = {p - n_mentions for _, ptrs in program for p in ptrs if n_mentions <= p < n_mentions + max_nodes}
    return all(k in read for k in range(len(program) - 1))


def best_first(d: Decisions, theta: float = 0.9, width: int = 3, budget: int = 200,
               stats: SearchStats | None = None):
    """Complete programs in order of −log p (a generator), within ``budget`` expansions of partial programs.

    A*: a partial program's priority is its cost plus the cheapest cost of the decisions it still has to make
    (each remaining decision's best kept choice; every decision's options depend only on its position, so this
    is exact for the most probable completion and never overestimates). The first complete program therefore
    comes out after as many expansions as it has decisions, and the rest follow in order of probability."""
    stats = stats if stats is not None else SearchStats()
    N, M = d.max_nodes, d.n_mentions
    allowed = np.zeros((N, d.pointers.shape[-1]), dtype=bool)
    allowed[:, :M] = True
    allowed[:, M + N:M + N + d.n_constants] = True
    for k in range(N):
        allowed[k, M:M + k] = True  # earlier nodes only
    shape_opts = [_options(d.shapes[k], theta, width) for k in range(N)]
    slot_opts = [[_options(d.pointers[k, j], theta, width, allowed[k]) for j in range(d.pointers.shape[1])]
                 for k in range(N)]
    slot_min = [[min((c for _, c in o), default=np.inf) for o in row] for row in slot_opts]

    def rest_of_node(k: int, shape: int, j: int) -> float:  # the cheapest way to fill slots j.. of node k
        return sum(slot_min[k][i] for i in range(j, d.shape_slots[shape]))

    node_min = [min((c + rest_of_node(k, s, 0) for s, c in shape_opts[k]), default=np.inf) for k in range(N)]
    before = np.concatenate([[0.0], np.cumsum(node_min)])  # before[n] - before[k]: nodes k..n-1 at their cheapest

    heap: list[tuple[float, int, float, list[Choice], int, list[int]]] = []
    tie = 0

    def push(cost: float, done: list[Choice], n: int, partial: list[int]) -> None:
        nonlocal tie
        k = len(done)
        h = before[n] - before[k] if not partial else \
            rest_of_node(k, partial[0], len(partial) - 1) + before[n] - before[k + 1]
        if np.isfinite(h):
            heapq.heappush(heap, (cost + h, tie, cost, done, n, partial))
            tie += 1

    counts = _options(d.count[:N + 1], theta, width, allowed=np.arange(min(len(d.count), N + 1)) >= 1)
    stats.branched += len(counts) > 1
    for n, c in counts:
        push(c, [], n, [])
    while heap and stats.expanded < budget:
        _, _, cost, done, n, partial = heapq.heappop(heap)
        stats.expanded += 1
        k = len(done)
        if k == n:
            if _reads_every_node(done, M, N):
                stats.complete += 1
                yield Candidate(cost, done, n)
            else:
                stats.pruned += 1
            continue
        if not partial:  # the node's shape
            stats.branched += len(shape_opts[k]) > 1
            for s, c in shape_opts[k]:
                push(cost + c, done, n, [s])
            continue
        shape, slots = partial[0], partial[1:]
        j = len(slots)
        if j == d.shape_slots[shape]:
            push(cost, done + [(shape, tuple(slots))], n, [])
            continue
        stats.branched += len(slot_opts[k][j]) > 1
        for p, c in slot_opts[k][j]:
            push(cost + c, done, n, [*partial, p])
