"""The specialists' task metrics, and the trivial predictors every student must beat.

A prediction has the shape of the component's target (``mycelium.records.programs``), so a model, a
baseline and the gold labels are scored by one function. Everything is micro-averaged over a split.

- C1 character F1 of the spans marked as taking part.
- C2 micro-F1 of the templates used (a template is present or not) and the heartbeat count's mean absolute error.
- C3 operand exact match per gold node (the node at the same index reads the same typed pointers, in order)
  and whether the number of nodes is right.
- C4 accuracy of the number mentions' roles (operand / unused / question) and of the clauses' roles.
- C5 edge F1, given the gold nodes (the resolver links the nodes the other components found).
- C6 accuracy of the answer format and of the answer node.

Baselines read the question text alone (and, for majorities, the train split): they say what a component
earns with no learning. Where a gold target is itself a rule of the text (a clause's question role is "in the
last sentence with a '?'"), the rule scores 1.0 and says so; the answer node is always the last one, so
no baseline is scored on it.

>>> score("C5", [{"edges": [[0, 1]], "order": [0, 1]}], [{"edges": [[0, 1], [0, 2]], "order": [0, 1, 2]}])["edge_f1"]
0.6667
"""

from __future__ import annotations

import statistics
from collections import Counter

from ..analysis.numwords import mentions
from ..analysis.text import clause_spans

Target = dict


def _f1(tp: int, fp: int, fn: int) -> float:
    return round(2 * tp / (2 * tp + fp + fn), 4) if tp else 0.0


def _chars(spans) -> set[int]:
    return {i for s, e in spans for i in range(s, e)}


def _sets_f1(pred: list[set], gold: list[set]) -> float:
    tp = sum(len(p & g) for p, g in zip(pred, gold))
    fp = sum(len(p - g) for p, g in zip(pred, gold))
    fn = sum(len(g - p) for p, g in zip(pred, gold))
    return _f1(tp, fp, fn)


def _accuracy(pairs) -> float:
    pairs = list(pairs)
    return round(sum(p == g for p, g in pairs) / len(pairs), 4) if pairs else 0.0


def score(component: str, pred: list[Target], gold: list[Target]) -> dict[str, float]:
    """The component's metrics of ``pred`` against ``gold`` (aligned lists of targets)."""
    if len(pred) != len(gold):
        raise ValueError(f"{component}: {len(pred)} predictions for {len(gold)} examples")
    if component == "C1":
        return {"char_f1": _sets_f1([_chars(p["spans"]) for p in pred], [_chars(g["spans"]) for g in gold])}
    if component == "C2":
        return {"template_micro_f1": _sets_f1([set(p["templates"]) for p in pred], [set(g["templates"]) for g in gold]),
                "heartbeat_mae": round(statistics.fmean(abs(p["heartbeats"] - g["heartbeats"])
                                                        for p, g in zip(pred, gold)), 4) if gold else 0.0}
    if component == "C3":
        pairs = [(p["nodes"][i]["operands"] if i < len(p["nodes"]) else None, n["operands"])
                 for p, g in zip(pred, gold) for i, n in enumerate(g["nodes"])]
        return {"operand_exact_match": _accuracy(pairs),
                "node_count_accuracy": _accuracy((len(p["nodes"]), len(g["nodes"])) for p, g in zip(pred, gold))}
    if component == "C4":
        def roles(t, field):
            return {tuple(x["span"]): x["role"] for x in t[field]}
        mention = [(roles(p, "mentions").get(s), r) for p, g in zip(pred, gold) for s, r in roles(g, "mentions").items()]
        clause = [(roles(p, "clauses").get(s), r) for p, g in zip(pred, gold) for s, r in roles(g, "clauses").items()]
        return {"mention_accuracy": _accuracy(mention), "clause_accuracy": _accuracy(clause)}
    if component == "C5":
        edges = lambda t: {tuple(e) for e in t["edges"]}  # noqa: E731
        return {"edge_f1": _sets_f1([edges(p) for p in pred], [edges(g) for g in gold])}
    if component == "C6":
        out = {"format_accuracy": _accuracy((p["format"], g["format"]) for p, g in zip(pred, gold))}
        if all(p.get("answer_node") is not None for p in pred):
            out["answer_node_accuracy"] = _accuracy((p["answer_node"], g["answer_node"]) for p, g in zip(pred, gold))
        return out
    raise ValueError(f"unknown component {component!r}")


# ---- baselines: the question text alone, plus majorities of the train split


def _numbered_clauses(question: str) -> list[tuple[int, int]]:
    found = [(m.start, m.end) for m in mentions(question)]
    return [c for c in clause_spans(question) if any(c[0] <= s and e <= c[1] for s, e in found)]


class Baselines:
    """Trivial predictors for every component, fitted (majorities) on the train split's targets."""

    def __init__(self, train: dict[str, list[Target]]):
        c2 = train.get("C2", [])
        self.templates = Counter(frozenset(t["templates"]) for t in c2).most_common(1)[0][0] if c2 else frozenset()
        self.heartbeats = round(statistics.median(t["heartbeats"] for t in c2)) if c2 else 0
        c6 = train.get("C6", [])
        self.format = Counter(t["format"] for t in c6).most_common(1)[0][0] if c6 else "integer"

    def predict(self, component: str, example: dict, gold: Target) -> dict[str, Target]:
        """Each named baseline's prediction for one example. ``gold`` is read only for what the component is
        given at evaluation (C5: the gold node count; C4: which mentions and clauses to label)."""
        q = example["question"]
        if component == "C1":
            return {"clauses with a number": {"spans": _numbered_clauses(q), "match_spans": []},
                    "the whole text": {"spans": [(0, len(q))], "match_spans": []}}
        if component == "C2":
            return {"majority template set, median heartbeats":
                    {"templates": {t: 1 for t in self.templates}, "heartbeats": self.heartbeats}}
        if component == "C3":
            return {"chain the numbers in order": {"nodes": _chain_nodes(q), "quantities": {}}}
        if component == "C4":
            return {"every number is an operand; the last '?' sentence is the question":
                    {"mentions": [{**m, "role": "operand"} for m in gold["mentions"]],
                     "clauses": [{**c, "role": _rule_role(q, c["span"])} for c in gold["clauses"]]}}
        if component == "C5":
            n = len(gold["order"])
            return {"chain nodes in order": {"edges": [(k - 1, k) for k in range(1, n)], "order": list(range(n))}}
        if component == "C6":
            # A kept program's answer is its last node by construction (pruning keeps what the sink reads), so
            # the answer node is scored for students, which must find it, and not for a rule that knows it.
            return {"majority format": {"format": self.format, "answer_node": None}}
        raise ValueError(f"unknown component {component!r}")


def _chain_nodes(question: str) -> list[dict]:
    """n0 op n1, then r0 op n2, ...: every number read once, in order (the "chain" program)."""
    spans = [(m.start, m.end) for m in mentions(question) if any(ch.isdigit() for ch in m.text)]
    refs = [f"text:{s}-{e}" for s, e in spans]
    if len(refs) < 2:
        return [{"template": None, "operands": refs, "canonical": ""}] if refs else []
    nodes = [{"template": None, "operands": refs[:2], "canonical": ""}]
    nodes += [{"template": None, "operands": [f"node:{k}", r], "canonical": ""} for k, r in enumerate(refs[2:])]
    return nodes


def _rule_role(question: str, span) -> str:
    from ..programs.examples import question_span

    ask = question_span(question)
    return "question" if ask[0] <= span[0] and span[1] <= ask[1] else "given"

