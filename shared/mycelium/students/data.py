"""Targets in character spans -> what a student's heads predict, on the tokens of its own backbone.

The vocabularies (templates, expression shapes, constants, answer formats) come from the train split and are
saved with the model. A node's *shape* is its canonical expression with every operand replaced by a slot
(``r0 * n1`` -> ``{} * {}``); its operands are pointers to the problem's number mentions, earlier nodes or
constants, one per slot. The mentions a pointer may choose are found in the text (``numwords.mentions``), the
same way the teacher's operands were grounded, so a student needs no label to know its candidates.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from ..analysis.numwords import mentions
from ..analysis.text import clause_spans
from ..records.programs import C6Target
from .encode import Encoded, tokens_of_span

ROLES = ("operand", "unused", "question")
CLAUSE_ROLES = ("given", "question")
FORMATS = tuple(C6Target.model_fields["format"].annotation.__args__)
IGNORE = -100
_OPERAND = re.compile(r"^(n\d+|r\d+|\d*\.?\d+(?:/\d+)?)$")


def shape_of(canonical: str) -> str:
    """The node's expression with its operands as slots: ``r0 * n1`` -> ``{} * {}``."""
    return " ".join("{}" if _OPERAND.match(t) else t for t in canonical.split())


@dataclass
class Vocab:
    templates: list[str]
    shapes: list[str]
    constants: list[str]
    max_nodes: int
    max_operands: int
    heartbeat_scale: float = 1.0

    @classmethod
    def fit(cls, targets: dict[str, list[dict]], max_nodes: int = 12, min_shape_count: int = 2) -> "Vocab":
        c2, c3 = targets.get("C2", []), targets.get("C3", [])
        templates = sorted({t for x in c2 for t in x["templates"]} | {n["template"] or "untemplated"
                                                                       for x in c3 for n in x["nodes"]})
        shapes = Counter(shape_of(n["canonical"]) for x in c3 for n in x["nodes"])
        constants = sorted({o.split(":", 1)[1] for x in c3 for n in x["nodes"] for o in n["operands"]
                            if o.startswith("const:")})
        slots = max((len(n["operands"]) for x in c3 for n in x["nodes"]), default=2)
        beats = [x["heartbeats"] for x in c2]
        return cls(templates=templates or ["untemplated"],
                   shapes=[s for s, n in shapes.most_common() if n >= min_shape_count] or ["{} + {}"],
                   constants=constants, max_nodes=max_nodes, max_operands=max(1, slots),
                   heartbeat_scale=float(max(1.0, np.std(beats))) if beats else 1.0)


def candidate_mentions(question: str) -> list[tuple[int, int]]:
    """The number mentions an operand pointer may choose, by character span, in text order."""
    return [(m.start, m.end) for m in mentions(question)]


@dataclass
class Item:
    """One example on the backbone's tokens: the inputs every head shares, and this component's targets."""

    features: np.ndarray  # [T, d] float16
    offsets: np.ndarray
    mention_tokens: list[tuple[int, int]]  # candidate mentions as token ranges
    clause_tokens: list[tuple[int, int]] = field(default_factory=list)
    y: dict = field(default_factory=dict)
    skipped_slots: int = 0


def make_item(component: str, question: str, target: dict | None, enc: Encoded, vocab: Vocab) -> Item:
    """The example's inputs (and targets, when ``target`` is given) for ``component``."""
    spans = candidate_mentions(question)
    item = Item(enc.features, enc.offsets, [tokens_of_span(enc.offsets, s) for s in spans])
    clauses = clause_spans(question) if component == "C4" else []
    item.clause_tokens = [tokens_of_span(enc.offsets, c) for c in clauses]
    if target is None:
        return item
    T = len(enc.ids)
    if component == "C1":
        tags = np.zeros(T, dtype=np.float32)
        for s in target["spans"]:
            i, j = tokens_of_span(enc.offsets, s)
            tags[i:j] = 1.0
        item.y = {"tags": tags}
    elif component == "C2":
        multi = np.zeros(len(vocab.templates), dtype=np.float32)
        for t in target["templates"]:
            if t in vocab.templates:
                multi[vocab.templates.index(t)] = 1.0
        item.y = {"templates": multi, "heartbeats": float(target["heartbeats"])}
    elif component == "C3":
        item.y = _program_targets(target, spans, vocab, item)
    elif component == "C4":
        role_of = {tuple(m["span"]): m["role"] for m in target["mentions"]}
        clause_role = {tuple(c["span"]): c["role"] for c in target["clauses"]}
        item.y = {"roles": np.array([ROLES.index(role_of[s]) if s in role_of else IGNORE for s in spans]),
                  "clause_roles": np.array([CLAUSE_ROLES.index(clause_role[c]) if c in clause_role else IGNORE
                                            for c in clauses])}
    elif component == "C5":
        n = min(len(target["order"]), vocab.max_nodes)
        adj = np.zeros((vocab.max_nodes, vocab.max_nodes), dtype=np.float32)
        for a, b in target["edges"]:
            if a < n and b < n:
                adj[a, b] = 1.0
        item.y = {"n_nodes": n, "adjacency": adj}
    elif component == "C6":
        item.y = {"format": FORMATS.index(target["format"]), "n_nodes": min(target["answer_node"] + 1, vocab.max_nodes)}
    else:
        raise ValueError(f"unknown component {component!r}")
    return item


def pad_pointers(pointers: np.ndarray, n_mentions: int, width: int) -> np.ndarray:
    """Pointer classes of a problem with ``n_mentions`` mentions, in a batch padded to ``width`` mention slots:
    the node and constant classes move up by the padding."""
    p = pointers.copy()
    shift = (p != IGNORE) & (p >= n_mentions)
    p[shift] += width - n_mentions
    return p


def program_targets(question: str, target: dict, vocab: Vocab) -> dict:
    """C3's targets for a C3Target (as a dict) without an encoding: the pointer classes, shapes and count."""
    item = Item(np.zeros((0, 0), dtype=np.float16), np.zeros((0, 2)), [])
    return _program_targets(target, candidate_mentions(question), vocab, item) | {"skipped_slots": item.skipped_slots}


def _program_targets(target: dict, spans: list[tuple[int, int]], vocab: Vocab, item: Item) -> dict:
    """C3: node count, and per node its template, shape and one pointer per slot (IGNORE where unlearnable).

    Pointer classes: [0, M) the mentions, [M, M + max_nodes) earlier nodes, then the constants."""
    index_of_span = {s: i for i, s in enumerate(spans)}
    nodes = target["nodes"][:vocab.max_nodes]
    M, N = len(spans), vocab.max_nodes
    shape = np.full(N, IGNORE)
    template = np.full(N, IGNORE)
    pointers = np.full((N, vocab.max_operands), IGNORE)
    for k, node in enumerate(nodes):
        s = shape_of(node["canonical"])
        shape[k] = vocab.shapes.index(s) if s in vocab.shapes else IGNORE
        t = node["template"] or "untemplated"
        template[k] = vocab.templates.index(t) if t in vocab.templates else IGNORE
        for j, ref in enumerate(node["operands"][:vocab.max_operands]):
            kind, _, rest = ref.partition(":")
            if kind == "text":
                a, b = map(int, rest.split("-"))
                cls = index_of_span.get((a, b))
                if cls is None:  # a span the text's mentions do not have (e.g. part of a number word)
                    cls = next((i for i, (x, y) in enumerate(spans) if x <= a and b <= y), None)
            elif kind == "node":
                cls = M + int(rest) if int(rest) < k else None
            else:
                cls = M + N + vocab.constants.index(rest) if rest in vocab.constants else None
            if cls is None:
                item.skipped_slots += 1
            pointers[k, j] = IGNORE if cls is None else cls
    return {"n_nodes": len(nodes), "shape": shape, "template": template, "pointers": pointers}
