"""Augmentation: re-sample the numbers a kept program reads from the problem, rewrite them, re-execute.

Only numbers written in digits are re-sampled (a word like "half" keeps its value), and not one whose value
another, unread mention also has (rewriting one would leave the text inconsistent). A variant is kept only
if every node still computes and stays in the original's domain: the same sign, and integral where the
original was (a division that came out even must still come out even). A variant keeps its parent's
structure exactly: same nodes, operands and canonical expressions; only numbers, spans and values move.

>>> shift_of([(4, 6, "123")])(10)
11
"""

from __future__ import annotations

import random
from collections import Counter
from fractions import Fraction

from ..analysis.numwords import mentions
from ..records.datasets import problem_id
from ..records.programs import Program, Span
from .execute import exact, execute


def shift_of(replacements: list[tuple[int, int, str]]):
    """Map a character offset of the old text to the new one, given (start, end, new text) replacements."""
    reps = sorted(replacements)

    def shift(pos: int) -> int:
        delta = 0
        for s, e, new in reps:
            if e <= pos:
                delta += len(new) - (e - s)
            elif s <= pos:
                return s + delta  # inside a rewritten number: its start
        return pos + delta

    return shift


def _format(value: Fraction, like: str) -> str:
    places = len(like.split(".")[1]) if "." in like else 0
    text = f"{float(value):.{places}f}" if places else str(int(value))
    if "," in like and not places:
        text = f"{int(value):,}"
    return text


def _sample(value: Fraction, like: str, rng: random.Random) -> Fraction:
    places = len(like.split(".")[1]) if "." in like else 0
    scaled = int(value * 10**places)
    lo, hi = max(1, scaled // 2), max(scaled + 2, 2 * scaled)
    new = scaled
    while new == scaled:
        new = rng.randint(lo, hi)
    return Fraction(new, 10**places)


def resamplable(program: Program) -> dict[str, Fraction]:
    """Quantity name -> value, for the quantities that may be re-sampled."""
    read = {p.span for p in program.quantities.values()}
    values = Counter(v for m in mentions(program.question) if (m.start, m.end) not in read for v in m.values)
    out = {}
    for name, p in program.quantities.items():
        v = exact(p.value)
        if (v is not None and v > 0 and any(c.isdigit() for c in p.span_text or "")
                and exact((p.span_text or "").replace(",", "")) == v and not values[v]):
            out[name] = v
    return out


def _in_domain(old: str, new: str | None) -> bool:
    a, b = exact(old), exact(new)
    if b is None:
        return False
    if a is None:
        return True
    return (a > 0) == (b > 0) and (a < 0) == (b < 0) and (a.denominator != 1 or b.denominator == 1)


def variants(program: Program, k: int, tries: int, seed: int = 0, timeout_s: float = 5.0
             ) -> tuple[list[Program], int, Counter]:
    """Up to ``k`` variants of ``program``; how many samples were tried; why the others were rejected."""
    rejected: Counter = Counter()
    free = resamplable(program)
    if k <= 0:
        return [], 0, rejected
    if not free:
        rejected["no number to re-sample"] += 1
        return [], 0, rejected
    rng = random.Random(f"{program.problem_id}:{seed}")
    quantities = program.quantities
    candidates = []
    for _ in range(k * tries):
        new = {name: _sample(v, quantities[name].span_text, rng) for name, v in free.items()}
        candidates.append(new)
    nodes = [n.canonical for n in program.nodes]
    base = {name: p.value for name, p in quantities.items()}
    results = execute([(nodes, {**base, **{n: str(v) for n, v in c.items()}}) for c in candidates], timeout_s)
    out, seen = [], {program.question}
    for cand, values in zip(candidates, results):
        if len(out) >= k:
            break
        if not all(_in_domain(n.value, v) for n, v in zip(program.nodes, values)):
            rejected["a value left its domain" if all(v is not None for v in values) else "does not compute"] += 1
            continue
        variant = _rewrite(program, cand, values)
        if variant.question in seen:
            rejected["duplicate"] += 1
            continue
        seen.add(variant.question)
        out.append(variant)
    return out, min(len(candidates), len(out) + sum(rejected.values())), rejected


def _rewrite(program: Program, new: dict[str, Fraction], values: list[str]) -> Program:
    quantities = program.quantities
    reps = [(p.span[0], p.span[1], _format(new[name], p.span_text)) for name, p in quantities.items() if name in new]
    q = program.question
    for s, e, text in sorted(reps, reverse=True):
        q = q[:s] + text + q[e:]
    shift = shift_of(reps)
    moved = lambda span: (shift(span[0]), shift(span[1]))  # noqa: E731
    nodes = []
    for n, value in zip(program.nodes, values):
        operands = []
        for p in n.operands:
            if p.kind == "text":
                span = moved(p.span)
                text = q[span[0]:span[1]]
                operands.append(p.model_copy(update={"span": span, "span_text": text,
                                                     "value": str(new[p.name]) if p.name in new else p.value}))
            elif p.kind == "node":
                operands.append(p.model_copy(update={"value": values[p.node]}))
            else:
                operands.append(p)
        nodes.append(n.model_copy(update={"operands": operands, "value": value}))
    answer = values[program.answer_node]
    return program.model_copy(update={
        "problem_id": problem_id(q), "parent_id": program.problem_id, "source": "augmented", "question": q,
        "answer": answer, "nodes": nodes, "read_spans": [moved(s) for s in program.read_spans],
        "match_spans": [moved(s) for s in program.match_spans]})
