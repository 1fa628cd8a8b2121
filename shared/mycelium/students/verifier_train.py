"""Train the verifier on the reader's beams (``solver.beams``): train-split beams teach, val-split beams pick
the epoch and give its metric beside the baseline of the same beams (beam order).

The beams that teach should come from a reader that did not train on their problems (the loop's cross-fitted
fold readers, ``stages.reader_loop``): a reader's beams on its own training problems put the right value first
twice as often as on new problems (43 % against 19 % on GSM8K train), so they are not the beams the verifier
meets at inference (``benchmarks/verifier_beams.py`` measures both kinds on the same val beams).
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..core.errors import ConfigError
from .verifier import FACTS, Verifier, VerifierConfig, VerifierItem, collate, make_item


def verifier_layers(n_layers: int) -> list[int]:
    """The hidden states the verifier mixes: two of the reader's (8/15 and 4/5 of the depth; layers 16 and 24
    of 30), so its features come from the reader's cache and two layers keep a whole train split in memory."""
    return sorted({max(1, round(n_layers * 8 / 15)), max(1, round(n_layers * 0.8))})


@dataclass
class VerifierOptions:
    epochs: int = 8
    batch_size: int = 16  # problems (their whole beams) per batch
    lr: float = 1e-3
    weight_decay: float = 0.01
    patience: int = 3
    hidden: int = 128
    seed: int = 0
    progress: bool = True


def items_for(records: list[dict], questions: dict[str, str], encoded: dict, reader_cfg) -> list[VerifierItem]:
    """A beam line per item (its problem's text joined back by id), as the reader ``reader_cfg`` read it."""
    return [make_item(questions[r["id"]], encoded[questions[r["id"]]], r["candidates"], reader_cfg.constants,
                      reader_cfg.readings) for r in records]


def encode(teacher, texts: list[str], cache: Path | None, progress: bool = True) -> dict:
    """text -> Encoded with the verifier's layers (``verifier_layers``, read from the reader's feature cache)."""
    from .reader_train import default_layers
    from .encode import frozen_features

    n = teacher.config.num_hidden_layers
    stored, layers = tuple(default_layers(n)), verifier_layers(n)
    encoded = frozen_features(teacher, texts, 0, progress=progress, cache=cache, layers=stored)
    return {t: e.layers(stored, layers) for t, e in encoded.items()}


@torch.no_grad()
def score(model: Verifier, items: list[VerifierItem], batch_size: int = 32) -> list[list[float]]:
    """Each item's candidates' scores (logits), in beam order."""
    model.eval()
    out: list[list[float]] = []
    for k in range(0, len(items), batch_size):
        chunk = items[k:k + batch_size]
        live = [it for it in chunk if it.facts]
        s = model(collate(live, model.cfg)).tolist() if live else []
        for it in chunk:
            out.append(s[:len(it.facts)])
            s = s[len(it.facts):]
    return out


def auc(scores: list[float], labels: list[bool]) -> float | None:
    """The probability that a right candidate outscores a wrong one (ties count half); None without both."""
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    if not pos or not neg:
        return None
    from scipy.stats import rankdata

    ranks = rankdata(pos + neg)  # ties share their average rank (Mann-Whitney)
    return float((ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def choose(candidates: list[dict], scores: list[float], how: str) -> int | None:
    """The chosen candidate's index: ``beam`` (the beam's first), ``verifier`` (the best score) or ``weighted``
    (the beam's pooled mass of a value times the verifier's probability that it is right)."""
    if not candidates:
        return None
    if how == "beam":
        return 0
    if how == "verifier":
        return int(np.argmax(scores))
    if how == "weighted":
        return int(np.argmax([c["mass"] / (1 + np.exp(-s)) for c, s in zip(candidates, scores)]))
    raise ValueError(f"choose: {how!r} is not beam, verifier or weighted")


def pass_at_beam(records: list[dict]) -> float:
    """The share of beams (``solver.beams`` lines) holding a right candidate anywhere: the verifier's ceiling."""
    return sum(any(c["correct"] for c in r["candidates"]) for r in records) / max(1, len(records))


def ranking_metrics(records: list[dict], scores: list[list[float]]) -> dict:
    """On the same beams: pass@beam, top-1 in beam order, after reranking and by weighted vote, and AUC."""
    n = max(1, len(records))
    out = {"n": len(records), "pass_at_beam": pass_at_beam(records)}
    for how in ("beam", "verifier", "weighted"):
        hits = 0
        for r, s in zip(records, scores):
            i = choose(r["candidates"], s, how)
            hits += i is not None and bool(r["candidates"][i]["correct"])
        out[f"top1_{how}"] = hits / n
    flat = [(x, bool(c["correct"])) for r, s in zip(records, scores) for c, x in zip(r["candidates"], s)]
    out["auc"] = auc([x for x, _ in flat], [y for _, y in flat])
    beam = [(-k, bool(c["correct"])) for r in records for k, c in enumerate(r["candidates"])]
    out["auc_beam_order"] = auc([x for x, _ in beam], [y for _, y in beam])
    return out


def train(train_items: list[VerifierItem], val_items: list[VerifierItem], val_records: list[dict], teacher,
          out: Path, opts: VerifierOptions, provenance: dict | None = None) -> dict:
    """A verifier from ``train_items``, the epoch with the best val top-1 after reranking kept; saved in ``out``
    with its metrics beside beam order's on the same val beams."""
    from tqdm import tqdm

    torch.manual_seed(opts.seed)
    rng = random.Random(opts.seed)
    train_items = [it for it in train_items if it.facts]
    if not train_items or not val_items:
        raise ConfigError(f"verifier: {len(train_items)} train and {len(val_items)} val beams; both are needed")
    from .encode import backbone_id

    f = np.array([x for it in train_items for x in it.facts])
    cfg = VerifierConfig(backbone=backbone_id(teacher), d_in=int(train_items[0].features.shape[2]),
                         layers=verifier_layers(teacher.config.num_hidden_layers),
                         hidden=opts.hidden, mean=f.mean(0).tolist(), std=(f.std(0) + 1e-6).tolist())
    model = Verifier(cfg)
    optim = torch.optim.AdamW(model.parameters(), lr=opts.lr, weight_decay=opts.weight_decay)
    best, best_state, curve, stale = -1.0, None, [], 0
    for epoch in range(1, opts.epochs + 1):
        model.train()
        order = sorted(range(len(train_items)), key=lambda i: (len(train_items[i].features), rng.random()))
        batches = [order[k:k + opts.batch_size] for k in range(0, len(order), opts.batch_size)]
        rng.shuffle(batches)
        t0, total = time.perf_counter(), 0.0
        for b in tqdm(batches, desc=f"verifier epoch {epoch}", unit="batch", disable=not opts.progress):
            loss = model.loss(collate([train_items[i] for i in b], cfg))
            optim.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optim.step()
            total += loss.item()
        val = ranking_metrics(val_records, score(model, val_items))
        curve.append({"epoch": epoch, "loss": total / len(batches), "seconds": round(time.perf_counter() - t0, 1)}
                     | val)
        if opts.progress:
            print(f"verifier epoch {epoch}: {json.dumps(curve[-1])}")
        if val["top1_verifier"] > best:
            best, stale = val["top1_verifier"], 0
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
            if stale >= opts.patience:
                break
    model.load_state_dict(best_state)
    best_epoch = max(curve, key=lambda c: (c["top1_verifier"], -c["epoch"]))
    metrics = {"val": best_epoch, "best_epoch": best_epoch["epoch"], "train_beams": len(train_items),
               "train_candidates": sum(len(it.facts) for it in train_items),
               "train_right": sum(bool(y) for it in train_items for y in it.labels), "curve": curve}
    save(model, out, provenance or {}, metrics)
    return metrics


def save(model: Verifier, out: Path, provenance: dict, metrics: dict) -> Path:
    from safetensors.torch import save_file

    from .saved import _plot

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.half().contiguous() for k, v in model.state_dict().items()}, str(out / "model.safetensors"))
    (out / "config.json").write_text(json.dumps(model.cfg.to_dict(), indent=1))
    (out / "provenance.json").write_text(json.dumps(provenance, indent=1))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    _plot([{k: c[k] for k in ("epoch", "loss", "top1_beam", "top1_verifier", "auc")} for c in metrics["curve"]],
          "verifier", out / "curve.png")
    return out


def load(path: Path, backbone: str) -> Verifier:
    """The verifier saved in ``path``; a ConfigError names what does not match."""
    from safetensors.torch import load_file

    path = Path(path)
    if not (path / "config.json").is_file():
        raise ConfigError(f"{path}: no saved verifier (config.json missing)")
    try:
        cfg = VerifierConfig(**json.loads((path / "config.json").read_text()))
    except TypeError as e:
        raise ConfigError(f"{path}/config.json: not a verifier config this version reads ({e})") from None
    if cfg.backbone != backbone:
        raise ConfigError(f"{path}: trained on backbone {cfg.backbone}, not {backbone}")
    if tuple(cfg.facts) != FACTS:
        raise ConfigError(f"{path}: reads other program facts than this version computes")
    model = Verifier(cfg)
    model.load_state_dict({k: v.float() for k, v in load_file(str(path / "model.safetensors")).items()})
    return model.eval()
