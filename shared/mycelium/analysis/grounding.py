"""Where a step's operands come from, and which problem clauses a step read.

An operand is grounded in the problem's digits, a number word ("half", "twice"), an earlier expression's
result (never one of its own step's later ones), or is a constant; where the problem and an earlier result
both hold its value, the computing heads' attention while it is written decides, and the ambiguity is kept.
A step's most-attended problem tokens are expanded to the clauses that hold them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from ..mathlang.expressions import Found, Labelled, calculation_start
from ..records.analysis import ExpressionRecord, MappedSpan, Operand
from ..records.capture import Trace
from .numwords import Mention
from .text import tokens_covering


def as_fraction(text: str) -> Fraction | None:
    try:
        return Fraction(text.replace(",", ""))
    except (ValueError, ZeroDivisionError):
        return None


@dataclass
class Grounding:
    """What grounding reads for one CoT: the problem's number mentions, where the computing heads read the
    problem (IAF above chance per CoT token), and the results of the expressions before the current one."""

    trace: Trace
    mentions: list[Mention]
    reads_problem: np.ndarray  # [T]
    offsets: np.ndarray  # [T, 2] CoT token character offsets
    threshold: float  # above it an ambiguous operand is read from the problem, below from an earlier result
    results: list[tuple[Fraction, int, int]] = field(default_factory=list)  # (value, step, expression), in order

    def attention_at(self, start: int, end: int) -> float:
        """Mean IAF above chance of the CoT tokens that write characters [start, end)."""
        i, j = tokens_covering([tuple(o) for o in self.offsets], start, end)
        window = self.reads_problem[min(i, len(self.reads_problem) - 1):max(j, i + 1)]
        return float(window.mean()) if len(window) else 0.0


def ground_operand(number: str, at: tuple[int, int], step: int, step_att: np.ndarray, g: Grounding) -> Operand | None:
    """Where the operand ``number`` written at CoT characters ``at`` in step ``step`` comes from.

    Problem digits, then number words, are the problem's candidates (the mention this step attended to
    most); the latest earlier expression with that value is the result candidate. When both exist the
    operand is ambiguous and the computing heads decide: reading the problem above ``threshold`` while
    writing it means the problem, else the earlier result. Results of this step's own expression never count.
    """
    v = as_fraction(number)
    if v is None:
        return None

    def best(cands: list[Mention]) -> Mention:  # the mention this step attended to most
        scores = [step_att[slice(*tokens_covering(g.trace.problem_offsets, m.start, m.end))].sum() for m in cands]
        return cands[int(np.argmax(scores))]

    digits = [m for m in g.mentions if v in m.values and any(c.isdigit() for c in m.text)]
    words = [m for m in g.mentions if v in m.values and not any(c.isdigit() for c in m.text)]
    mention = best(digits) if digits else best(words) if words else None
    earlier = [(k, e) for value, k, e in g.results if value == v and k <= step]
    result = earlier[-1] if earlier else None
    ambiguous = mention is not None and result is not None
    attention = round(g.attention_at(*at), 5) if ambiguous else None
    if mention is not None and (result is None or attention >= g.threshold):
        return Operand(text=number, source="text" if digits else "word", span=(mention.start, mention.end),
                       span_text=mention.text, ambiguous=ambiguous, problem_attention=attention)
    if result is not None:
        k, e = result
        return Operand(text=number, source="step" if k < step else "chain", step=k if k < step else None,
                       expression=e, ambiguous=ambiguous, problem_attention=attention)
    return Operand(text=number, source="constant")


def _positions(cot: str, f: Found, numbers: list[str]) -> list[tuple[int, int]]:
    """Where each operand is written in the CoT, in order, from where the CoT starts writing the calculation
    (for an annotation, the arithmetic before its calculator copy); the whole span where it is not found.
    Numbers are matched as written: "1200" matches "1,200", and a number never matches inside a longer one."""
    start = calculation_start(cot, f)
    out, cursor = [], start
    for n in numbers:
        pattern = r"(?<![\d.,])" + ",?".join(re.escape(c) for c in n) + r"(?![\d]|[.,]\d)"
        m = re.compile(pattern).search(cot, cursor, f.end)
        if m is None:
            out.append((start, f.end))
        else:
            out.append(m.span())
            cursor = m.end()
    return out


def expression_record(f: Found, lab: Labelled, step: int, step_att: np.ndarray, g: Grounding) -> ExpressionRecord:
    operands = []
    if lab.ok:
        numbers = [n for n in lab.numbers if not (f.kind == "latex" and n == "-1")]
        at = _positions(g.trace.cot_text, f, numbers)
        operands = [op for n, pos in zip(numbers, at) if (op := ground_operand(n, pos, step, step_att, g)) is not None]
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
