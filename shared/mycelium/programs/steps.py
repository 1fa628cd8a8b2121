"""Programs as the reader decodes them: a sequence of binary steps over values, each step's operands read from
the problem's number mentions (with the reading the program uses), earlier results, or constants.

A step is ``(op, a, b)`` with ``op`` one of ``+ - * /`` and ``a``, ``b`` operand references:
``("value", v)`` a number the problem or a constant supplies, ``("result", k)`` step k's result. Its value is
computed exactly (``Fraction``), in Python: four operators on rationals need no sandbox, and nothing is parsed
but allow-listed tokens (``safe_math.tokenize``).

Two sources make these programs:

- the teacher's (``from_program``): a labelled ``Program``'s nodes, with the value each operand was *read as*
  (``half`` is 2 where the program divides by 2), so targets keep what the teacher read;
- GSM8K's own calculator annotations (``from_annotations``): ``<<48/2=24>>``, the operands string-matched to the
  problem's numbers, the baseline that shows what the teacher's attention buys.

Either way the steps come out in one canonical order (``canonical``): a topological order that takes, among
the steps ready to run, the one whose problem numbers come first in the text.

>>> p = from_annotations("Natalia sold 48 clips in April and half as many in May. How many in all?",
...                      "48/2 = <<48/2=24>>24\\n48+24 = <<48+24=72>>72\\n#### 72")
>>> [(s.op, s.a, s.b) for s in p.steps], p.answer
([('/', ('value', Fraction(48, 1)), ('value', Fraction(2, 1))), ('+', ('value', Fraction(48, 1)), ('result', 0))], Fraction(72, 1))
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

from ..mathlang.safe_math import ParseError, tokenize

OPS = ("+", "-", "*", "/")
COMMUTATIVE = frozenset("+*")
MAX_ABS = Fraction(10**12)  # a step whose result is larger than this (or whose denominator is) does not compute
_ANNOTATION = re.compile(r"<<([^<>=]+)=([^<>]*)>>")
_FINAL = re.compile(r"####\s*(.+)$", re.MULTILINE)

Ref = tuple[str, object]  # ("value", Fraction) | ("result", int)


class NotAProgram(ValueError):
    """The source has no program of binary steps; ``reason`` is one of REASONS."""

    def __init__(self, reason: str, detail: str = ""):
        self.reason, self.detail = reason, detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


REASONS = ("no annotations", "not binary arithmetic", "an annotation does not compute", "no final answer",
           "the answer is not computed", "a step does not compute")


def as_text(v: Fraction) -> str:
    """An exact value as an answer's text: 72, 5/2 (a fraction stays exact)."""
    return str(v.numerator) if v.denominator == 1 else f"{v.numerator}/{v.denominator}"


def run_slots(steps, values: list[Fraction]) -> list[Fraction] | None:
    """Every result of ``steps`` given as (op index, i, j) over slots: ``values`` first, then each result in
    turn; None where a step reads a slot that does not exist or does not compute."""
    vals, out = list(values), []
    for op, i, j in steps:
        if i >= len(vals) or j >= len(vals):
            return None
        v = apply(OPS[op], vals[i], vals[j])
        if v is None:
            return None
        vals.append(v)
        out.append(v)
    return out


def apply(op: str, a: Fraction, b: Fraction) -> Fraction | None:
    """The exact value of ``a op b``; None where it does not compute (÷ 0, or beyond ``MAX_ABS``)."""
    if op == "/" and b == 0:
        return None
    v = a + b if op == "+" else a - b if op == "-" else a * b if op == "*" else a / b
    return v if abs(v) <= MAX_ABS and v.denominator <= MAX_ABS else None


@dataclass(frozen=True)
class Step:
    op: str
    a: Ref
    b: Ref


@dataclass
class StepProgram:
    steps: list[Step]
    answer: Fraction

    def values(self) -> list[Fraction]:
        """Every step's result, in order (the last is the answer)."""
        out: list[Fraction] = []
        for s in self.steps:
            a, b = (x[1] if x[0] == "value" else out[x[1]] for x in (s.a, s.b))
            v = apply(s.op, a, b)
            if v is None:
                raise NotAProgram("a step does not compute", f"{a} {s.op} {b}")
            out.append(v)
        return out

    def leaves(self) -> list[Fraction]:
        return [x[1] for s in self.steps for x in (s.a, s.b) if x[0] == "value"]


# ---- a binary tree from allow-listed tokens --------------------------------------------------------------

def _tree(text: str, names: dict[str, Ref] | None = None):
    """``text`` as a binary tree: a Ref leaf or (op, left, right). Numbers (``20%`` is 1/5), ``names`` (n0, r1 ...)
    and + - * / with parentheses; anything else is not binary arithmetic."""
    try:
        toks = tokenize(text)
    except ParseError as e:
        raise NotAProgram("not binary arithmetic", e.reason) from None
    pos = 0

    def peek():
        return toks[pos] if pos < len(toks) else (None, None)

    def atom():
        nonlocal pos
        kind, tok = peek()
        pos += 1
        if tok == "(":
            node = expr()
            if peek()[1] != ")":
                raise NotAProgram("not binary arithmetic", f"unbalanced parentheses in {text!r}")
            pos += 1
        elif kind == "num":
            node = ("value", Fraction(tok))
        elif kind == "name" and names is not None and tok in names:
            node = names[tok]
        else:
            raise NotAProgram("not binary arithmetic", f"{tok!r} in {text!r}")
        if peek()[1] == "%":
            pos += 1
            if node[0] != "value":
                raise NotAProgram("not binary arithmetic", f"% after an expression in {text!r}")
            node = ("value", node[1] / 100)
        return node

    def term():
        nonlocal pos
        node = atom()
        while peek()[1] in ("*", "/"):
            op = peek()[1]
            pos += 1
            node = (op, node, atom())
        return node

    def expr():
        nonlocal pos
        node = term()
        while peek()[1] in ("+", "-"):
            op = peek()[1]
            pos += 1
            node = (op, node, term())
        return node

    node = expr()
    if pos != len(toks):
        raise NotAProgram("not binary arithmetic", f"{peek()[1]!r} in {text!r}")
    return node


def _emit(node, steps: list[Step]) -> Ref:
    """Append the tree's steps (left subtree first) and return the reference to its value."""
    if node[0] in ("value", "result"):
        return node
    op, left, right = node
    a, b = _emit(left, steps), _emit(right, steps)
    steps.append(Step(op, a, b))
    return ("result", len(steps) - 1)


def _close(value: Fraction, target: Fraction) -> bool:
    """The annotations round (``100/3=33.33``): a written value stands for an exact one within its rounding."""
    return value == target or abs(value - target) <= Fraction(1, 100) * max(1, abs(target)) / 10


def prune(steps: list[Step], sink: int) -> list[Step]:
    """The steps ``sink`` depends on, renumbered, in their order."""
    need, stack = set(), [sink]
    while stack:
        k = stack.pop()
        if k in need:
            continue
        need.add(k)
        stack += [x[1] for x in (steps[k].a, steps[k].b) if x[0] == "result"]
    keep = sorted(need)
    new = {k: i for i, k in enumerate(keep)}
    ref = lambda x: ("result", new[x[1]]) if x[0] == "result" else x  # noqa: E731
    return [Step(steps[k].op, ref(steps[k].a), ref(steps[k].b)) for k in keep]


def _finish(steps: list[Step], answer: Fraction, text: str, order: str = "canonical") -> StepProgram:
    """The program that computes ``answer``: pruned to the answer step's ancestors, in canonical order (or, for
    the ablation, ``order="written"``: as the solution wrote it)."""
    prog = StepProgram(steps, answer)
    values = prog.values()
    sinks = [k for k, v in enumerate(values) if v == answer] or [k for k, v in enumerate(values) if _close(v, answer)]
    if not sinks:
        raise NotAProgram("the answer is not computed", f"{answer} not among {[str(v) for v in values]}")
    prog = StepProgram(prune(steps, sinks[-1]), values[sinks[-1]])
    return canonical(prog, text) if order == "canonical" else prog


def from_annotations(question: str, solution: str, answer: str | None = None, order: str = "canonical") -> StepProgram:
    """GSM8K's calculator annotations as a step program computing ``answer`` (default: the solution's
    ``#### <answer>`` line). A number in an annotation that an earlier annotation wrote as its result (within
    rounding) is that result; every other number is a value (a mention or a constant, by string match)."""
    from ..mathlang.answers import clean_number

    final = _FINAL.search(solution)
    text = answer if answer is not None else final.group(1) if final else None
    if text is None:
        raise NotAProgram("no final answer")
    try:
        answer = Fraction(clean_number(text.strip()))
    except (ValueError, ZeroDivisionError):
        raise NotAProgram("no final answer", text[:40]) from None
    found = _ANNOTATION.findall(solution)
    if not found:
        raise NotAProgram("no annotations")
    steps: list[Step] = []
    written: list[tuple[Fraction, Ref]] = []  # each annotation's written result and what computes it
    for expr, res in found:
        tree = _tree(expr)
        if tree[0] == "value":
            continue  # "<<24>>": nothing computed

        def relink(node):
            if node[0] == "value":
                hit = next((r for w, r in reversed(written) if w == node[1]), None) or \
                    next((r for w, r in reversed(written) if _close(node[1], w)), None)
                return hit or node
            if node[0] == "result":
                return node
            return (node[0], relink(node[1]), relink(node[2]))

        ref = _emit(relink(tree), steps)
        value = StepProgram(steps, answer).values()[ref[1]]
        try:
            w = Fraction(clean_number(res.strip()))
        except (ValueError, ZeroDivisionError):
            raise NotAProgram("an annotation does not compute", res[:40]) from None
        if not _close(value, w):
            raise NotAProgram("an annotation does not compute", f"{expr} = {value}, written {res}")
        written.append((w, ref))
    if not steps:
        raise NotAProgram("no annotations", "no annotation computes anything")
    return _finish(steps, answer, question, order)


def from_program(program) -> StepProgram:
    """A teacher's ``records.programs.Program`` as steps: each node's canonical expression over ``n<i>`` (the
    value the teacher read there), ``r<k>`` (node k) and constants, binarised left to right."""
    steps: list[Step] = []
    node_ref: dict[int, Ref] = {}
    for k, node in enumerate(program.nodes):
        names: dict[str, Ref] = {f"r{j}": r for j, r in node_ref.items()}
        for p in node.operands:
            if p.kind == "text" and p.name:
                names[p.name] = ("value", Fraction(p.value))
        tree = _tree(node.canonical, names)
        node_ref[k] = _emit(tree, steps) if tree[0] not in ("value", "result") else tree
    sink = node_ref[program.answer_node]
    if sink[0] != "result":
        raise NotAProgram("the answer is not computed", "the answer node computes nothing")
    prog = StepProgram(steps, Fraction(0))
    values = prog.values()
    return canonical(StepProgram(prune(steps, sink[1]), values[sink[1]]), program.question)


def from_slots(steps, values: list[Fraction], text: str) -> StepProgram:
    """Steps as (op index, i, j) over slots (``values``: the problem's candidates, then each result in turn), as
    a program in canonical order: what a beam's candidate becomes when it joins the reader's training."""
    C = len(values)
    ref = lambda x: ("value", values[x]) if x < C else ("result", x - C)  # noqa: E731
    out = [Step(OPS[op], ref(i), ref(j)) for op, i, j in steps]
    if not out:
        raise NotAProgram("the answer is not computed", "no steps")
    results = StepProgram(out, Fraction(0)).values()
    return canonical(StepProgram(prune(out, len(out) - 1), results[-1]), text)


def key(prog: StepProgram) -> tuple:
    """Equal for equivalent programs (the same steps in canonical order over the same values)."""
    return tuple((s.op, s.a, s.b) for s in prog.steps)


def canonical(prog: StepProgram, text: str) -> StepProgram:
    """The same program in canonical order: repeatedly the ready step whose problem numbers are written first
    (values no mention holds, and results, count as after the text), ties in the original order; a commutative
    step's operands in that order too."""
    from ..analysis.numwords import mentions

    first: dict[Fraction, int] = {}
    for m in mentions(text):
        for v in m.values:
            first.setdefault(v, m.start)
    late = len(text) + 1

    def key(x: Ref) -> tuple:
        return (first.get(x[1], late), 0) if x[0] == "value" else (late, 1 + x[1])

    steps, done, order = prog.steps, {}, []
    while len(order) < len(steps):
        ready = [k for k in range(len(steps)) if k not in done and
                 all(x[0] != "result" or x[1] in done for x in (steps[k].a, steps[k].b))]
        k = min(ready, key=lambda k: (min(key(steps[k].a), key(steps[k].b))[0], k))
        done[k] = len(order)
        order.append(k)
    ref = lambda x: ("result", done[x[1]]) if x[0] == "result" else x  # noqa: E731
    out = []
    for k in order:
        s = steps[k]
        a, b = ref(s.a), ref(s.b)
        if s.op in COMMUTATIVE and key(b) < key(a):
            a, b = b, a
        out.append(Step(s.op, a, b))
    return StepProgram(out, prog.answer)
