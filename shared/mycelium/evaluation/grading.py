"""Grading: math-verify (gold first; its own timeout off, the sandbox's process timeout on) and an exact sympy check.

The verdict is math-verify's; where it cannot grade (it parses nothing, or the child hits a limit) the exact
check's. Both are recorded, and where they disagree the pair is kept for the report's disagreement log, so a
grader bug shows up as a number rather than as a silently wrong accuracy. The exact check reads both answers
with the safe grammar (never plain ``sympify``): typesetting is dropped (``\\$1,200`` -> ``1200``,
``12\\text{ cm}`` -> ``12``), LaTeX rewritten (``\\frac{1}{2}`` -> ``((1)/(2))``) and the difference simplified.

>>> [g.correct for g in grade_many([("72", "72.0"), ("\\\\frac{1}{2}", "0.5"), ("5", "6"), ("5", None)])]
[True, True, False, False]
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..core.sandbox import map_sandboxed
from ..mathlang.answers import plain_answer, verify_equal


@dataclass(frozen=True)
class Graded:
    correct: bool
    verify: bool | None  # math-verify's verdict (None: it could not grade)
    exact: bool | None  # the exact sympy check's (None: an answer is not in the safe grammar)

    @property
    def disagree(self) -> bool:
        return self.verify is not None and self.exact is not None and self.verify != self.exact


def _exact_value(text: str):
    from fractions import Fraction

    import sympy

    from ..mathlang.latex import latex_to_plain
    from ..mathlang.safe_math import ParseError, parse

    plain = plain_answer(text)
    if plain is None:
        return None
    try:
        f = Fraction(plain)
        return sympy.Rational(f.numerator, f.denominator)
    except (ValueError, ZeroDivisionError):
        pass
    try:
        return parse(latex_to_plain(plain) if "\\" in plain else plain).expr
    except (ParseError, ValueError, TypeError):
        return None


def exact_equal(gold: str, pred: str) -> bool | None:
    """Whether the two answers are the same number or expression (None: one is beyond the safe grammar)."""
    import sympy

    g, p = _exact_value(gold), _exact_value(pred)
    if g is None or p is None:
        return None
    try:
        return bool(sympy.simplify(g - p) == 0)
    except (TypeError, ValueError, AttributeError):
        return None


def as_latex(pred: str) -> str:
    """The solver writes sympy's syntax (``sqrt(2)/2``, ``3*pi``); math-verify reads LaTeX or plain numbers."""
    import sympy

    if "\\" in pred or not re.search(r"[A-Za-z]", pred):
        return pred
    value = _exact_value(pred)
    return pred if value is None else sympy.latex(value)


def _grade_pairs(pairs: list[tuple[str, str]]) -> list[tuple[bool | None, bool | None]]:
    out = []
    for gold, pred in pairs:
        try:
            verified = verify_equal(gold, as_latex(pred))
        except Exception:  # noqa: BLE001 - a parser failure is "cannot grade", not a crash of the batch
            verified = None
        out.append((verified, exact_equal(gold, pred)))
    return out


def grade_many(pairs: list[tuple[str | None, str | None]], timeout_s: float = 10.0,
               chunk: int = 64) -> list[Graded]:
    """(gold, prediction) pairs -> verdicts. No prediction (an abstention) is wrong; a pair whose text is the same
    number after typesetting is dropped is right without a parser. The rest are graded in sandboxed children,
    ``chunk`` pairs per child (a hostile pair costs its own ``timeout_s``)."""
    out: list[Graded | None] = [None] * len(pairs)
    todo = []
    for i, (gold, pred) in enumerate(pairs):
        if gold is None:
            raise ValueError(f"pair {i}: no gold answer (evaluation needs one per problem)")
        if pred is None:
            out[i] = Graded(False, None, None)
        elif plain_answer(gold) is not None and plain_answer(gold) == plain_answer(pred):
            out[i] = Graded(True, True, True)
        else:
            todo.append(i)
    for start in range(0, len(todo), chunk):
        idx = todo[start:start + chunk]
        results = map_sandboxed(_grade_pairs, [pairs[i] for i in idx], lambda err: (None, None),
                                timeout_s=timeout_s, batch_timeout_s=timeout_s * 4, mem_mb=1024)
        for i, (verified, exact) in zip(idx, results):
            verdict = verified if verified is not None else bool(exact)
            out[i] = Graded(verdict, verified, exact)
    return out  # type: ignore[return-value]
