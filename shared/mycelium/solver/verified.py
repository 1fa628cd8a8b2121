"""A student's program as a label: one of the solver's programs that executes to a training problem's answer.

Execution is the verifier: the search proposes programs from the students' distributions, the sandbox runs them,
and the most probable one whose value equals the dataset's answer (training split only) becomes a
:class:`~mycelium.records.programs.Program` with source ``student``, in the form the label stage writes, so the
same code makes its examples. Nodes the answer does not read are pruned, quantities are renamed ``n0, n1, ...``
in order of first use (as the teacher's are), a node's template is C3's own guess for that node.

Only the targets execution checks are taught from it: C3 (the program), C4 (which numbers it reads), C5 (its
edges) and C6 (the answer's format and node). C1 learns which clauses the teacher's *attention* read and C2 the
teacher's templates and heartbeats; a student program has neither, so it gives them no example
(:data:`VERIFIED`). Its ``read_spans`` are its string-match clauses and its ``heartbeats`` its node count.
"""

from __future__ import annotations

from ..analysis.text import clause_spans
from ..programs.build import matches_gold
from ..records.problems import Problem
from ..records.programs import Node, Pointer, Program
from ..students.data import shape_of

#: The specialists a student program teaches: the ones whose targets its execution verifies.
VERIFIED = ("C3", "C4", "C5", "C6")


def first_correct(computed: list, gold: str) -> tuple[int, list[dict]] | None:
    """The rank and nodes of the most probable computed program whose answer is ``gold``, or None."""
    for rank, (_, nodes, value) in enumerate(computed):
        if matches_gold(value, gold):
            return rank, nodes
    return None


def student_program(problem: Problem, nodes: list[dict], templates: list[str]) -> Program:
    """The solver's nodes (``Solution.program``: canonical, operands, value) as a Program of source ``student``."""
    need, stack = set(), [len(nodes) - 1]
    while stack:  # the nodes the answer depends on
        k = stack.pop()
        if k not in need:
            need.add(k)
            stack.extend(o["node"] for o in nodes[k]["operands"] if "node" in o)
    keep = sorted(need)
    renumber = {old: new for new, old in enumerate(keep)}
    quantity: dict[tuple[int, int], str] = {}
    out = []
    for new, old in enumerate(keep):
        node, operands, names = nodes[old], [], []
        for o in node["operands"]:
            if "span" in o:
                span = tuple(o["span"])
                name = quantity.setdefault(span, f"n{len(quantity)}")
                operands.append(Pointer(kind="text", value=o["value"], span=span,
                                        span_text=o["text"], name=name))
            elif "node" in o:
                name = f"r{renumber[o['node']]}"
                operands.append(Pointer(kind="node", value=nodes[o["node"]]["value"], node=renumber[o["node"]]))
            else:
                name = o["const"]
                operands.append(Pointer(kind="const", value=o["const"]))
            names.append(name)
        out.append(Node(index=new, step=new, template=templates[old] if old < len(templates) else None, labels=[],
                        operands=operands, canonical=shape_of(node["canonical"]).format(*names), value=node["value"]))
    texts = [p.span for n in out for p in n.operands if p.kind == "text"]
    match = sorted({c for c in clause_spans(problem.question) for s in texts if c[0] <= s[0] and s[1] <= c[1]})
    return Program(problem_id=problem.id, source="student", question=problem.question, answer=problem.answer,
                   dataset=problem.source.dataset, level=problem.level, subject=problem.subject, nodes=out,
                   answer_node=len(out) - 1, pruned=len(nodes) - len(keep), heartbeats=len(out),
                   read_spans=match, match_spans=match)

