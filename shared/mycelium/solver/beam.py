"""Beam search over the reader's steps, executed as the programs grow.

Each beam entry is a partial program: its steps, the exact value of every candidate and result (``Fraction``),
its log-probability and its row of the reader's context. Each round every entry's steps are scored at once; the
best extensions are executed, and what cannot compute is dropped by the checks below, each a named rule. A
program ends at STOP; finished programs of equal value are merged (their probabilities pooled), and the search
ends when no open entry can beat the best finished one.

>>> from fractions import Fraction as F
>>> [name for name, rule in STEP_CHECKS.items() if rule("/", F(3), F(0), None, [])]
['divides by zero', 'does not compute']
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction

import torch

from ..programs.steps import OPS, apply

# (op, a, b, value or None, the program's earlier steps as (op, a, b) values) -> True when the step is dropped
STEP_CHECKS = {
    "divides by zero": lambda op, a, b, v, done: op == "/" and b == 0,
    "does not compute": lambda op, a, b, v, done: v is None,
    "repeats a step": lambda op, a, b, v, done: (op, a, b) in done,
    "multiplies or divides by one": lambda op, a, b, v, done: op in "*/" and b == 1 or op == "*" and a == 1,
    "adds or subtracts zero": lambda op, a, b, v, done: op in "+-" and b == 0 or op == "+" and a == 0,
}
# (format, the program's steps as (op, i, j), number of problem candidates, answer) -> True when dropped at STOP
STOP_CHECKS = {
    "a result is unused": lambda fmt, steps, C, v: any(
        C + k not in {x for _, i, j in steps for x in (i, j)} for k in range(len(steps) - 1)),
    "not a whole count": lambda fmt, steps, C, v: fmt == "integer" and v.denominator != 1,
    "a negative count": lambda fmt, steps, C, v: fmt == "integer" and v < 0,
}


@dataclass
class Entry:
    logp: float
    steps: list[tuple[int, int, int]]  # (op, i, j) over candidate slots
    values: list[Fraction]  # candidates' values, then each step's result
    row: int


@dataclass
class Finished:
    value: Fraction
    logp: float  # the best program's
    mass: float  # the pooled probability of every finished program of this value
    steps: list[tuple[int, int, int]]
    values: list[Fraction]


@dataclass
class BeamResult:
    finished: list[Finished]  # best first (by the best program's probability)
    pruned: dict[str, int] = field(default_factory=dict)
    rounds: int = 0
    fmt: str | None = None


def _take(ctx: dict, rows: list[int]) -> dict:
    idx = torch.tensor(rows, dtype=torch.long)
    return {k: (v[idx] if isinstance(v, torch.Tensor) else v) for k, v in ctx.items()}


@torch.no_grad()
def beam_search(model, batch: dict, values: list[Fraction], fmt: str | None, width: int = 10,
                expand: int = 4) -> BeamResult:
    """The finished programs of one problem (``batch`` of one item; ``values`` its candidates' values). ``fmt``
    None: the reader's own format head says which answers a STOP may end on."""
    ctx = model.start(batch)
    if fmt is None:
        fmt = model.cfg.formats[int(model.format(ctx["q"])[0].argmax())]
    C, K = ctx["C"], model.cfg.max_steps
    values = list(values) + [Fraction(0)] * (C - len(values) + K)  # padding, then the result slots
    beams = [Entry(0.0, [], values, 0)]
    finished: dict[Fraction, Finished] = {}
    pruned: dict[str, int] = {}
    rounds = 0
    for k in range(K + 1):
        if not beams:
            break
        best_done = max((f.logp for f in finished.values()), default=-math.inf)
        if max(b.logp for b in beams) < best_done:
            break  # log-probabilities only fall: no open program can beat the best finished one
        rounds += 1
        logp, stop = model.scores(ctx)  # [n, S, S, ops], [n]
        n, S = logp.shape[0], logp.shape[1]
        base = torch.tensor([b.logp for b in beams])
        for r, b in enumerate(beams):  # STOP
            if math.isfinite(float(stop[r])):
                _finish(b, float(base[r] + stop[r]), fmt, C, finished, pruned)
        if k == K:
            break
        total = (base[:, None] + logp.flatten(1)).flatten()
        top = torch.topk(total, min(int(torch.isfinite(total).sum()), width * expand))
        nxt: list[tuple[Entry, tuple[int, int, int]]] = []
        done = [[(OPS[o], b.values[x], b.values[y]) for o, x, y in b.steps] for b in beams]  # each entry's steps
        for score, flat in zip(top.values.tolist(), top.indices.tolist()):
            if len(nxt) >= width:
                break
            row, rest = divmod(flat, S * S * len(OPS))
            i, rest = divmod(rest, S * len(OPS))
            j, op = divmod(rest, len(OPS))
            b = beams[row]
            a_val, b_val = b.values[i], b.values[j]
            v = apply(OPS[op], a_val, b_val)
            failed = next((name for name, rule in STEP_CHECKS.items() if rule(OPS[op], a_val, b_val, v, done[row])),
                          None)
            if failed:
                pruned[failed] = pruned.get(failed, 0) + 1
                continue
            vals = list(b.values)
            vals[C + len(b.steps)] = v
            nxt.append((Entry(score, b.steps + [(op, i, j)], vals, row), (op, i, j)))
        if not nxt:
            break
        ctx = _take(ctx, [e.row for e, _ in nxt])
        ch = torch.tensor([c for _, c in nxt], dtype=torch.long)
        ctx = model.advance(ctx, ch[:, 0], ch[:, 1], ch[:, 2])
        beams = [Entry(e.logp, e.steps, e.values, r) for r, (e, _) in enumerate(nxt)]
    return BeamResult(sorted(finished.values(), key=lambda f: -f.logp), pruned, rounds, fmt)


def _finish(b: Entry, logp: float, fmt: str | None, C: int, finished: dict, pruned: dict) -> None:
    if not b.steps:
        return
    v = b.values[C + len(b.steps) - 1]
    failed = next((name for name, rule in STOP_CHECKS.items() if rule(fmt, b.steps, C, v)), None)
    if failed:
        pruned[failed] = pruned.get(failed, 0) + 1
        return
    f = finished.get(v)
    if f is None:
        finished[v] = Finished(v, logp, math.exp(logp), b.steps, b.values)
    else:
        f.mass += math.exp(logp)
        if logp > f.logp:
            f.logp, f.steps, f.values = logp, b.steps, b.values
