"""A specialist: the backbone's top K layers (trainable), a small bidirectional adapter, and the component's heads.

Inputs are the frozen features of ``encode.frozen_features`` ([B, T, d], right-padded). The backbone is causal,
so a mention early in the problem never sees the question at the end; the adapter (``adapter_layers`` of
bidirectional self-attention at width ``hidden``) lets every token read the whole text. Heads:

- C1 a tag per token; C2 templates (multi-label) and the heartbeat count; C4 a role per number mention
  (its tokens' mean) and per clause; C6 the answer format and the node count (the answer is the last node).
- C3 and C5 decode nodes: ``max_nodes`` learned queries read the text (a causal transformer decoder, so node k
  knows nodes before it). C3 predicts the count, each node's shape and template, and for each slot a pointer
  over the mentions, the earlier nodes and the constants; C5 scores an edge for every pair a < b.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from .top import run_top
from .data import CLAUSE_ROLES, FORMATS, IGNORE, ROLES, Vocab


MAX_RANK = 32  # mention_order: the 32nd mention and later share one embedding


@dataclass
class StudentConfig:
    component: str
    backbone: str  # encode.backbone_id of the backbone the features came from
    d_in: int
    vocab: dict
    train_layers: int = 0
    placeholders: bool = False  # the backbone read the text with its numbers as N0, N1, … (encode.abstract_numbers)
    lora_rank: int = 0  # > 0: the top layers stay frozen and LoRA adapters of this rank on them are trained
    mention_order: bool = False  # C3: each mention's key also carries its place among the mentions (1st, 2nd, ...)
    hidden: int = 256
    adapter_layers: int = 2
    heads: int = 4
    dropout: float = 0.1

    def to_dict(self) -> dict:
        return asdict(self)


def _pool(h: torch.Tensor, ranges: list[list[tuple[int, int]]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of h over each token range: [B, R, H] and a mask [B, R] of the ranges that exist."""
    B, T, H = h.shape
    R = max(1, max((len(r) for r in ranges), default=0))
    weights = torch.zeros(B, R, T, device=h.device)
    mask = torch.zeros(B, R, dtype=torch.bool, device=h.device)
    for b, rs in enumerate(ranges):
        for i, (s, e) in enumerate(rs):
            if e > s:
                weights[b, i, s:e] = 1.0 / (e - s)
                mask[b, i] = True
    return weights @ h, mask


class Student(nn.Module):
    def __init__(self, cfg: StudentConfig, top_layers: nn.ModuleList | None = None, norm: nn.Module | None = None,
                 rotary: nn.Module | None = None, backbone_config=None):
        super().__init__()
        self.cfg, v = cfg, Vocab(**cfg.vocab)
        self.vocab = v
        self.top, self.norm, self.rotary, self.backbone_config = top_layers, norm, rotary, backbone_config
        H = cfg.hidden
        self.proj = nn.Linear(cfg.d_in, H)
        layer = nn.TransformerEncoderLayer(H, cfg.heads, 4 * H, cfg.dropout, batch_first=True, norm_first=True)
        self.adapter = nn.TransformerEncoder(layer, cfg.adapter_layers, enable_nested_tensor=False)
        c = cfg.component
        if c == "C1":
            self.tag = nn.Linear(H, 1)
        elif c == "C2":
            self.templates, self.beats = nn.Linear(H, len(v.templates)), nn.Linear(H, 1)
        elif c == "C4":
            self.role, self.clause_role = nn.Linear(H, len(ROLES)), nn.Linear(H, len(CLAUSE_ROLES))
        elif c == "C6":
            self.format, self.count = nn.Linear(H, len(FORMATS)), nn.Linear(H, v.max_nodes + 1)
        elif c in ("C3", "C5"):
            self.queries = nn.Parameter(torch.randn(v.max_nodes, H) * 0.02)
            dec = nn.TransformerDecoderLayer(H, cfg.heads, 4 * H, cfg.dropout, batch_first=True, norm_first=True)
            self.decoder = nn.TransformerDecoder(dec, 2)
            if c == "C3":
                self.count = nn.Linear(H, v.max_nodes + 1)
                self.shape, self.template = nn.Linear(H, len(v.shapes)), nn.Linear(H, len(v.templates))
                self.slots = nn.Parameter(torch.randn(v.max_operands, H) * 0.02)
                self.slot_query, self.node_key, self.mention_key = nn.Linear(H, H), nn.Linear(H, H), nn.Linear(H, H)
                self.constants = nn.Parameter(torch.randn(max(1, len(v.constants)), H) * 0.02)
                if cfg.mention_order:
                    self.mention_rank = nn.Embedding(MAX_RANK, H)
            else:
                self.edge_from, self.edge_to = nn.Linear(H, H), nn.Linear(H, H)
        else:
            raise ValueError(f"unknown component {c!r}")

    def run_top(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The trained top backbone layers (``top.run_top``); x as is without them."""
        if self.top is None or not len(self.top):
            return x
        return run_top(self.top, self.norm, self.rotary, self.backbone_config, x, mask)[-1]

    def encode(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[B, T, d] frozen features -> [B, T, H] (top backbone layers, then the bidirectional adapter)."""
        return self.adapter(self.proj(self.run_top(x, mask)), src_key_padding_mask=~mask)

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        mask = batch["mask"]
        h = self.encode(batch["features"], mask)
        pooled = (h * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        c = self.cfg.component
        if c == "C1":
            return {"tags": self.tag(h).squeeze(-1)}
        if c == "C2":
            return {"templates": self.templates(pooled), "heartbeats": self.beats(pooled).squeeze(-1)}
        if c == "C4":
            m, _ = _pool(h, batch["mention_tokens"])
            cl, _ = _pool(h, batch["clause_tokens"])
            return {"roles": self.role(m), "clause_roles": self.clause_role(cl)}
        if c == "C6":
            return {"format": self.format(pooled), "count": self.count(pooled)}
        N = self.vocab.max_nodes
        q = self.queries.unsqueeze(0).expand(h.shape[0], -1, -1)
        causal = torch.triu(torch.ones(N, N, dtype=torch.bool, device=h.device), 1)
        nodes = self.decoder(q, h, tgt_mask=causal, memory_key_padding_mask=~mask)  # [B, N, H]
        if c == "C5":
            return {"edges": self.edge_from(nodes) @ self.edge_to(nodes).transpose(1, 2)}  # [B, N, N]
        m, m_mask = _pool(h, batch["mention_tokens"])  # [B, M, H]
        if self.cfg.mention_order:
            m = m + self.mention_rank(torch.arange(m.shape[1], device=h.device).clamp(max=MAX_RANK - 1))
        keys = torch.cat([self.mention_key(m), self.node_key(nodes),
                          self.constants.unsqueeze(0).expand(h.shape[0], -1, -1)], 1)  # [B, M + N + C, H]
        slot_q = self.slot_query(nodes.unsqueeze(2) + self.slots)  # [B, N, S, H]
        scores = torch.einsum("bnsh,bkh->bnsk", slot_q, keys) / self.cfg.hidden ** 0.5
        M = m.shape[1]
        allowed = torch.zeros(h.shape[0], N, keys.shape[1], dtype=torch.bool, device=h.device)
        allowed[:, :, :M] = m_mask.unsqueeze(1)
        allowed[:, :, M:M + N] = torch.tril(torch.ones(N, N, dtype=torch.bool, device=h.device), -1)  # earlier only
        allowed[:, :, M + N:] = len(self.vocab.constants) > 0
        scores = scores.masked_fill(~allowed.unsqueeze(2), -1e4)
        return {"count": self.count(pooled), "shape": self.shape(nodes), "template": self.template(nodes),
                "pointers": scores, "n_mentions": M}

    def loss(self, out: dict, batch: dict) -> torch.Tensor:
        y, c, ce = batch["y"], self.cfg.component, nn.functional.cross_entropy
        bce = nn.functional.binary_cross_entropy_with_logits
        if c == "C1":
            return bce(out["tags"][batch["mask"]], y["tags"][batch["mask"]])
        if c == "C2":  # the dual head: BCE on templates + weighted MSE on the (scaled) heartbeat count
            scale = self.vocab.heartbeat_scale
            return bce(out["templates"], y["templates"]) + 0.5 * nn.functional.mse_loss(out["heartbeats"], y["heartbeats"] / scale)
        if c == "C4":
            loss = ce(out["roles"].flatten(0, 1), y["roles"].flatten(), ignore_index=IGNORE)
            return loss + ce(out["clause_roles"].flatten(0, 1), y["clause_roles"].flatten(), ignore_index=IGNORE)
        if c == "C6":
            return ce(out["format"], y["format"]) + ce(out["count"], y["n_nodes"])
        if c == "C5":
            N = self.vocab.max_nodes
            pair = torch.triu(torch.ones(N, N, dtype=torch.bool, device=out["edges"].device), 1)
            rows = torch.arange(N, device=pair.device).view(1, 1, N) < y["n_nodes"].view(-1, 1, 1)  # [B, 1, N]
            live = pair.unsqueeze(0) & rows & rows.transpose(1, 2)
            return bce(out["edges"][live], y["adjacency"][live]) if live.any() else out["edges"].sum() * 0
        loss = ce(out["count"], y["n_nodes"])
        for name in ("shape", "template"):
            loss = loss + ce(out[name].flatten(0, 1), y[name].flatten(), ignore_index=IGNORE)
        if (y["pointers"] != IGNORE).any():
            loss = loss + ce(out["pointers"].flatten(0, 2), y["pointers"].flatten(), ignore_index=IGNORE)
        return loss
