"""The reader (C3 + C5): one autoregressive step decoder in the shape of the deductive word-problem solvers.

The problem's candidates are vectors: every number mention once per reading ("half" as 1/2 and as 2, "20%" as
20 and 1/5), the constants (learned vectors) and, as the program grows, each step's result. Step k scores every
(op, a, b) over the candidates as a whole, plus STOP; ``+`` and ``*`` take an unordered pair (a ≤ b), ``-`` and
``/`` both orders (the reversed operations). The chosen step's result vector joins the candidates, the decoder
state reads it (a GRU cell), and every candidate is refreshed with it, so each choice is conditioned on all
earlier ones. C5's DAG is the result pointers. A format head (C6) says whether the answer is a whole count.

Features have read the whole problem: a learned mix of the backbone's layers (``encode.frozen_features`` with
``layers``), a LayerNorm before the projection (the last layer has two dimensions of mean |x| 15-19), learned
positions, and a small bidirectional transformer over the tokens.

Targets are sets: an operand is its value, and every candidate holding that value counts (the loss is the
log of their summed probability), so equal-valued mentions are not punished and a + b equals b + a.

Shapes: B problems, T tokens, L layers, d backbone width, C candidates (mentions × readings, then constants,
then ``max_steps`` result slots), H the reader's width, P the pair scorer's width.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from fractions import Fraction

import numpy as np
import torch
from torch import nn

from ..analysis.numwords import mentions
from ..programs.steps import COMMUTATIVE, OPS, StepProgram
from .encode import Encoded, tokens_of_span
from .top import copy_top, run_top

MAX_MENTIONS = 48  # a problem with more number mentions is read up to its 48th (the trace says so)
MAX_READINGS = 3
N_NUMERIC = 6


@dataclass
class ReaderConfig:
    backbone: str
    d_in: int
    layers: list[int]
    constants: list[str]  # Fractions as text, e.g. "100", "1/100"
    formats: list[str]
    hidden: int = 256
    pair: int = 128
    adapter_layers: int = 2
    heads: int = 4
    dropout: float = 0.1
    max_steps: int = 10
    max_tokens: int = 320
    train_layers: int = 0  # the backbone's top K decoder layers, trained in the reader (--train-layers)
    depth: int = 0  # the backbone's number of layers (where its top K start)
    lora_rank: int = 0  # > 0: the top layers stay frozen under LoRA adapters of this rank (``top.copy_top``)
    readings: int = MAX_READINGS  # readings per mention among the candidates (1: as written only, the ablation)

    def to_dict(self) -> dict:
        return asdict(self)

    def stored_layers(self) -> list[int]:
        """The hidden states a problem's features hold: the mixed layers below the trained top, and the top's
        input (hidden state ``depth - train_layers``); with no trained top, the mixed layers."""
        if not self.train_layers:
            return list(self.layers)
        base = self.depth - self.train_layers
        return sorted({i for i in self.layers if i <= base} | {base})


@dataclass(frozen=True)
class Candidate:
    value: Fraction
    mention: int | None  # index among the problem's mentions; None for a constant
    reading: int  # 0 the mention as written, 1.. its other readings; constants: MAX_READINGS + constant index
    span: tuple[int, int] | None
    text: str


def candidates(question: str, constants: list[str], readings: int = MAX_READINGS) -> tuple[list[Candidate], int]:
    """The values a step may read: each mention (text order) once per reading, as written first (up to
    ``readings`` of them; 1 is the ablation that reads each mention as written only); then the constants. Also
    how many mentions were left out past ``MAX_MENTIONS``."""
    ms = mentions(question)
    out = []
    for i, m in enumerate(ms[:MAX_MENTIONS]):
        lit = m.literal
        values = sorted(m.values, key=lambda v: (v != lit, v))[:min(readings, MAX_READINGS)]
        out += [Candidate(v, i, r, (m.start, m.end), m.text) for r, v in enumerate(values)]
    out += [Candidate(Fraction(c), None, MAX_READINGS + k, None, c) for k, c in enumerate(constants)]
    return out, max(0, len(ms) - MAX_MENTIONS)


def numeric(v: Fraction) -> list[float]:
    """What a value looks like, for the scorer: sign, log-magnitude, whole, below one, zero, a round ten."""
    a = abs(v)
    mag = math.log10(a.numerator) - math.log10(a.denominator) if a else -9.0  # exact for a 400-digit number too
    return [float(v < 0), mag / 4, float(v.denominator == 1), float(a < 1), float(v == 0),
            float(v.denominator == 1 and v != 0 and v % 10 == 0)]


@dataclass
class ReaderItem:
    """One problem on the backbone's tokens, with its candidates, and (training) the step targets."""

    features: np.ndarray  # [T, L, d] float16
    cand: list[Candidate]
    cand_tokens: list[tuple[int, int]]  # token range per candidate ((0, 0) for a constant)
    truncated: int = 0
    targets: list[list[tuple[int, int, int]]] = field(default_factory=list)  # per step: (op, i, j) that count
    chosen: list[tuple[int, int, int]] = field(default_factory=list)  # per step: the one fed back
    fmt: int = -100
    group: str | None = None  # items of one group are one set target: equivalent programs of one problem


def make_item(question: str, enc: Encoded, cfg: ReaderConfig, program: StepProgram | None = None,
              fmt: str | None = None, sets: bool = True) -> ReaderItem:
    cand, truncated = candidates(question, cfg.constants, cfg.readings)
    toks = [tokens_of_span(enc.offsets, c.span) if c.span else (0, 0) for c in cand]
    item = ReaderItem(enc.features, cand, toks, truncated, fmt=cfg.formats.index(fmt) if fmt in cfg.formats else -100)
    if program is not None:
        item.targets, item.chosen = step_targets(program, [c.value for c in cand], sets)
    return item


def step_targets(program: StepProgram, values: list[Fraction], sets: bool = True
                 ) -> tuple[list[list[tuple[int, int, int]]], list]:
    """Per step, every (op, i, j) over the candidate values (then the results so far) that computes the same
    step; the first is the one fed back (``sets=False``, the ablation: that one alone is the target). A step
    with no candidate for an operand raises ValueError."""
    vals = list(values)
    results = program.values()
    targets, chosen = [], []
    for k, s in enumerate(program.steps):
        va = s.a[1] if s.a[0] == "value" else results[s.a[1]]
        vb = s.b[1] if s.b[0] == "value" else results[s.b[1]]
        A = [i for i, v in enumerate(vals) if v == va]
        Bs = [j for j, v in enumerate(vals) if v == vb]
        if not A or not Bs:
            raise ValueError(f"step {k}: no candidate holds {va if not A else vb}")
        op = OPS.index(s.op)
        if s.op in COMMUTATIVE:
            pairs = sorted({(min(i, j), max(i, j)) for i in A for j in Bs})
        else:
            pairs = [(i, j) for i in A for j in Bs if i != j]
        if not pairs:
            raise ValueError(f"step {k}: {va} {s.op} {vb} reads one candidate twice")
        targets.append([(op, i, j) for i, j in pairs][:None if sets else 1])
        chosen.append(targets[-1][0])
        vals.append(results[k])
    return targets, chosen


def collate(items: list[ReaderItem], cfg: ReaderConfig) -> dict:
    """Right-padded tensors; candidate slots [0, C) problem values, [C, C + max_steps) results."""
    B, K = len(items), cfg.max_steps
    T = max(1, max(len(it.features) for it in items))
    C = max(1, max(len(it.cand) for it in items))
    L, d = items[0].features.shape[1:]
    feats = torch.zeros(B, T, L, d)
    mask = torch.zeros(B, T, dtype=torch.bool)
    pool = torch.zeros(B, C, T)
    kind = torch.zeros(B, C, dtype=torch.long)
    num = torch.zeros(B, C, N_NUMERIC)
    valid = torch.zeros(B, C, dtype=torch.bool)
    for b, it in enumerate(items):
        t = len(it.features)
        feats[b, :t] = torch.from_numpy(it.features.astype(np.float32))
        mask[b, :t] = True
        for c, (cd, (s, e)) in enumerate(zip(it.cand, it.cand_tokens)):
            if e > s:
                pool[b, c, s:e] = 1.0 / (e - s)
            kind[b, c] = cd.reading
            num[b, c] = torch.tensor(numeric(cd.value))
            valid[b, c] = True
    batch = {"features": feats, "mask": mask, "pool": pool, "kind": kind, "numeric": num, "valid": valid,
             "n_cand": C, "format": torch.tensor([it.fmt for it in items])}
    names = [it.group if it.group is not None else f"#{b}" for b, it in enumerate(items)]
    if len(set(names)) < B:
        index = {g: n for n, g in enumerate(dict.fromkeys(names))}
        batch["group"] = torch.tensor([index[g] for g in names])
    if any(it.targets for it in items):
        S = C + K
        target = torch.zeros(B, K + 1, S, S, len(OPS), dtype=torch.bool)
        stop = torch.zeros(B, K + 1, dtype=torch.bool)
        live = torch.zeros(B, K + 1, dtype=torch.bool)
        chosen = torch.zeros(B, K, 3, dtype=torch.long)
        for b, it in enumerate(items):
            n = min(len(it.targets), K)
            live[b, :n + 1] = True
            stop[b, n] = True
            for k in range(n):
                for op, i, j in it.targets[k]:
                    target[b, k, _slot(i, len(it.cand), C), _slot(j, len(it.cand), C), op] = True
                op, i, j = it.chosen[k]
                chosen[b, k] = torch.tensor([op, _slot(i, len(it.cand), C), _slot(j, len(it.cand), C)])
        batch |= {"target": target, "stop": stop, "live": live, "chosen": chosen}
    return batch


def _slot(i: int, n_cand: int, width: int) -> int:
    """A candidate index of a problem with ``n_cand`` candidates in a batch padded to ``width``."""
    return i if i < n_cand else width + i - n_cand


class Reader(nn.Module):
    def __init__(self, cfg: ReaderConfig, backbone=None):
        """``backbone`` (the teacher's model) gives the trained top its architecture and starting weights; it is
        needed only with ``cfg.train_layers``."""
        super().__init__()
        self.cfg = cfg
        if cfg.train_layers and backbone is None:
            raise ValueError("a reader with trained backbone layers is built from the backbone")
        self.top = None
        if cfg.train_layers:
            self.top, self.top_norm, self.rotary = copy_top(backbone, cfg.train_layers, cfg.lora_rank)
            self.top.float()
            self.top_norm.float()
            self.backbone_config = backbone.config
        H, P = cfg.hidden, cfg.pair
        self.mix = nn.Parameter(torch.zeros(len(cfg.layers)))
        self.norm = nn.LayerNorm(cfg.d_in)
        self.proj = nn.Linear(cfg.d_in, H)
        self.pos = nn.Embedding(cfg.max_tokens, H)
        layer = nn.TransformerEncoderLayer(H, cfg.heads, 4 * H, cfg.dropout, batch_first=True, norm_first=True)
        self.adapter = nn.TransformerEncoder(layer, cfg.adapter_layers, enable_nested_tensor=False)
        self.kind = nn.Embedding(MAX_READINGS + max(1, len(cfg.constants)), H)
        self.numeric = nn.Linear(N_NUMERIC, H)
        self.used = nn.Embedding(3, H)
        self.init = nn.Linear(H, H)
        self.a, self.b, self.x, self.y, self.s = (nn.Linear(H, P) for _ in range(5))
        self.out = nn.Sequential(nn.GELU(), nn.Linear(P, P), nn.GELU(), nn.Linear(P, len(OPS)))
        self.stop = nn.Linear(H, 1)
        self.op = nn.Embedding(len(OPS), H)
        self.result = nn.Sequential(nn.Linear(3 * H, H), nn.GELU(), nn.Linear(H, H))
        self.gru = nn.GRUCell(H, H)
        self.refresh = nn.Sequential(nn.Linear(2 * H, H), nn.Tanh())
        self.format = nn.Linear(H, len(cfg.formats))
        self.drop = nn.Dropout(cfg.dropout)

    # ---- reading the problem ----------------------------------------------------------------------------
    def read(self, batch: dict) -> torch.Tensor:
        """The reader's reading of each token [B, T, H] (what the verifier reads too)."""
        x = self.features(batch)  # [B, T, L, d]
        x = (x * torch.softmax(self.mix, 0).view(1, 1, -1, 1)).sum(2)
        T = x.shape[1]
        h = self.proj(self.norm(x)) + self.pos(torch.arange(T, device=x.device).clamp(max=self.cfg.max_tokens - 1))
        return self.adapter(self.drop(h), src_key_padding_mask=~batch["mask"])

    def start(self, batch: dict) -> dict:
        """The decoder's state before step 0: candidate vectors [B, C + K, H], which slots exist, the state."""
        h = self.read(batch)  # [B, T, H]
        m = batch["mask"].unsqueeze(-1).float()
        q = (h * m).sum(1) / m.sum(1).clamp(min=1)  # [B, H]
        cand = batch["pool"] @ h + self.kind(batch["kind"]) + self.numeric(batch["numeric"])  # [B, C, H]
        B, C, H = cand.shape
        K = self.cfg.max_steps
        cand = torch.cat([cand, cand.new_zeros(B, K, H)], 1)
        avail = torch.cat([batch["valid"], batch["valid"].new_zeros(B, K)], 1)
        return {"cand": cand, "avail": avail, "used": torch.zeros(B, C + K, dtype=torch.long, device=cand.device),
                "state": torch.tanh(self.init(q)), "q": q, "k": 0, "C": C}

    def features(self, batch: dict) -> torch.Tensor:
        """The mixed layers [B, T, L, d]: read from the stored features, or (above the trained top's input)
        computed by the trained top."""
        x = batch["features"]
        if self.top is None:
            return x
        stored, base = self.cfg.stored_layers(), self.cfg.depth - self.cfg.train_layers
        tops = run_top(self.top, self.top_norm, self.rotary, self.backbone_config, x[:, :, stored.index(base)],
                       batch["mask"])
        return torch.stack([x[:, :, stored.index(i)] if i <= base else tops[i - base - 1] for i in self.cfg.layers], 2)

    def scores(self, ctx: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probabilities of every step [B, S, S, ops] and of STOP [B] (invalid steps: -inf)."""
        c = ctx["cand"] + self.used(ctx["used"].clamp(max=2))  # [B, S, H]
        s = self.s(ctx["state"])[:, None, None]  # [B, 1, 1, P]
        h = self.a(c)[:, :, None] + self.b(c)[:, None] + self.x(c)[:, :, None] * self.y(c)[:, None] + s
        logits = self.out(h)  # [B, S, S, ops]
        logits = logits.masked_fill(~self.allowed(ctx["avail"]), float("-inf"))
        stop = self.stop(ctx["state"]).squeeze(-1)
        if ctx["k"] == 0:  # a program has at least one step
            stop = torch.full_like(stop, float("-inf"))
        z = torch.logsumexp(torch.cat([logits.flatten(1), stop[:, None]], 1), 1)
        return logits - z[:, None, None, None], stop - z

    @staticmethod
    def allowed(avail: torch.Tensor) -> torch.Tensor:
        """[B, S, S, ops]: both candidates exist; + and * on i ≤ j, - and / on i ≠ j."""
        S = avail.shape[1]
        both = avail[:, :, None] & avail[:, None]
        upper = torch.ones(S, S, dtype=torch.bool, device=avail.device).triu()
        distinct = ~torch.eye(S, dtype=torch.bool, device=avail.device)
        per_op = torch.stack([upper if op in COMMUTATIVE else distinct for op in OPS], -1)
        return both[..., None] & per_op

    def advance(self, ctx: dict, op: torch.Tensor, i: torch.Tensor, j: torch.Tensor,
                go: torch.Tensor | None = None) -> dict:
        """The context after each row took step (op, i, j) [B]; rows where ``go`` is False keep their state."""
        B = op.shape[0]
        rows = torch.arange(B, device=op.device)
        cand = ctx["cand"]
        r = self.result(torch.cat([cand[rows, i], cand[rows, j], self.op(op)], -1))  # [B, H]
        slot = ctx["C"] + ctx["k"]
        go = torch.ones(B, dtype=torch.bool, device=op.device) if go is None else go
        new = cand.clone()
        new[:, slot] = torch.where(go[:, None], r, cand[:, slot])
        refreshed = new + self.refresh(torch.cat([new, r[:, None].expand_as(new)], -1))
        new = torch.where(go[:, None, None], refreshed, new)
        avail = ctx["avail"].clone()
        avail[:, slot] = avail[:, slot] | go
        used = ctx["used"].clone()
        used[rows, i] += go.long()
        used[rows, j] += go.long()
        state = torch.where(go[:, None], self.gru(r, ctx["state"]), ctx["state"])
        return ctx | {"cand": new, "avail": avail, "used": used, "state": state, "k": ctx["k"] + 1}

    # ---- training ---------------------------------------------------------------------------------------
    def loss(self, batch: dict) -> tuple[torch.Tensor, dict]:
        """−log of the targets' summed probability per step (STOP included), averaged over live steps; plus the
        format head's cross-entropy. Teacher-forced: the chosen step is fed back. Rows of one ``group`` (the
        equivalent right programs of one problem) are one set target: −log of their summed probability (the
        marginal likelihood), over their mean number of steps."""
        ctx = self.start(batch)
        K = self.cfg.max_steps
        row = ctx["q"].new_zeros(ctx["q"].shape[0])  # each program's −log-probability
        for k in range(K + 1):
            live = batch["live"][:, k]
            if not live.any():
                break
            logp, stop = self.scores(ctx)
            tgt = batch["target"][:, k]
            hit = torch.cat([logp.masked_fill(~tgt, float("-inf")).flatten(1),
                             stop.masked_fill(~batch["stop"][:, k], float("-inf"))[:, None]], 1)
            nll = -torch.logsumexp(hit, 1)
            row = row + torch.where(live, nll, torch.zeros_like(nll))
            if k < K:
                ch = batch["chosen"][:, k]
                ctx = self.advance(ctx, ch[:, 0], ch[:, 1], ch[:, 2], go=live & ~batch["stop"][:, k])
        steps = batch["live"].sum(1).float()
        if "group" in batch:
            g = batch["group"]
            G = int(g.max()) + 1
            lp = row.new_full((G, len(row)), float("-inf"))
            lp[g, torch.arange(len(row))] = -row
            total = -torch.logsumexp(lp, 1).sum()
            count = float((torch.bincount(g, weights=steps, minlength=G) / torch.bincount(g, minlength=G)).sum())
        else:
            total, count = row.sum(), float(steps.sum())
        loss = total / max(1.0, count)
        fmt = nn.functional.cross_entropy(self.format(ctx["q"]), batch["format"], ignore_index=-100) \
            if (batch["format"] != -100).any() else loss * 0
        return loss + 0.2 * fmt, {"steps": int(steps.sum())}
