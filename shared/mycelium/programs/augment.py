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
import re
from collections import Counter
from fractions import Fraction

from ..analysis.numwords import mentions
from ..records.datasets import problem_id
from ..records.programs import Program, Span
from .execute import exact, execute_with_partials


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


def resamplable(program: Program) -> dict[Span, Fraction]:
    """Mention span -> value, for the mentions that may be re-sampled: every quantity the program reads from the
    span is the plain reading of its digits (not "60%" read as 0.6, nor "half"), and no mention the program
    does not read has the same value (rewriting one would leave the text inconsistent)."""
    read = {p.span for p in program.quantities.values()}
    values = Counter(v for m in mentions(program.question) if (m.start, m.end) not in read for v in m.values)
    by_span: dict[Span, set] = {}
    for p in program.quantities.values():
        v = exact(p.value)
        plain = (v is not None and v > 0 and any(c.isdigit() for c in p.span_text or "")
                 and exact((p.span_text or "").replace(",", "")) == v and not values[v])
        by_span.setdefault(tuple(p.span), set()).add(v if plain else None)
    return {span: next(iter(vs)) for span, vs in by_span.items() if len(vs) == 1 and None not in vs}


def _blocked(program: Program) -> str | None:
    """Why no variant of ``program`` can be trusted, or None."""
    if program.pruned:  # the CoT computed things the program does not read: the text may state them
        return "the CoT computes what the program skips"
    stated = {v for m in mentions(program.question) for v in m.values}
    read = {exact(p.value) for p in program.quantities.values()}
    if any((v := exact(n.value)) is not None and v in stated and v not in read for n in program.nodes):
        return "the text states an intermediate result"
    return None


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
    if k <= 0:
        return [], 0, rejected
    free = resamplable(program)
    why = _blocked(program) or (None if free else "no number to re-sample")
    if why:
        rejected[why] += 1
        return [], 0, rejected
    rng = random.Random(f"{program.problem_id}:{seed}")
    quantities = program.quantities
    text_of = {tuple(p.span): p.span_text for p in quantities.values()}
    candidates = [{span: _sample(v, text_of[span], rng) for span, v in free.items()} for _ in range(k * tries)]
    nodes = [n.canonical for n in program.nodes]
    base = {name: p.value for name, p in quantities.items()}

    def spec(cand: dict) -> tuple:
        return nodes, {**base, **{name: str(cand[tuple(p.span)]) for name, p in quantities.items() if tuple(p.span) in cand}}

    original, *results = execute_with_partials([spec({})] + [spec(c) for c in candidates], timeout_s)
    out, seen = [], {program.question}
    for cand, computed in zip(candidates, results):
        if len(out) >= k:
            break
        values = [v for v, _ in computed]
        if any(v is None for v in values):
            rejected["does not compute"] += 1
            continue
        if not all(_in_domain(n.value, v) for n, v in zip(program.nodes, values)):
            rejected["a value left its domain"] += 1
            continue
        if not all(_in_domain(a, b) for (_, pa), (_, pb) in zip(original, computed) for a, b in zip(pa, pb)
                   if a is not None):
            rejected["a division no longer comes out even"] += 1
            continue
        variant = _rewrite(program, cand, values)
        if variant.question in seen:
            rejected["duplicate"] += 1
            continue
        seen.add(variant.question)
        out.append(variant)
    return out, min(len(candidates), len(out) + sum(rejected.values())), rejected


def answer_like(value: str, parent_answer: str) -> str:
    """A variant's answer written the way its parent's was: a decimal where the parent's was one (when the value
    has a finite decimal expansion), else as computed.

    >>> answer_like("3078/5", "623.125"), answer_like("7/3", "623.125"), answer_like("42", "40"), answer_like("-1/1024", "0.5")
    ('615.6', '7/3', '42', '-0.0009765625')
    """
    from .examples import answer_format

    v = exact(value)
    if v is None or v.denominator == 1 or answer_format(parent_answer) != "decimal":
        return value
    d, places = v.denominator, 0
    while d % 10 == 0 or d % 2 == 0 or d % 5 == 0:  # v = m / 10^places exactly, for the least such places
        d, places = (d // 10 if d % 10 == 0 else d // 2 if d % 2 == 0 else d // 5), places + 1
    if d != 1:
        return value
    digits = str(abs(v.numerator) * 10**places // v.denominator).rjust(places + 1, "0")
    return ("-" if v < 0 else "") + digits[:-places] + "." + digits[-places:]


def _rewrite(program: Program, new: dict[Span, Fraction], values: list[str]) -> Program:
    quantities = program.quantities
    text_of = {tuple(p.span): p.span_text for p in quantities.values()}
    reps = [(s, e, _format(v, text_of[(s, e)])) for (s, e), v in new.items()]  # one replacement per mention
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
                v = new.get(tuple(p.span))
                operands.append(p.model_copy(update={"span": span, "span_text": q[span[0]:span[1]],
                                                     "value": str(v) if v is not None else p.value}))
            elif p.kind == "node":
                operands.append(p.model_copy(update={"value": values[p.node]}))
            else:
                operands.append(p)
        nodes.append(n.model_copy(update={"operands": operands, "value": value}))
    return program.model_copy(update={
        "problem_id": problem_id(q), "parent_id": program.problem_id, "source": "augmented", "question": q,
        "answer": answer_like(values[program.answer_node], program.answer), "nodes": nodes,
        "read_spans": [moved(s) for s in program.read_spans], "match_spans": [moved(s) for s in program.match_spans]})


_PLAIN = re.compile(r"\d[\d,]*(\.\d+)?")


def step_variants(question: str, program, k: int, seed: str) -> list[tuple[str, object]]:
    """Up to ``k`` variants of a step program (``programs.steps``) and its problem: the numbers it reads
    re-sampled and written into the text, the program re-computed. By the rules of ``variants``: a value is
    re-sampled only where one mention in digits holds it and no other mention does; nothing is re-sampled where
    the text states an intermediate result; every step must still compute, keep its sign and stay whole where
    it was whole. Returns (question, program) pairs, distinct from the original and from each other."""
    from .steps import NotAProgram, Step, StepProgram, canonical

    ms = mentions(question)
    try:
        results = program.values()
    except NotAProgram:
        return []
    stated = {v for m in ms for v in m.values}
    read = set(program.leaves())
    if k <= 0 or any(v in stated and v not in read for v in results[:-1]):
        return []
    free = {}
    for v in read:
        holders = [m for m in ms if v in m.values]
        if v > 0 and len(holders) == 1 and _PLAIN.fullmatch(holders[0].text) and holders[0].literal == v:
            free[v] = holders[0]
    if not free:
        return []
    rng = random.Random(f"{seed}:{question}")
    out, seen = [], {question}
    for _ in range(4 * k):
        if len(out) >= k:
            break
        new = {v: _sample(v, m.text, rng) for v, m in free.items()}
        ref = lambda x: ("value", new.get(x[1], x[1])) if x[0] == "value" else x  # noqa: E731
        steps = [Step(s.op, ref(s.a), ref(s.b)) for s in program.steps]
        try:
            values = StepProgram(steps, Fraction(0)).values()
        except NotAProgram:
            continue
        if not all(_in_domain(str(a), str(b)) for a, b in zip(results, values)):
            continue
        text = question
        for v, m in sorted(free.items(), key=lambda vm: -vm[1].start):
            text = text[:m.start] + _format(new[v], m.text) + text[m.end:]
        if text in seen:
            continue
        seen.add(text)
        out.append((text, canonical(StepProgram(steps, values[-1]), text)))
    return out
