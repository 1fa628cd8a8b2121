"""The six specialists' examples of one program, all in character spans of the problem text.

C1 which text takes part (attention-mapped clauses; the string-match clauses beside them), C2 the templates
used and the heartbeat count, C3 each node's template, typed operands and canonical expression, C4 the
role of every number mention and clause, C5 the dependency edges and an order, C6 the answer's format and node.

The question sentence is the last sentence with a question mark (else the last sentence). MATH clause roles
are rules, stated here: the question is the OBJECTIVE, a clause with an equation an EQUATION, one with an
inequality or a condition word (at least, positive, integer, ...) a CONSTRAINT.
"""

from __future__ import annotations

import re
from collections import Counter

from ..analysis.numwords import mentions
from ..analysis.text import clause_spans, sentence_starts
from ..mathlang.answers import clean_number
from ..records.programs import (C1Target, C2Target, C3Node, C3Target, C4Target, C5Target, C6Target, Clause, Example,
                                Mention, Program, Provenance, Span)

_CONSTRAINT = re.compile(r"[<>≤≥]|\\(?:le|leq|ge|geq|ne|neq|lt|gt)(?![a-zA-Z])|\b(at least|at most|positive|negative|integer|distinct|"
                         r"nonnegative|non-negative|greater|less|between)\b", re.IGNORECASE)


def merge_spans(spans) -> list[Span]:
    out: list[list[int]] = []
    for s, e in sorted(spans):
        if out and s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return [tuple(x) for x in out]


def question_span(text: str) -> Span:
    """The question sentence: the last sentence holding a '?', else the last sentence."""
    starts = list(sentence_starts(text)) + [len(text)]
    sentences = [(a, b) for a, b in zip(starts, starts[1:]) if text[a:b].strip()]
    if not sentences:
        return (0, len(text))
    asking = [s for s in sentences if "?" in text[s[0]:s[1]]]
    return (asking or sentences)[-1]


def answer_format(answer: str) -> str:
    r"""integer, decimal, fraction (a mixed number too), radical, expression or other; typesetting ignored.

    >>> [answer_format(a) for a in ["\\$18.90", "5\\%", "\\frac12", "1\\frac{1}{2}", "3\\sqrt{2}", "10^{3}", "x+1"]]
    ['decimal', 'integer', 'fraction', 'fraction', 'radical', 'expression', 'expression']
    """
    a = clean_number(answer).replace(" ", "")
    if re.fullmatch(r"-?\d+", a):
        return "integer"
    if re.fullmatch(r"-?\d*\.\d+", a):
        return "decimal"
    frac = r"\\[dt]?frac(?:\{-?\d+\}|\d)(?:\{\d+\}|\d)"
    if re.fullmatch(rf"-?(\d*{frac}|\d+/\d+)", a):
        return "fraction"
    if re.fullmatch(r"-?\d+\^\{?\d+\}?", a):
        return "expression"
    if "\\sqrt" in a:
        return "radical"
    if re.search(r"[a-zA-Z\\]", a):
        return "expression"
    return "other"


def targets(program: Program) -> dict[str, object]:
    q = program.question
    inside = lambda span, outer: outer[0] <= span[0] and span[1] <= outer[1]  # noqa: E731
    ask = question_span(q)
    used = [p.span for n in program.nodes for p in n.operands if p.kind == "text"]
    roles = []
    for m in mentions(q):
        span = (m.start, m.end)
        role = ("operand" if any(s[0] < m.end and m.start < s[1] for s in used)
                else "question" if inside(span, ask) else "unused")
        roles.append(Mention(span=span, text=m.text, role=role))
    clauses = []
    for c in clause_spans(q):
        role = "question" if inside(c, ask) else "given"
        math_role = None
        if program.dataset == "math":
            text = q[c[0]:c[1]]
            math_role = ("OBJECTIVE" if role == "question" else "CONSTRAINT" if _CONSTRAINT.search(text)
                         else "EQUATION" if "=" in text else None)
        clauses.append(Clause(span=c, role=role, math_role=math_role))
    edges = sorted({(p.node, n.index) for n in program.nodes for p in n.operands if p.kind == "node"})
    return {
        "C1": C1Target(spans=merge_spans(program.read_spans), match_spans=merge_spans(program.match_spans)),
        "C2": C2Target(templates=dict(Counter(n.template or "untemplated" for n in program.nodes)),
                       heartbeats=program.heartbeats),
        "C3": C3Target(nodes=[C3Node(template=n.template, operands=[p.ref for p in n.operands], canonical=n.canonical)
                              for n in program.nodes],
                       quantities={name: p.span for name, p in program.quantities.items()}),
        "C4": C4Target(mentions=roles, clauses=clauses),
        "C5": C5Target(edges=edges, order=[n.index for n in program.nodes]),
        "C6": C6Target(format=answer_format(program.answer), answer_node=program.answer_node),
    }


def examples(program: Program, provenance: Provenance, components=None) -> list[Example]:
    """One example per specialist for ``program`` (per one of ``components``, when given)."""
    return [Example(component=c, problem_id=program.problem_id, parent_id=program.parent_id, question=program.question,
                    target=t.model_dump(mode="json"), provenance=provenance.model_copy(update={"source": program.source}))
            for c, t in targets(program).items() if components is None or c in components]
