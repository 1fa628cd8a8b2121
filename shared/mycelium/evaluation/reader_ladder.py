"""The reader's oracle ladder and attribution: how much each of its decisions could still buy, and why each
wrong answer is wrong, against gold step programs (a labelled run's teacher programs, or GSM8K's own
annotations of the evaluation problems). The gold programs are used here only: the solver never sees them.

The ladder decodes greedily with more of the gold program given at each rung, cumulatively:

=================================  ============================================================================
reader                             free decoding (greedy)
+ C1/C6 step count                 STOP is ruled out before the gold program's length and forced at it
+ C2 operations                    each step's operation is the gold step's
+ C3 operands from the text        each step's operands that are problem values (a mention's reading or a
                                   constant) hold the gold step's values; operands that are earlier results
                                   may be any result (the wiring stays the reader's)
gold program (C5 wiring too)       the gold program itself: the ceiling, the share of problems it computes
=================================  ============================================================================

Attribution blames the first of these that disagrees with the gold program on a wrong greedy answer: the
program computed the answer and went on, or stopped before it (``C1/C6 step count``); it reads other problem
values (``C3 operands``); the same values under other operations (``C2 operations``); the same values and
operations, wired differently (``C5 wiring``); no program (``abstained``).
"""

from __future__ import annotations

from collections import Counter
from fractions import Fraction

import torch

from ..programs.execute import exact
from ..programs.steps import COMMUTATIVE, OPS, run_slots
from .evaluate import last_number
from .grading import exact_equal

RUNGS = ("reader", "+ C1/C6 step count", "+ C2 operations", "+ C3 operands from the text")
BLAME = ("C1/C6 step count", "C3 operands", "C2 operations", "C5 wiring", "abstained")


def _constraint(rung: int, items: list, width: int):
    """``greedy``'s ``constrain`` for a batch of items with targets: rung 1 the step count, 2 the operations,
    3 the problem-value operands (cumulative)."""
    def constrain(k: int, logp: torch.Tensor, stop: torch.Tensor):
        logp, stop = logp.clone(), stop.clone()
        S = logp.shape[1]
        for b, it in enumerate(items):
            if k >= len(it.targets):
                logp[b] = float("-inf")  # the gold program has ended: STOP
                continue
            stop[b] = float("-inf")
            if rung == 1:
                continue
            keep = torch.zeros(S, S, len(OPS), dtype=torch.bool)
            for op, i, j in _gold_slots(it, width)[k]:
                if rung == 2:
                    keep[:, :, op] = True
                    continue
                rows = [i] if i < width else list(range(width, S))  # a problem value, or any result
                cols = [j] if j < width else list(range(width, S))
                for x in rows:
                    for y in cols:
                        keep[x, y, op] = True
                        keep[y, x, op] |= OPS[op] in COMMUTATIVE  # a + b is b + a; a - b is not b - a
            logp[b] = logp[b].masked_fill(~keep, float("-inf"))
        return logp, stop

    return constrain


def _values(it, prog, width: int) -> list[Fraction]:
    """Every result of ``prog`` (batch slots) over the item's candidate values; [] where one does not compute."""
    from ..students.reader_train import slot_values

    return run_slots(prog, slot_values(it, width)) or []


def blame(it, prog, gold, width: int) -> str:
    """Why a wrong greedy program is wrong, against the item's gold targets (the module's order)."""
    if not prog:
        return "abstained"
    got = _values(it, prog, width)
    gold_results = _values(it, [tg[0] for tg in _gold_slots(it, width)], width)
    if gold in got[:-1] or (len(prog) < len(it.targets) and set(got) <= set(gold_results)):
        return "C1/C6 step count"
    C = len(it.cand)
    mine_vals = Counter(it.cand[x].value for _, i, j in prog for x in (i, j) if x < C)
    gold_vals = Counter(it.cand[x].value for _, i, j in (tg[0] for tg in it.targets) for x in (i, j) if x < C)
    if mine_vals != gold_vals:
        return "C3 operands"
    if Counter(op for op, _, _ in prog) != Counter(tg[0][0] for tg in it.targets):
        return "C2 operations"
    return "C5 wiring"


def _gold_slots(it, width: int) -> list[list[tuple[int, int, int]]]:
    """The item's targets over a batch's slots (results at ``width`` and on)."""
    from ..students.reader import _slot

    C = len(it.cand)
    return [[(op, _slot(i, C, width), _slot(j, C, width)) for op, i, j in tg] for tg in it.targets]


def reader_ladder(model, labelled: list, encoded: dict, batch_size: int = 64) -> dict:
    """The ladder's answer accuracy per rung over the problems of ``labelled`` whose gold program the reader
    can express (``gold_programs``; why the others cannot be: ``no_gold_program``), the gold programs' own
    share (the ceiling), and the blame counts of the reader's wrong greedy answers."""
    from ..students.reader import collate
    from ..students.reader_train import greedy, items_for

    cfg = model.cfg
    items, kept, dropped = items_for(labelled, encoded, cfg)
    n = max(1, len(items))
    hits = [0] * len(RUNGS)
    ceiling, blamed = 0, Counter()
    model.eval()
    for k in range(0, len(items), batch_size):
        chunk, gold = items[k:k + batch_size], [exact(p.answer) for p in kept[k:k + batch_size]]
        batch = collate(chunk, cfg)
        width = batch["n_cand"]
        for rung in range(len(RUNGS)):
            progs = greedy(model, batch, _constraint(rung, chunk, width) if rung else None)
            for it, prog, g in zip(chunk, progs, gold):
                got = _values(it, prog, width)
                right = bool(got) and g is not None and got[-1] == g
                hits[rung] += right
                if rung == 0 and not right:
                    blamed[blame(it, prog, g, width)] += 1
        for it, g in zip(chunk, gold):
            res = _values(it, [tg[0] for tg in _gold_slots(it, width)], width)
            ceiling += bool(res) and res[-1] == g
    last = sum(bool(exact_equal(p.answer, last_number(p.question) or "")) for p in kept)
    return {"problems": len(labelled), "gold_programs": len(items), "no_gold_program": dict(dropped),
            "ladder": {r: h / n for r, h in zip(RUNGS, hits)} | {"gold program": ceiling / n},
            "last_number_same_problems": last / n, "blame": {b: blamed.get(b, 0) for b in BLAME}}
