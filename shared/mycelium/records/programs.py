"""What the label stage writes: the teacher's program for a problem, and the examples of the six specialists.

A program is the DAG of a CoT's calculations: each node one expression, its operands typed pointers into
the problem text (``text:<start>-<end>``), to an earlier node (``node:<k>``) or a constant (``const:<v>``),
and the same node as a canonical expression over named quantities (``n0*n1``, ``r0-n2``). Spans are
character offsets into the problem text, never teacher token indices, so any student tokenizer can use them.

>>> Pointer(kind="node", value="24", node=0).ref
'node:0'
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from .problems import _Artifact

Span = tuple[int, int]
COMPONENTS = ("C1", "C2", "C3", "C4", "C5", "C6")


class Pointer(_Artifact):
    kind: Literal["text", "node", "const"]
    value: str = Field(description="the number the operand stands for (a node's: its value)")
    span: Span | None = Field(None, description="text: the mention's characters in the problem")
    span_text: str | None = None
    node: int | None = None
    name: str | None = Field(None, description="text: the quantity's name in canonical expressions (n0, n1, ...)")

    @property
    def ref(self) -> str:
        if self.kind == "text":
            return f"text:{self.span[0]}-{self.span[1]}"
        return f"node:{self.node}" if self.kind == "node" else f"const:{self.value}"


class Node(_Artifact):
    index: int
    step: int = Field(description="the CoT step the expression is in")
    template: str | None = Field(None, description="its step's IB template (nearest centroid in X)")
    labels: list[str]
    operands: list[Pointer]
    canonical: str = Field(description="the expression over named quantities: n<i> problem numbers, r<k> node results")
    value: str


class Program(_Artifact):
    schema_version: Literal[1] = 1
    problem_id: str
    parent_id: str | None = Field(None, description="augmented: the problem it was made from")
    source: Literal["teacher", "augmented", "student"]
    question: str
    answer: str = Field(description="the dataset's answer (augmented: the program's new value)")
    dataset: Literal["gsm8k", "math", "plain"]
    level: int | None = None
    subject: str | None = None
    nodes: list[Node]
    answer_node: int
    pruned: int = Field(0, description="nodes dropped because the answer does not depend on them")
    heartbeats: int
    read_spans: list[Span] = Field(description="clauses the teacher's attention mapped to the program's steps")
    match_spans: list[Span] = Field(description="clauses holding the numbers the program reads (string match)")

    @property
    def quantities(self) -> dict[str, Pointer]:
        return {p.name: p for n in self.nodes for p in n.operands if p.kind == "text"}


REASONS = ("no gold answer", "no expressions", "a calculation does not compute", "an operand is not grounded",
           "a node is beyond the safe grammar", "answer computed but not at the sink", "wrong final value",
           "no student program computes the answer")


class LabelRecord(_Artifact):
    """``labels/<pid>.json``: the problem's program, or why there is none; its augmented variants."""

    schema_version: Literal[1] = 1
    problem_id: str
    kept: bool
    reason: str | None = Field(None, description="one of REASONS when not kept")
    detail: str | None = None
    program: Program | None = None
    variants: list[Program] = Field(default_factory=list)
    augment_tries: int = 0
    augment_rejected: dict[str, int] = Field(default_factory=dict)


class Provenance(_Artifact):
    dataset: str
    dataset_file: str
    dataset_line: int
    run: str
    teacher: str
    lineage: dict[str, str]
    source: Literal["teacher", "augmented", "student"]


class C1Target(_Artifact):
    """IO tags as character spans: what the teacher's attention read, and the string-match alternative."""

    spans: list[Span]
    match_spans: list[Span]


class C2Target(_Artifact):
    templates: dict[str, int] = Field(description="template -> how many nodes use it (a multiset)")
    heartbeats: int


class C3Node(_Artifact):
    template: str | None
    operands: list[str] = Field(description="typed pointers: text:<s>-<e>, node:<k>, const:<v>")
    canonical: str


class C3Target(_Artifact):
    nodes: list[C3Node]
    quantities: dict[str, Span] = Field(description="n<i> -> its span in the problem text")


class Mention(_Artifact):
    span: Span
    text: str
    role: Literal["operand", "unused", "question"]


class Clause(_Artifact):
    span: Span
    role: Literal["given", "question"]
    math_role: Literal["EQUATION", "CONSTRAINT", "OBJECTIVE"] | None = None


class C4Target(_Artifact):
    mentions: list[Mention]
    clauses: list[Clause]


class C5Target(_Artifact):
    edges: list[tuple[int, int]] = Field(description="(from, to): node ``to`` reads node ``from``'s result")
    order: list[int]


class C6Target(_Artifact):
    format: Literal["integer", "decimal", "fraction", "radical", "expression", "other"]
    answer_node: int


TARGETS = {"C1": C1Target, "C2": C2Target, "C3": C3Target, "C4": C4Target, "C5": C5Target, "C6": C6Target}


class Example(_Artifact):
    """One training example of one specialist: the problem text in, the target out."""

    schema_version: Literal[1] = 1
    component: Literal["C1", "C2", "C3", "C4", "C5", "C6"]
    problem_id: str
    parent_id: str | None = None
    question: str
    target: dict
    provenance: Provenance

    @model_validator(mode="after")
    def _typed_target(self):
        TARGETS[self.component].model_validate(self.target)
        return self
