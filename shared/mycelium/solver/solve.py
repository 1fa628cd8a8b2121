"""The solver: problem text in, answer and trace out, from the six students and sympy. No CoT, no teacher output.

``Solver.solve`` takes a :class:`Question` — an id and the text, a type with no answer or solution field — so
nothing it computes can read a gold answer. Per problem: every student reads the same encoding of the text (the
backbone's frozen layers, computed once); C2 says whether the problem decomposes into known templates (a flat
distribution abstains); C3's distributions are searched best-first (``search.best_first``) for programs; each is
executed in the sandbox (sympy), and the first that computes and whose value C6's answer format accepts is the
answer. C1, C4 and C5 go into the trace, so a wrong answer can be traced to a component.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ..core.errors import ConfigError
from ..records.programs import COMPONENTS
from .search import Candidate, Decisions, SearchStats, best_first


class Question(BaseModel):
    """What the solver may read: an id and the problem text. There is no answer or solution field to leak."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    text: str = Field(min_length=1)


@dataclass
class SolverOptions:
    theta: float = 0.9  # a decision whose top choice is at least this probable is not branched
    width: int = 3  # alternatives kept at a decision below θ
    budget: int = 400  # partial programs expanded at most
    max_programs: int = 24  # complete programs executed at most
    flat: float = 0.2  # C2: abstain when no template is at least this probable
    timeout_s: float = 5.0


@dataclass
class Solution:
    id: str
    answer: str | None
    abstained: bool
    reason: str | None  # why it abstained
    confidence: float  # the accepted program's probability under C3 (0 when abstained)
    program: list[dict] = field(default_factory=list)  # nodes: canonical, operands (text spans), value
    nodes_expanded: int = 0
    programs_tried: int = 0
    ms: float = 0.0
    trace: dict = field(default_factory=dict)  # every component's output and confidence

    def to_json(self) -> dict:
        return {"id": self.id, "answer": self.answer, "abstained": self.abstained, "reason": self.reason,
                "confidence": round(self.confidence, 4), "program": self.program,
                "nodes_expanded": self.nodes_expanded, "programs_tried": self.programs_tried, "ms": round(self.ms, 1),
                "trace": self.trace}


def _log_softmax(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def format_accepts(fmt: str, value: str) -> bool:
    """Whether an answer of C6's format can be ``value`` (an integer count is not 7/2)."""
    if fmt == "integer":
        try:
            return Fraction(value).denominator == 1
        except (ValueError, ZeroDivisionError):
            return False
    return True


class Solver:
    """The six students of ``models_dir`` on ``teacher``'s backbone (loading refuses a mismatch)."""

    def __init__(self, models_dir: Path, teacher, options: SolverOptions | None = None):
        from ..students.data import Vocab
        from ..students.saved import load

        self.teacher, self.options = teacher, options or SolverOptions()
        missing = [c for c in COMPONENTS if not (Path(models_dir) / c / "config.json").is_file()]
        if missing:
            raise ConfigError(f"{models_dir}: no trained {', '.join(missing)} (run `mycelium train`)")
        self.models = {c: load(Path(models_dir) / c, teacher) for c in COMPONENTS}
        encodings = {(m.cfg.train_layers, m.cfg.placeholders) for m in self.models.values()}
        if len(encodings) != 1:
            raise ConfigError(f"{models_dir}: the students read different encodings {sorted(encodings)}")
        (self.train_layers, self.placeholders), = encodings
        self.vocab = Vocab(**self.models["C3"].cfg.vocab)

    def _outputs(self, question: Question):
        import torch

        from ..students.data import make_item
        from ..students.decode import collate, decode
        from ..students.encode import frozen_features

        enc = frozen_features(self.teacher, [question.text], self.train_layers, progress=False,
                              placeholders=self.placeholders)[question.text]
        out, trace = {}, {}
        with torch.no_grad():
            for c, model in self.models.items():
                item = make_item(c, question.text, None, enc, self.vocab)
                raw = model(collate([item], c))
                out[c] = (raw, item)
                if c in ("C1", "C4", "C5"):
                    trace[c] = decode(c, raw, [item], [question.text], self.vocab)[0]
        return out, trace

    def solve(self, question: Question) -> Solution:
        if not isinstance(question, Question):
            raise TypeError(f"the solver reads a Question (id, text), not {type(question).__name__}")
        from ..analysis.numwords import mentions
        from ..students.data import FORMATS

        t0 = time.perf_counter()
        opts, vocab = self.options, self.vocab
        out, trace = self._outputs(question)
        c2 = out["C2"][0]
        probs = 1 / (1 + np.exp(-c2["templates"][0].numpy()))
        trace["C2"] = {"templates": {t: round(float(p), 3) for t, p in zip(vocab.templates, probs) if p >= 0.05},
                       "heartbeats": round(float(c2["heartbeats"][0]) * vocab.heartbeat_scale, 2)}
        c6 = out["C6"][0]
        fmt_p = np.exp(_log_softmax(c6["format"][0].numpy()))
        fmt = FORMATS[int(fmt_p.argmax())]
        trace["C6"] = {"format": fmt, "confidence": round(float(fmt_p.max()), 3)}
        done = lambda **kw: Solution(id=question.id, ms=(time.perf_counter() - t0) * 1000, trace=trace, **kw)  # noqa: E731
        if probs.max() < opts.flat:
            return done(answer=None, abstained=True, reason="cannot decompose: no template is likely (C2 is flat)",
                        confidence=0.0)
        c3 = out["C3"][0]
        found = mentions(question.text)  # the pointers' candidates, as the students' data found them
        spans = [((m.start, m.end), _literal(m)) for m in found]
        decisions = Decisions(count=_log_softmax(c3["count"][0].numpy()), shapes=_log_softmax(c3["shape"][0].numpy()),
                              shape_slots=[min(s.count("{}"), vocab.max_operands) for s in vocab.shapes],
                              pointers=_log_softmax(c3["pointers"][0].numpy()), n_mentions=int(c3["n_mentions"]),
                              n_constants=len(vocab.constants))
        stats = SearchStats()
        tried = 0
        batch: list[Candidate] = []
        for cand in best_first(decisions, opts.theta, opts.width, opts.budget, stats):
            batch.append(cand)
            if len(batch) < 4 and tried + len(batch) < opts.max_programs:
                continue
            tried += len(batch)
            hit = self._first_that_computes(batch, question.text, spans, fmt)
            batch = []
            if hit is not None or tried >= opts.max_programs:
                break
        else:
            hit = self._first_that_computes(batch, question.text, spans, fmt) if batch else None
            tried += len(batch)
        trace["C3"] = {"expanded": stats.expanded, "complete": stats.complete, "pruned": stats.pruned,
                       "branched": stats.branched}
        if hit is None:
            return done(answer=None, abstained=True, reason="cannot decompose: no program computes an answer of "
                        f"format {fmt} within the budget", confidence=0.0, nodes_expanded=stats.expanded,
                        programs_tried=tried)
        cand, nodes, value = hit
        return done(answer=value, abstained=False, reason=None, confidence=math.exp(-cand.cost), program=nodes,
                    nodes_expanded=stats.expanded, programs_tried=tried)

    def _first_that_computes(self, batch: list[Candidate], text: str, spans, fmt: str):
        """``spans``: each candidate mention's span and value, in pointer order."""
        from ..programs.execute import execute

        M, N, vocab = len(spans), self.vocab.max_nodes, self.vocab
        specs, shown = [], []
        for cand in batch:
            nodes, quantities, view = [], {}, []
            for k, (shape, ptrs) in enumerate(cand.program):
                names, operands = [], []
                for p in ptrs:
                    if p < M:
                        (s, e), value = spans[p]
                        names.append(f"n{p}")
                        quantities[f"n{p}"] = str(value)
                        operands.append({"text": text[s:e], "span": [s, e]})
                    elif p < M + N:
                        names.append(f"r{p - M}")
                        operands.append({"node": p - M})
                    else:
                        names.append(vocab.constants[p - M - N])
                        operands.append({"const": vocab.constants[p - M - N]})
                nodes.append(vocab.shapes[shape].format(*names))
                view.append({"canonical": nodes[-1], "operands": operands})
            specs.append((nodes, quantities))
            shown.append(view)
        for cand, view, vals in zip(batch, shown, execute(specs, timeout_s=self.options.timeout_s)):
            if vals and all(v is not None for v in vals) and format_accepts(fmt, vals[-1]):
                for node, v in zip(view, vals):
                    node["value"] = v
                return cand, view, vals[-1]
        return None


def _literal(mention) -> Fraction:
    """The value a mention is read as: its digits as written ("60" of "60%"), else its smallest reading
    ("three fifths": 3/5)."""
    try:
        return Fraction(mention.text.replace(",", ""))
    except (ValueError, ZeroDivisionError):
        return min(mention.values)
