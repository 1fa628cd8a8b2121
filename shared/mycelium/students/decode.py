"""Batches in, targets out: collating items for a student, and reading its outputs back as targets.

A decoded prediction has the shape of the component's target (``records.programs``), so it is scored by
``metrics.score`` exactly like a baseline, and the solver reads it like a label.
"""

from __future__ import annotations

import numpy as np
import torch

from ..analysis.text import clause_spans
from .data import CLAUSE_ROLES, FORMATS, IGNORE, ROLES, Item, Vocab, candidate_mentions, pad_pointers


def collate(items: list[Item], component: str, device="cpu") -> dict:
    """Right-padded features and masks; the component's targets as tensors (pointer classes re-based on the
    batch's mention count: an item's class M_i + k becomes M + k)."""
    B, T = len(items), max(len(it.features) for it in items)
    d = items[0].features.shape[1]
    x = torch.zeros(B, T, d)
    mask = torch.zeros(B, T, dtype=torch.bool)
    for b, it in enumerate(items):
        x[b, :len(it.features)] = torch.from_numpy(it.features.astype(np.float32))
        mask[b, :len(it.features)] = True
    batch = {"features": x.to(device), "mask": mask.to(device), "mention_tokens": [it.mention_tokens for it in items],
             "clause_tokens": [it.clause_tokens for it in items]}
    if not items[0].y:
        return batch
    y: dict = {}
    if component == "C1":
        tags = torch.zeros(B, T)
        for b, it in enumerate(items):
            tags[b, :len(it.y["tags"])] = torch.from_numpy(it.y["tags"])
        y["tags"] = tags
    elif component == "C2":
        y["templates"] = torch.from_numpy(np.stack([it.y["templates"] for it in items]))
        y["heartbeats"] = torch.tensor([it.y["heartbeats"] for it in items], dtype=torch.float32)
    elif component == "C4":
        for name in ("roles", "clause_roles"):
            width = max(1, max(len(it.y[name]) for it in items))
            t = torch.full((B, width), IGNORE, dtype=torch.long)
            for b, it in enumerate(items):
                t[b, :len(it.y[name])] = torch.from_numpy(it.y[name])
            y[name] = t
    elif component == "C5":
        y["n_nodes"] = torch.tensor([it.y["n_nodes"] for it in items])
        y["adjacency"] = torch.from_numpy(np.stack([it.y["adjacency"] for it in items]))
    elif component == "C6":
        y["format"] = torch.tensor([it.y["format"] for it in items])
        y["n_nodes"] = torch.tensor([it.y["n_nodes"] for it in items])
    else:  # C3
        M = max(1, max(len(it.mention_tokens) for it in items))
        y["n_nodes"] = torch.tensor([it.y["n_nodes"] for it in items])
        y["shape"] = torch.from_numpy(np.stack([it.y["shape"] for it in items])).long()
        y["template"] = torch.from_numpy(np.stack([it.y["template"] for it in items])).long()
        pointers = [pad_pointers(it.y["pointers"], len(it.mention_tokens), M) for it in items]
        y["pointers"] = torch.from_numpy(np.stack(pointers)).long()
    batch["y"] = {k: v.to(device) for k, v in y.items()}
    return batch


def _spans_of_tokens(on: np.ndarray, offsets: np.ndarray) -> list[tuple[int, int]]:
    spans: list[list[int]] = []
    for t in np.flatnonzero(on):
        s, e = map(int, offsets[t])
        if spans and s <= spans[-1][1] + 1:
            spans[-1][1] = max(spans[-1][1], e)
        else:
            spans.append([s, e])
    return [tuple(x) for x in spans]


def decode(component: str, out: dict, items: list[Item], questions: list[str], vocab: Vocab) -> list[dict]:
    """The batch's outputs as targets of ``component`` (one dict per item)."""
    o = {k: v.detach().cpu() if isinstance(v, torch.Tensor) else v for k, v in out.items()}
    preds = []
    for b, (it, q) in enumerate(zip(items, questions)):
        spans = candidate_mentions(q)
        if component == "C1":
            on = (o["tags"][b, :len(it.features)] > 0).numpy()
            preds.append({"spans": _spans_of_tokens(on, it.offsets), "match_spans": []})
        elif component == "C2":
            probs = torch.sigmoid(o["templates"][b])
            chosen = [vocab.templates[i] for i in torch.nonzero(probs > 0.5).flatten().tolist()] or \
                [vocab.templates[int(probs.argmax())]]
            preds.append({"templates": {t: 1 for t in chosen},
                          "heartbeats": max(0, round(float(o["heartbeats"][b]) * vocab.heartbeat_scale))})
        elif component == "C4":
            roles = o["roles"][b].argmax(-1).tolist()
            clause_roles = o["clause_roles"][b].argmax(-1).tolist()
            preds.append({"mentions": [{"span": s, "text": q[s[0]:s[1]], "role": ROLES[roles[i]]} for i, s in enumerate(spans)],
                          "clauses": [{"span": c, "role": CLAUSE_ROLES[clause_roles[i]]}
                                      for i, c in enumerate(clause_spans(q))]})
        elif component == "C5":
            n = int(it.y["n_nodes"]) if it.y else vocab.max_nodes
            e = o["edges"][b]
            preds.append({"edges": [(a, c) for a in range(n) for c in range(a + 1, n) if float(e[a, c]) > 0],
                          "order": list(range(n))})
        elif component == "C6":
            n = int(o["count"][b].argmax())
            preds.append({"format": FORMATS[int(o["format"][b].argmax())], "answer_node": max(0, n - 1)})
        else:
            preds.append(_program(o, b, spans, vocab))
    return preds


def _program(o: dict, b: int, spans: list[tuple[int, int]], vocab: Vocab) -> dict:
    M, N = o["n_mentions"], vocab.max_nodes
    n = max(1, int(o["count"][b].argmax()))
    nodes, quantities = [], {}
    for k in range(min(n, N)):
        shape = vocab.shapes[int(o["shape"][b, k].argmax())]
        refs, names = [], []
        for j in range(min(shape.count("{}"), vocab.max_operands)):
            cls = int(o["pointers"][b, k, j].argmax())
            if cls < M and cls < len(spans):
                s, e = spans[cls]
                refs.append(f"text:{s}-{e}")
                names.append(f"n{cls}")
                quantities[f"n{cls}"] = (s, e)
            elif M <= cls < M + N:
                refs.append(f"node:{cls - M}")
                names.append(f"r{cls - M}")
            else:
                value = vocab.constants[cls - M - N] if 0 <= cls - M - N < len(vocab.constants) else "0"
                refs.append(f"const:{value}")
                names.append(value)
        canonical = shape.format(*names) if len(names) == shape.count("{}") else ""
        nodes.append({"template": vocab.templates[int(o["template"][b, k].argmax())], "operands": refs,
                      "canonical": canonical})
    return {"nodes": nodes, "quantities": quantities}
