"""The solver: problem text in, answer and trace out, from the six students and sympy. No CoT, no teacher output.

``Solver.solve`` takes a :class:`Question` — an id and the text, a type with no answer or solution field — so
nothing it computes can read a gold answer. Per problem: every student reads the same encoding of the text (the
backbone's frozen layers, computed once); C2 says whether the problem decomposes into known templates (a flat
distribution abstains); C3's distributions are searched best-first (``search.best_first``) for programs; each is
executed in the sandbox (sympy), and the first that computes and whose value C6's answer format accepts is the
answer. C1, C4 and C5 go into the trace, so a wrong answer can be traced to a component.
"""

from __future__ import annotations

import itertools
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
    vote: int = 1  # programs that compute, pooled by their answer (1: the first that computes is the answer)
    fuse: float = 0.0  # > 0: C1, C4 and C5 reweight C3's operand pointers with this weight (fused_pointers)
    flat: float = 0.2  # C2: abstain when no template is at least this probable
    timeout_s: float = 5.0
    beam: int = 10  # the reader's beam width (a models directory with a reader)
    choice: str = "auto"  # the reader's pick with a verifier beside it: verifier, weighted, beam or auto (val's)
    verifier: bool = True  # False: the reader alone, even with a verifier beside it


@dataclass
class Solution:
    id: str
    answer: str | None
    abstained: bool
    reason: str | None  # why it abstained
    confidence: float  # the answer's programs' pooled probability under C3 (0 when abstained)
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


@dataclass
class Reading:
    """What the students read from one problem: C2's top template probability, C6's format, C3's decisions, the
    number mentions the pointers point at, the trace of every component, and the time it took."""

    question: Question
    trace: dict
    template_p: float
    fmt: str
    decisions: Decisions
    spans: list  # ((start, end), value) per mention, in pointer order
    ms: float
    node_templates: list[str] = field(default_factory=list)  # C3's template for each node slot (its argmax)


def _log_sigmoid(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return -np.logaddexp(0.0, -x)


def fused_pointers(pointers: np.ndarray, out: dict, mention_tokens: list[tuple[int, int]], weight: float) -> np.ndarray:
    """C3's pointer logits [N, S, M + N + C] with the other students' say added (a product of experts): a mention
    C1 marks as read and C4 calls an operand, and an earlier node C5 says this node reads, become likelier."""
    M, N = int(out["C3"]["n_mentions"]), pointers.shape[0]
    pointers = pointers.astype(np.float64).copy()
    tags = _log_sigmoid(out["C1"]["tags"][0].numpy())  # [T]
    roles = _log_softmax(out["C4"]["roles"][0].numpy())[:, 0]  # [M]: log p(operand), ROLES[0]
    for m, (i, j) in enumerate(mention_tokens[:M]):
        read = float(tags[i:j].mean()) if j > i else 0.0
        pointers[:, :, m] += weight * (read + (float(roles[m]) if m < len(roles) else 0.0))
    edges = _log_sigmoid(out["C5"]["edges"][0].numpy())  # [N, N]: a -> b, node b reads node a
    for k in range(N):
        pointers[k, :, M:M + k] += weight * edges[:k, k]
    return pointers


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

    def read(self, question: Question) -> Reading:
        """Every student's output for the problem's text (one encoding of it, one forward pass each)."""
        if not isinstance(question, Question):
            raise TypeError(f"the solver reads a Question (id, text), not {type(question).__name__}")
        import torch

        from ..analysis.numwords import mentions
        from ..students.data import FORMATS, make_item
        from ..students.decode import collate, decode
        from ..students.encode import frozen_features

        t0, vocab = time.perf_counter(), self.vocab
        enc = frozen_features(self.teacher, [question.text], self.train_layers, progress=False,
                              placeholders=self.placeholders)[question.text]
        out, trace = {}, {}
        with torch.no_grad():
            for c, model in self.models.items():
                item = make_item(c, question.text, None, enc, vocab)
                out[c] = model(collate([item], c))
                if c in ("C1", "C4", "C5"):
                    trace[c] = decode(c, out[c], [item], [question.text], vocab)[0]
        probs = 1 / (1 + np.exp(-out["C2"]["templates"][0].numpy()))
        trace["C2"] = {"templates": {t: round(float(p), 3) for t, p in zip(vocab.templates, probs) if p >= 0.05},
                       "heartbeats": round(float(out["C2"]["heartbeats"][0]) * vocab.heartbeat_scale, 2)}
        fmt_p = np.exp(_log_softmax(out["C6"]["format"][0].numpy()))
        fmt = FORMATS[int(fmt_p.argmax())]
        trace["C6"] = {"format": fmt, "confidence": round(float(fmt_p.max()), 3)}
        c3 = out["C3"]
        pointers = c3["pointers"][0].numpy()
        if self.options.fuse:
            pointers = fused_pointers(pointers, out, item.mention_tokens, self.options.fuse)
        decisions = Decisions(count=_log_softmax(c3["count"][0].numpy()), shapes=_log_softmax(c3["shape"][0].numpy()),
                              shape_slots=[min(s.count("{}"), vocab.max_operands) for s in vocab.shapes],
                              pointers=_log_softmax(pointers), n_mentions=int(c3["n_mentions"]),
                              n_constants=len(vocab.constants))
        spans = [((m.start, m.end), m.literal) for m in mentions(question.text)]  # the pointers' candidates
        templates = [vocab.templates[int(i)] for i in c3["template"][0].argmax(-1)]
        return Reading(question, trace, float(probs.max()), fmt, decisions, spans,
                       (time.perf_counter() - t0) * 1000, templates)

    def solve(self, question: Question) -> Solution:
        return self.answer(self.read(question))

    def answer(self, reading: Reading, decisions: Decisions | None = None, fmt: str | None = None,
               gate: bool = True) -> Solution:
        """Search the program space of ``reading`` (evaluation's oracle ladder passes the teacher's ``decisions``,
        ``fmt`` or ``gate=False`` in place of the students'; the solver itself never does)."""
        t0, opts = time.perf_counter(), self.options
        decisions, fmt = decisions or reading.decisions, fmt or reading.fmt
        trace = dict(reading.trace)
        done = lambda **kw: Solution(id=reading.question.id, trace=trace,  # noqa: E731
                                     ms=reading.ms + (time.perf_counter() - t0) * 1000, **kw)
        if gate and reading.template_p < opts.flat:
            return done(answer=None, abstained=True, reason="cannot decompose: no template is likely (C2 is flat)",
                        confidence=0.0)
        computed, stats, tried = self.search(reading, decisions, fmt, lambda found: len(found) >= opts.vote)
        trace["C3"] = {"expanded": stats.expanded, "complete": stats.complete, "pruned": stats.pruned,
                       "branched": stats.branched, "computed": len(computed)}
        if not computed:
            return done(answer=None, abstained=True, reason="cannot decompose: no program computes an answer of "
                        f"format {fmt} within the budget", confidence=0.0, nodes_expanded=stats.expanded,
                        programs_tried=tried)
        cand, nodes, value, confidence = _vote(computed[:opts.vote])
        return done(answer=value, abstained=False, reason=None, confidence=confidence, program=nodes,
                    nodes_expanded=stats.expanded, programs_tried=tried)

    def search(self, reading: Reading, decisions: Decisions, fmt: str, enough) -> tuple[list, SearchStats, int]:
        """The programs of the best-first search that compute an answer of format ``fmt``, as (candidate, nodes
        with values, answer), in order of probability, until ``enough(found)`` or ``max_programs`` were executed;
        the search's counts; how many programs were executed."""
        opts = self.options
        stats, tried, computed, size = SearchStats(), 0, [], 4
        programs = best_first(decisions, opts.theta, opts.width, opts.budget, stats)
        while not enough(computed) and tried < opts.max_programs:  # a confident problem: its first batch
            batch = list(itertools.islice(programs, min(size, opts.max_programs - tried)))
            if not batch:
                break
            tried, size = tried + len(batch), size * 2
            computed += self._computing(batch, reading.question.text, reading.spans, fmt)
        return computed, stats, tried

    def _computing(self, batch: list[Candidate], text: str, spans, fmt: str) -> list:
        """(candidate, nodes with values, answer) of the programs of ``batch`` that compute an answer of format
        ``fmt``, in the batch's order. ``spans``: each candidate mention's span and value, in pointer order."""
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
                        operands.append({"text": text[s:e], "span": [s, e], "value": str(value)})
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
        out = []
        for cand, view, vals in zip(batch, shown, execute(specs, timeout_s=self.options.timeout_s)):
            if vals and all(v is not None for v in vals) and format_accepts(fmt, vals[-1]):
                out.append((cand, [node | {"value": v} for node, v in zip(view, vals)], vals[-1]))
        return out


FAILED = "failed: "


def solve_safely(solver, question: Question) -> Solution:
    """``solver.solve(question)``, or an abstention whose reason names the error (``FAILED`` + type and message):
    one problem never stops the others (``solve --data``, ``evaluate``, the loop's maps)."""
    t0 = time.perf_counter()
    try:
        return solver.solve(question)
    except Exception as e:  # noqa: BLE001 - named in the reason and counted by the caller
        return failed(question, e, t0)


def failed(question: Question, error: Exception, t0: float) -> Solution:
    """The abstention that stands for a problem whose solving raised ``error`` (started at ``t0``)."""
    return Solution(id=question.id, answer=None, abstained=True, reason=f"{FAILED}{type(error).__name__}: {error}",
                    confidence=0.0, ms=(time.perf_counter() - t0) * 1000)


def _vote(computed: list) -> tuple:
    """The answer the computed programs' probability mass favours (programs with the same value pool their
    probability), its most probable program, and that pooled probability under C3 as the confidence. With one
    program: the first program that computes, and its probability."""
    from ..programs.execute import same_value

    pools: list[list] = []  # [mass, first (most probable) entry]
    for entry in computed:
        p = math.exp(-entry[0].cost)
        pool = next((q for q in pools if same_value(q[1][2], entry[2])), None)
        if pool is None:
            pools.append([p, entry])
        else:
            pool[0] += p
    mass, (cand, nodes, value) = max(pools, key=lambda q: q[0])
    return cand, nodes, value, mass
