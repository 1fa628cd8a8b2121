"""A problem's program from its analysed steps: nodes, typed operands, canonical expressions; checked by executing it.

Every parsed expression of the CoT with a value is a node. An operand grounded in the problem becomes a
quantity ``n<i>`` (a pointer to its characters), one grounded in an earlier expression's result a node
reference ``r<k>``, one that is neither a constant from the config's list; anything else is not grounded
and the problem has no program. The program is executed in the sandbox from its canonical expressions (so
what a student would write is what is checked); its last node is the answer, which must equal the dataset's
(exact rational comparison, else the grader). Nodes the answer does not depend on are pruned.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

from ..analysis.text import clause_spans
from ..core.config import LabelConfig
from ..mathlang.answers import clean_number, grade
from ..mathlang.latex import latex_to_plain
from ..mathlang.safe_math import ParseError, parse, tokenize
from ..records.analysis import SignalsRecord, StepRecord
from ..records.problems import Problem
from ..records.programs import Node, Pointer, Program
from .execute import execute, exact, same_value


class Rejected(Exception):
    """No program: ``reason`` is one of records.programs.REASONS, ``detail`` says which part."""

    def __init__(self, reason: str, detail: str = ""):
        self.reason, self.detail = reason, detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


@dataclass
class Draft:
    """A node before pruning: its tokens, and each number token's operand (a quantity key, a node, or a constant)."""

    expression: int  # CoT-wide expression index
    step: int
    labels: list[str]
    tokens: list[tuple[str, str]]
    operands: list[tuple[str, object]] = field(default_factory=list)  # ("text", (span, value, text)) | ("node", k) | ("const", v)
    value: str = ""


def _tokens(kind: str, text: str) -> list[tuple[str, str]]:
    plain = latex_to_plain(text) if kind == "latex" else text
    return tokenize(plain)


def drafts(steps: list[StepRecord], cfg: LabelConfig) -> list[Draft]:
    """The CoT's computing expressions as draft nodes, in CoT order; Rejected when one cannot be a node."""
    constants = {Fraction(str(c)) for c in cfg.constants}
    exprs = [(s, e) for s in steps for e in s.expressions]  # CoT order: the analysis's expression indices
    if not exprs:
        raise Rejected("no expressions")
    node_of: dict[int, int] = {}
    out: list[Draft] = []
    for index, (step, e) in enumerate(exprs):
        if not e.ok or e.value is None:
            continue
        try:
            tokens = _tokens(e.kind, e.text)
        except ParseError as err:
            raise Rejected("a node is beyond the safe grammar", f"{e.text!r}: {err.reason}") from None
        numbers = [t for k, t in tokens if k == "num"]
        if len(numbers) != len(e.operands):
            raise Rejected("a node is beyond the safe grammar", f"{e.text!r}: {len(numbers)} numbers, "
                                                               f"{len(e.operands)} grounded operands")
        draft = Draft(expression=index, step=step.index, labels=list(e.labels), tokens=tokens, value=e.value)
        for op in e.operands:
            if op.source in ("text", "word"):
                draft.operands.append(("text", (tuple(op.span), op.text, op.span_text)))
            elif op.source in ("step", "chain"):
                if op.expression not in node_of:
                    raise Rejected("a calculation does not compute", f"{e.text!r} reads expression {op.expression}")
                draft.operands.append(("node", node_of[op.expression]))
            elif exact(op.text) in constants:
                draft.operands.append(("const", op.text))
            else:
                raise Rejected("an operand is not grounded", f"{op.text} in {e.text!r}")
        node_of[index] = len(out)
        out.append(draft)
    if not out:
        raise Rejected("a calculation does not compute", "no expression has a value")
    return out


def canonical(d: Draft, name_of) -> str:
    """The draft's expression with each number replaced by its operand's name (``name_of(operand)``)."""
    operands = iter(d.operands)
    return " ".join(name_of(next(operands)) if k == "num" else t for k, t in d.tokens)


def _key(ref) -> tuple:
    """One quantity per mention and value: "1.5" and "1.50" of one span are one; "60%" read as 60 and as 0.6 two."""
    span, value = ref[0], ref[1]
    v = exact(value)
    return (span, v if v is not None else value)


def _quantity_names(ds: list[Draft]) -> dict[tuple, tuple[str, str]]:
    """Quantity key -> (name, the value as the CoT first wrote it)."""
    names: dict[tuple, tuple[str, str]] = {}
    for d in ds:
        for kind, ref in d.operands:
            if kind == "text" and _key(ref) not in names:
                names[_key(ref)] = (f"n{len(names)}", ref[1])
    return names


def _namer(names: dict[tuple, tuple[str, str]], node_names: dict[int, str]):
    def name_of(operand) -> str:
        kind, ref = operand
        return names[_key(ref)][0] if kind == "text" else node_names[ref] if kind == "node" else str(ref)
    return name_of


def specs_of(ds: list[Draft]) -> tuple[list[str], dict[str, str]]:
    """What the executor runs for these drafts: canonical expressions, and each quantity's value."""
    names = _quantity_names(ds)
    name_of = _namer(names, {k: f"r{k}" for k in range(len(ds))})
    quantities = {name: value for name, value in names.values()}
    return [canonical(d, name_of) for d in ds], quantities


def matches_gold(value: str | None, gold: str) -> bool:
    """The dataset's answer: exactly as a rational when both are numbers, else by the grader (math-verify)."""
    if value is None:
        return False
    g = exact(clean_number(gold))
    if g is not None and exact(value) is not None:
        return g == exact(value)
    if g is not None:
        return same_value(value, str(g), rel=1e-6)
    correct, _ = grade(gold, value)
    return bool(correct)


def ancestors(ds: list[Draft], sink: int) -> list[int]:
    """The nodes the sink depends on, itself included, in node order."""
    need, stack = set(), [sink]
    while stack:
        k = stack.pop()
        if k not in need:
            need.add(k)
            stack.extend(ref for kind, ref in ds[k].operands if kind == "node")
    return sorted(need)


def build_program(problem: Problem, steps: list[StepRecord], signals: SignalsRecord, cfg: LabelConfig,
                  templates=None) -> Program:
    """The problem's program, or Rejected with the reason. ``templates``: a TemplateIndex (nodes get their step's)."""
    if not problem.answer:
        raise Rejected("no gold answer")
    ds = drafts(steps, cfg)
    nodes, quantities = specs_of(ds)
    (values,) = execute([(nodes, quantities)], timeout_s=cfg.sandbox_timeout_s)
    for d, v in zip(ds, values):
        if not same_value(v, d.value):  # what the canonical expression computes is what the CoT computed
            raise Rejected("a calculation does not compute", f"{' '.join(t for _, t in d.tokens)!r}: {v} != {d.value}")
    sink = len(ds) - 1
    if not matches_gold(values[sink], problem.answer):
        if any(matches_gold(v, problem.answer) for v in values[:-1]):
            raise Rejected("answer computed but not at the sink", f"sink {values[sink]}, answer {problem.answer}")
        raise Rejected("wrong final value", f"{values[sink]} vs {problem.answer}")
    keep = ancestors(ds, sink)
    return assemble(problem, steps, signals, [ds[k] for k in keep], {old: new for new, old in enumerate(keep)},
                    len(ds) - len(keep), templates)


def assemble(problem: Problem, steps: list[StepRecord], signals: SignalsRecord, ds: list[Draft],
             renumber: dict[int, int], pruned: int, templates=None) -> Program:
    names = _quantity_names(ds)
    name_of = _namer(names, {old: f"r{new}" for old, new in renumber.items()})
    by_step = {s.index: s for s in steps}
    template_of = {}
    if templates is not None:
        import numpy as np

        used = sorted({d.step for d in ds})
        ids, _ = templates.assign(np.stack([by_step[k].embedding.to_array() for k in used]))
        template_of = dict(zip(used, ids))
    nodes = []
    for new, d in enumerate(ds):
        operands = []
        for kind, ref in d.operands:
            if kind == "text":
                span, value, text = ref
                name, first = names[_key(ref)]
                operands.append(Pointer(kind="text", value=first, span=span, span_text=text, name=name))
            elif kind == "node":
                operands.append(Pointer(kind="node", value=ds[renumber[ref]].value, node=renumber[ref]))
            else:
                operands.append(Pointer(kind="const", value=str(ref)))
        nodes.append(Node(index=new, step=d.step, template=template_of.get(d.step), labels=d.labels,
                          operands=operands, canonical=canonical(d, name_of), value=d.value))
    clauses = clause_spans(problem.question)
    read = sorted({(m.start, m.end) for k in sorted({d.step for d in ds}) for m in by_step[k].mapped_spans})
    texts = [p.span for n in nodes for p in n.operands if p.kind == "text"]
    match = sorted({c for c in clauses for s in texts if c[0] <= s[0] and s[1] <= c[1]})
    return Program(problem_id=problem.id, source="teacher", question=problem.question, answer=problem.answer,
                   dataset=problem.source.dataset, level=problem.level, subject=problem.subject, nodes=nodes,
                   answer_node=len(nodes) - 1, pruned=pruned, heartbeats=signals.heartbeats,
                   read_spans=read, match_spans=match)

