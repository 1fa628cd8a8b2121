"""Find the arithmetic a chain of thought writes, and label it safely.

Three kinds, each with its character span in the CoT:

- ``annotation``: GSM8K calculator annotations ``<<48/2=24>>``
- ``inline``: written arithmetic ``48 / 2 = 24`` (outside annotations)
- ``latex``: equations in ``$...$``, ``$$...$$``, ``\\[...\\]``, ``\\(...\\)`` (MATH solutions)

Plain arithmetic goes through :mod:`mycelium.mathlang.safe_math`; LaTeX through the
latex2sympy2_extended grammar parser. Both parse *and* evaluate inside one
sandboxed call per chunk (``core.sandbox``: wall-time, CPU-time and memory limits),
falling back to one call per expression when the batch hits a limit, so a hostile
string costs at most its own time limit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from . import safe_math  # noqa: F401 - sympy is imported here once, so each forked child has it
from ..core.sandbox import map_sandboxed

# Possessive quantifiers: every piece matches one way only, so a long chain without "=" fails in
# linear time instead of backtracking exponentially (this runs outside the sandbox).
_NUM = r"\$?+\d[\d,]*+(?:\.\d++)?+%?+"
_OPERAND = rf"(?:\(\s*+)*+{_NUM}(?:\s*+\))*+"
_OP = r"(?:[-+*/×÷]|x(?=\s*+\(*+\$?+\d))"
_CHAIN = rf"{_OPERAND}(?:\s*+{_OP}\s*+{_OPERAND})++"
# "a op b [= c op d ...] = result": the first expression as written, the last number as its result
# (never a number that an operator follows: in "= 16 + 20" 16 is not the result). Only the
# "= chain" repeat may backtrack, once per "=", so matching stays linear in the line's length.
_INLINE = re.compile(
    rf"(?<![\w.])(?P<expr>{_CHAIN})(?:\s*+=\s*+{_CHAIN})*\s*+=\s*+\$?+"
    rf"(?P<res>-?\d[\d,]*+(?:\.\d++)?+(?:/\d++)?+)(?![\d]|[.,]\d)(?!\s*+{_OP}\s*+\(*+\$?+\d)"
)
_MAX_LINE = 2000  # longer lines are not searched for inline arithmetic
_ANNOTATION = re.compile(r"<<(?P<expr>[^<>=]+)=(?P<res>[^<>]*)>>(?P<after>-?[\d,]*\.?\d*)")
# Inline $...$ by pandoc's rule, so currency is not math: the opening $ is followed by a non-space,
# the closing $ follows a non-space and is not followed by a digit ("costs $5 and $10" is not math).
_LATEX = re.compile(r"\$\$(?P<a>.+?)\$\$|\\\[(?P<b>.+?)\\\]|\\\((?P<c>.+?)\\\)|\$(?!\s)(?P<d>[^$\n]+?)(?<!\s)\$(?!\d)", re.S)
_LATEX_COMMAND = re.compile(r"\\[A-Za-z]+|\$\$|\^\{")
_LATEX_OPS = re.compile(r"[-+*/^]|\\cdot|\\times|\\div|\\frac|\\dfrac|\\sqrt|\\binom|!")
_LATEX_SPLIT = re.compile(r"=|\\le(?:q)?\b|\\ge(?:q)?\b|\\approx|<|>")


@dataclass(frozen=True)
class Found:
    kind: str  # annotation | inline | latex
    start: int  # span of the whole computation in the CoT
    end: int
    text: str  # the expression to parse
    result_text: str | None  # what the CoT says it equals


def find_expressions(cot: str, limit: int = 64) -> list[Found]:
    """All computations written in ``cot``, in order of position."""
    found: list[Found] = []
    masked = list(cot)
    for m in _ANNOTATION.finditer(cot):
        found.append(Found("annotation", m.start(), m.end("res") + 2, m.group("expr").strip(), m.group("res").strip()))
        masked[m.start():m.end()] = "#" * (m.end() - m.start())  # its result echo too: "<<48/2=24>>24"
    masked_text = "".join(masked)
    # Text without LaTeX commands (GSM8K) uses $ for money only: "$12 ... $20" is not math.
    latex_spans = _LATEX.finditer(masked_text) if _LATEX_COMMAND.search(cot) else ()
    for m in latex_spans:
        body = next(g for g in m.groups() if g is not None)
        for part in _latex_parts(body):
            found.append(Found("latex", m.start(), m.end(), part[0], part[1]))
        masked[m.start():m.end()] = "#" * (m.end() - m.start())
    masked_text = "".join(masked)
    for line in re.finditer(r"[^\n]+", masked_text):  # inline arithmetic never spans lines
        if len(line.group()) > _MAX_LINE:
            continue
        for m in _INLINE.finditer(masked_text, line.start(), line.end()):
            expr = m.group("expr").strip().replace("$", "")
            found.append(Found("inline", m.start("expr"), m.end("res"), expr, m.group("res").replace(",", "")))
    found.sort(key=lambda f: (f.start, f.end))
    return found[:limit]


# The arithmetic a line writes just before a calculator annotation: "48/2 = <<48/2=24>>" writes "48/2 = ".
_WRITTEN = re.compile(rf"(?P<expr>{_CHAIN})\s*+=?\s*+\$?+\s*+$")


def calculation_start(cot: str, f: Found) -> int:
    """Where the CoT starts writing the computation ``f`` (a character offset).

    For a calculator annotation: the arithmetic written just before it on its line ("48/2 = <<48/2=24>>24"
    starts at "48"), else the annotation itself; for inline arithmetic and LaTeX, the expression's start.
    """
    if f.kind != "annotation":
        return f.start
    line_start = cot.rfind("\n", 0, f.start) + 1
    if f.start - line_start > _MAX_LINE:
        return f.start
    m = _WRITTEN.search(cot, line_start, f.start)
    return m.start("expr") if m else f.start


def _latex_parts(body: str) -> list[tuple[str, str | None]]:
    """The computation side(s) of a LaTeX equation chain and the value it states, if numeric."""
    sides = [s.strip() for s in _LATEX_SPLIT.split(body) if s.strip()]
    if not sides:
        return []
    result = sides[-1] if len(sides) > 1 and re.fullmatch(r"-?\d+(?:\.\d+)?|\\[dt]?frac\{\d+\}\{\d+\}", sides[-1]) else None
    work = [s for s in sides if _LATEX_OPS.search(s)]
    if not work:
        return []
    return [(max(work, key=len), result)]


@dataclass(frozen=True)
class Labelled:
    ok: bool
    sympy: str | None = None
    labels: tuple[str, ...] = ()
    value: str | None = None
    numbers: tuple[str, ...] = ()
    reason: str | None = None


def _label_one(kind: str, text: str) -> Labelled:
    import sympy

    from .latex import latex_to_plain
    from .safe_math import ParseError, op_labels, parse, value_of

    try:
        if kind == "latex":
            try:  # the operations as written, operands in text order
                parsed = parse(latex_to_plain(text), variables=True)
                expr, numbers = parsed.expr, tuple(parsed.numbers())
            except ParseError:  # beyond plain arithmetic: the LaTeX grammar (it evaluates numbers)
                from latex2sympy2_extended import latex2sympy

                expr = latex2sympy(text)
                numbers = tuple(str(a) for a in sorted(expr.atoms(sympy.Number), key=str))
        else:
            parsed = parse(text)
            expr, numbers = parsed.expr, tuple(parsed.numbers())
    except ParseError as e:
        return Labelled(False, reason=e.reason)
    except Exception as e:  # noqa: BLE001 - the LaTeX grammar raises many kinds
        return Labelled(False, reason=f"{kind}: {type(e).__name__}: {str(e)[:120]}")
    if not isinstance(expr, sympy.Expr):
        return Labelled(False, reason=f"not an arithmetic expression ({type(expr).__name__})")
    value, _ = value_of(expr)
    return Labelled(True, sympy=str(expr)[:300], labels=tuple(op_labels(expr)), value=value, numbers=numbers)


def _label_many(items: list[tuple[str, str]]) -> list[Labelled]:
    return [_label_one(k, t) for k, t in items]


def label_expressions(found: list[Found], timeout_s: float = 2.0, mem_mb: int = 512) -> list[Labelled]:
    """Parse, label and evaluate each expression in the sandbox."""
    items = [(f.kind, f.text) for f in found]
    if not items:
        return []
    if any(kind == "latex" for kind, _ in items):
        import latex2sympy2_extended  # noqa: F401 - imported once here, so each forked child has it (~0.5 s)
    return map_sandboxed(_label_many, items, lambda err: Labelled(False, reason=err), timeout_s=timeout_s,
                         batch_timeout_s=timeout_s + 0.5 * len(items), mem_mb=mem_mb)
