"""The verifier (the seventh student): how likely a candidate program from the reader's beam is right.

It reads the problem with the program's operands marked in it, the backbone's frozen features of the problem's
tokens (a learned mix of the reader's layers), each token marked as a mention the program reads, a mention it
leaves out, or neither, and with the operations that read it, through a small transformer; and it reads facts
of the program (:data:`FACTS`): the share of the mentions used, whether the value is whole and positive, its
size next to the mentions, the beam's score of it. One score per candidate; the answer is the best-scored
candidate, or a vote of the beam's mass weighted by the scores (``solver.read``).

Shapes: N candidates, T tokens, L layers, d backbone width, D the verifier's width, F facts.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from fractions import Fraction

import numpy as np
import torch
from torch import nn

from ..programs.steps import OPS
from .reader import Candidate

FACTS = ("share of mentions used", "mentions left out", "whole", "positive", "log size", "log size over the "
         "largest mention", "equals a mention", "steps", "constants read", "results read twice", "log p",
         "log p below the best", "share of the beam's mass", "log mass over its best program", "rank",
         "beam size") + tuple(f"steps {o}" for o in OPS)
MARKS = 3  # a token is: 0 no mention, 1 a mention the program reads, 2 a mention it leaves out


@dataclass
class VerifierConfig:
    backbone: str
    d_in: int
    layers: list[int]
    hidden: int = 128
    heads: int = 4
    dropout: float = 0.1
    max_tokens: int = 320
    facts: list[str] = field(default_factory=lambda: list(FACTS))
    mean: list[float] = field(default_factory=list)  # the facts' standardization, fitted on train
    std: list[float] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _log10(v: Fraction) -> float:
    a = abs(v)
    return math.log10(a.numerator) - math.log10(a.denominator) if a else -9.0


def facts(cand: list[Candidate], candidate: dict, beam: list[dict], rank: int) -> list[float]:
    """The program facts of one beam candidate (``beams.beam_record``'s dict) among its beam, in FACTS order."""
    C = len(cand)
    steps = [tuple(s) for s in candidate["steps"]]
    read = [x for _, i, j in steps for x in (i, j)]
    mentions = {c.mention for c in cand if c.mention is not None}
    used = {cand[x].mention for x in read if x < C and cand[x].mention is not None}
    v = Fraction(candidate["value"])
    sizes = [_log10(c.value) for c in cand if c.mention is not None and c.value]
    best = max(c["logp"] for c in beam)
    total = sum(c["mass"] for c in beam) or 1.0
    results = [x for x in read if x >= C]
    ops = [OPS[op] for op, _, _ in steps]
    return [len(used) / max(1, len(mentions)), float(len(mentions - used)), float(v.denominator == 1),
            float(v > 0), _log10(v) / 4, (_log10(v) - max(sizes, default=0.0)) / 4,
            float(any(c.value == v for c in cand if c.mention is not None)), float(len(steps)),
            float(sum(1 for x in read if x < C and cand[x].mention is None)),
            float(len(results) - len(set(results))), candidate["logp"], candidate["logp"] - best,
            candidate["mass"] / total, math.log(max(candidate["mass"], 1e-300)) - candidate["logp"], float(rank),
            float(len(beam))] + [ops.count(o) / max(1, len(ops)) for o in OPS]


def marks(cand: list[Candidate], cand_tokens: list[tuple[int, int]], steps, T: int) -> tuple[np.ndarray, np.ndarray]:
    """Per token: its mark (MARKS) and how many steps of each operation read it ([T], [T, ops])."""
    mark = np.zeros(T, dtype=np.int64)
    ops = np.zeros((T, len(OPS)), dtype=np.float32)
    C = len(cand)
    for c, (s, e) in zip(cand, cand_tokens):
        if c.mention is not None:
            mark[s:e] = 2  # a mention: left out unless a step reads it
    for op, i, j in steps:
        for x in (i, j):
            if x < C and cand[x].mention is not None:
                s, e = cand_tokens[x]
                mark[s:e] = 1
                ops[s:e, op] += 1
    return mark, ops


@dataclass
class VerifierItem:
    """One problem's beam: its tokens' features and, per candidate, the marks, the facts and (training) the label."""

    features: np.ndarray  # [T, L, d] float16
    marks: list[np.ndarray]  # per candidate [T]
    ops: list[np.ndarray]  # per candidate [T, ops]
    facts: list[list[float]]  # per candidate [F]
    labels: list[bool | None]


def make_item(question: str, enc, beam: list[dict], constants: list[str], readings: int) -> VerifierItem:
    """A beam (``beams.beam_record``'s candidates, best first) over the problem as the reader read it (its
    candidates: ``constants`` and ``readings`` of the reader's config, so the steps' slots mean the same)."""
    from .encode import tokens_of_span
    from .reader import candidates

    cand, _ = candidates(question, constants, readings)
    toks = [tokens_of_span(enc.offsets, c.span) if c.span else (0, 0) for c in cand]
    T = len(enc.features)
    ms, os_ = zip(*(marks(cand, toks, c["steps"], T) for c in beam)) if beam else ((), ())
    return VerifierItem(enc.features, list(ms), list(os_), [facts(cand, c, beam, r) for r, c in enumerate(beam)],
                        [c.get("correct") for c in beam])


def collate(items: list[VerifierItem], cfg: VerifierConfig) -> dict:
    """Candidate rows of every item; ``problem`` says whose [N]; the features once per problem [P, T, L, d]."""
    P = len(items)
    T = min(cfg.max_tokens, max(1, max(len(it.features) for it in items)))
    L, d = items[0].features.shape[1:]
    feats = torch.zeros(P, T, L, d)
    mask = torch.zeros(P, T, dtype=torch.bool)
    rows = [(p, k) for p, it in enumerate(items) for k in range(len(it.facts))]
    N = len(rows)
    mark = torch.zeros(N, T, dtype=torch.long)
    ops = torch.zeros(N, T, len(OPS))
    fact = torch.zeros(N, len(cfg.facts))
    label = torch.zeros(N)
    for p, it in enumerate(items):
        t = min(T, len(it.features))
        feats[p, :t] = torch.from_numpy(it.features[:t].astype(np.float32))
        mask[p, :t] = True
    for n, (p, k) in enumerate(rows):
        it = items[p]
        t = min(T, len(it.features))
        mark[n, :t] = torch.from_numpy(it.marks[k][:t])
        ops[n, :t] = torch.from_numpy(it.ops[k][:t])
        fact[n] = torch.tensor(it.facts[k])
        label[n] = float(bool(it.labels[k]))
    if cfg.mean:
        fact = (fact - torch.tensor(cfg.mean)) / torch.tensor(cfg.std)
    return {"features": feats, "mask": mask, "problem": torch.tensor([p for p, _ in rows], dtype=torch.long),
            "marks": mark, "ops": ops, "facts": fact, "label": label}


class Verifier(nn.Module):
    def __init__(self, cfg: VerifierConfig):
        super().__init__()
        self.cfg = cfg
        D = cfg.hidden
        self.mix = nn.Parameter(torch.zeros(len(cfg.layers)))
        self.norm = nn.LayerNorm(cfg.d_in)
        self.proj = nn.Linear(cfg.d_in, D)
        self.pos = nn.Embedding(cfg.max_tokens, D)
        layer = nn.TransformerEncoderLayer(D, cfg.heads, 2 * D, cfg.dropout, batch_first=True, norm_first=True)
        self.body = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.mark = nn.Embedding(MARKS, D)
        self.op = nn.Linear(len(OPS), D)
        self.marked = nn.Sequential(nn.LayerNorm(D), nn.Linear(D, D), nn.GELU())
        self.fact = nn.Sequential(nn.Linear(len(cfg.facts), D), nn.GELU(), nn.Linear(D, D))
        self.query = nn.Linear(D, D)
        self.head = nn.Sequential(nn.Linear(5 * D, D), nn.GELU(), nn.Dropout(cfg.dropout), nn.Linear(D, 1))

    def forward(self, batch: dict) -> torch.Tensor:
        """A score per candidate row [N] (a logit: sigmoid is the probability that it is right). The problem's
        tokens are read once [P, T, D]; each candidate marks them (its operands, the mentions it leaves out, the
        operations reading them) and pools them: by attention from its facts, and over each mark."""
        x = (batch["features"] * torch.softmax(self.mix, 0).view(1, 1, -1, 1)).sum(2)  # [P, T, d]
        T = x.shape[1]
        tok = self.proj(self.norm(x)) + self.pos(torch.arange(T, device=x.device))
        tok = self.body(tok, src_key_padding_mask=~batch["mask"])  # [P, T, D]
        p = batch["problem"]
        mask = batch["mask"][p]  # [N, T]
        h = self.marked(tok[p] + self.mark(batch["marks"]) + self.op(batch["ops"]))  # [N, T, D]
        f = self.fact(batch["facts"])  # [N, D]
        att = (h @ self.query(f).unsqueeze(-1)).squeeze(-1) / math.sqrt(h.shape[-1])
        att = torch.softmax(att.masked_fill(~mask, float("-inf")), -1)
        pooled = [(att.unsqueeze(-1) * h).sum(1), self._pool(tok[p], mask)] + [
            self._pool(h, mask & (batch["marks"] == m)) for m in (1, 2)]
        return self.head(torch.cat(pooled + [f], -1)).squeeze(-1)

    @staticmethod
    def _pool(h: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
        w = where.unsqueeze(-1).float()
        return (h * w).sum(1) / w.sum(1).clamp(min=1)

    def loss(self, batch: dict) -> torch.Tensor:
        """The listwise loss (−log of the right candidates' share of the softmax over their beam, on beams with
        one) plus the pointwise cross-entropy (so a score means the same across beams: AUC, the weighted vote)."""
        s = self(batch)
        y, p = batch["label"], batch["problem"]
        point = nn.functional.binary_cross_entropy_with_logits(s, y)
        cols = torch.arange(s.shape[0])
        every = s.new_full((int(p.max()) + 1, s.shape[0]), float("-inf"))  # [P, N]: each beam's scores
        right = every.clone()
        every[p, cols] = s
        right[p, cols] = s.masked_fill(y == 0, float("-inf"))
        has = torch.isfinite(right).any(1)
        if not has.any():
            return point
        listwise = (torch.logsumexp(every[has], 1) - torch.logsumexp(right[has], 1)).mean()
        return listwise + point
