"""Where a step's operands come from, and which problem clauses a step read.

An operand is grounded in the problem's digits, a number word ("half", "twice"), a prior step's result,
or is a constant; a step's most-attended problem tokens are expanded to the clauses that hold them.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from ..mathlang.expressions import Found, Labelled
from ..records.analysis import ExpressionRecord, MappedSpan, Operand
from ..records.capture import Trace
from .numwords import Mention
from .text import tokens_covering


def as_fraction(text: str) -> Fraction | None:
    try:
        return Fraction(text.replace(",", ""))
    except (ValueError, ZeroDivisionError):
        return None


def ground_operand(number: str, step_att: np.ndarray, trace: Trace, ments: list[Mention], prior: list[tuple[Fraction, int]]
            ) -> Operand | None:
    """Where an operand comes from: problem digits, a prior step's result, a number word, or a constant."""
    v = as_fraction(number)
    if v is None:
        return None

    def best(cands: list[Mention]) -> Mention:  # the mention this step attended to most
        scores = [step_att[slice(*tokens_covering(trace.problem_offsets, m.start, m.end))].sum() for m in cands]
        return cands[int(np.argmax(scores))]

    digits = [m for m in ments if v in m.values and any(c.isdigit() for c in m.text)]
    if digits:
        m = best(digits)
        return Operand(text=number, source="text", span=(m.start, m.end), span_text=m.text)
    steps = [k for value, k in prior if value == v]
    if steps:
        return Operand(text=number, source="step", step=steps[-1])
    words = [m for m in ments if v in m.values]
    if words:
        m = best(words)
        return Operand(text=number, source="word", span=(m.start, m.end), span_text=m.text)
    return Operand(text=number, source="constant")


def expression_record(f: Found, lab: Labelled, step_att, trace, ments, prior) -> ExpressionRecord:
    operands = []
    if lab.ok:
        numbers = [n for n in lab.numbers if not (f.kind == "latex" and n == "-1")]
        operands = [op for n in numbers if (op := ground_operand(n, step_att, trace, ments, prior)) is not None]
    matches = None
    if lab.value is not None and f.result_text is not None:
        a, b = as_fraction(lab.value), as_fraction(f.result_text)
        # exact arithmetic: huge values (2^1100) must not overflow a float; written results may be rounded
        matches = None if a is None or b is None else abs(a - b) <= Fraction(1, 10**6) * max(1, abs(b))
    return ExpressionRecord(kind=f.kind, text=f.text, char_start=f.start, char_end=f.end, result_text=f.result_text,
                            ok=lab.ok, reason=lab.reason, sympy=lab.sympy, labels=list(lab.labels), value=lab.value,
                            value_matches_result=matches, operands=operands)


def map_clauses(top: np.ndarray, step_att: np.ndarray, trace: Trace, clauses: list[tuple[int, int]]) -> list[MappedSpan]:
    """Expand the most-attended problem tokens to the clauses that hold them."""
    if not clauses or not len(step_att):
        return []
    starts = np.array([c[0] for c in clauses])
    best: dict[int, float] = {}
    for t in top:
        s = trace.problem_offsets[int(t)][0]
        c = int(np.searchsorted(starts, s, side="right") - 1)
        if c >= 0:
            best[c] = max(best.get(c, 0.0), float(step_att[t]))
    return [MappedSpan(start=clauses[c][0], end=clauses[c][1], text=trace.question[clauses[c][0]:clauses[c][1]],
                       score=round(score, 5)) for c, score in sorted(best.items())]
