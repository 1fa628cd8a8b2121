"""Train the reader: step programs in, a saved reader out, with a checkpoint every epoch (a run cut off
partway resumes where it stopped) and val metrics beside a baseline.

Programs come from a source (``programs``): GSM8K's own annotations (string-matched operands) or a labelled
run's teacher programs (the values the teacher read). The split is merge's (``split_of``, by problem id), so
val is the same problems whatever the source. Early stopping keeps the epoch with the best val answer accuracy
(greedy decoding; the beam is for the final evaluation).
"""

from __future__ import annotations

import json
import math
import random
import time
from collections import Counter
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from ..analysis.numwords import mentions
from ..core.errors import ConfigError
from ..programs.examples import answer_format
from ..programs.steps import OPS, StepProgram, as_text, run_slots
from ..students.data import FORMATS
from .encode import Encoded
from .reader import MAX_READINGS, Reader, ReaderConfig, ReaderItem, collate, make_item
from .reader_data import Labelled, annotation_programs, run_programs  # noqa: F401 - the programs' sources

DEPTHS = (0.2, 0.4, 8 / 15, 2 / 3, 0.8, 1.0)  # of the backbone's depth: layers 6, 12, 16, 20, 24, 30 of 30


def default_layers(n_layers: int) -> list[int]:
    """The layers whose mix the reader learns, by default: six depths from a fifth of the way to the last."""
    return sorted({max(1, round(n_layers * f)) for f in DEPTHS})


@dataclass
class TrainOptions:
    epochs: int = 12
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.01
    patience: int = 4
    min_constant_count: int = 20
    limit: int | None = None  # train on the first N train programs (the learning curve)
    seed: int = 0
    progress: bool = True
    hidden: int = 256
    layers: list[int] | None = None  # hidden-state indices mixed (default: default_layers of the backbone)
    sets: bool = True  # False (ablation): one target per step, not every candidate of the right value
    train_layers: int = 0  # the backbone's top K layers trained with the reader (0: frozen features only)
    top_lr: float = 1e-4  # their peak learning rate (they start pretrained)
    lora_rank: int = 0  # > 0: LoRA adapters of this rank on the top layers instead of the layers themselves
    readings: int = MAX_READINGS  # a mention's readings among the candidates (1, the ablation: as written only)
    augment: int = 0  # variants per train program with its numbers re-sampled (``augment.step_variants``)


def fit_constants(programs: list[Labelled], min_count: int) -> list[str]:
    """Values programs read that no mention of their problem holds, seen at least ``min_count`` times."""
    counts: Counter = Counter()
    for p in programs:
        held = {v for m in mentions(p.question) for v in m.values}
        counts.update({v for v in p.program.leaves() if v not in held})
    return [str(v) for v, n in counts.most_common() if n >= min_count]


def items_for(programs: list[Labelled], encoded: dict, cfg: ReaderConfig, sets: bool = True
              ) -> tuple[list[ReaderItem], list[Labelled], Counter]:
    """The programs the reader can express (every operand held by a candidate) as items, those programs (one
    per item), and why the rest are not expressible. A problem with ``alternatives`` (the loop's other right
    programs) is one item per expressible program, grouped: one set target."""
    items, kept, dropped = [], [], Counter()
    for p in programs:
        for prog in [p.program] + p.alternatives:
            if len(prog.steps) > cfg.max_steps:
                dropped["more steps than max_steps"] += 1
                continue
            try:
                item = make_item(p.question, encoded[p.question], cfg, prog, answer_format(p.answer), sets)
            except ValueError:
                dropped["an operand no candidate holds"] += 1
                continue
            item.group = p.id if p.alternatives else None
            items.append(item)
            kept.append(p)
    return items, kept, dropped


def features_for(teacher, cfg: ReaderConfig, texts: list[str], cache: Path | None = None, progress: bool = True
                 ) -> dict[str, Encoded]:
    """text -> the stored layers ``cfg`` reads (``stored_layers``); a subset of the default layers is read from
    their cache, so one encoding serves every variant."""
    from .encode import frozen_features

    need = tuple(cfg.stored_layers())
    defaults = tuple(default_layers(teacher.config.num_hidden_layers))
    stored = defaults if set(need) <= set(defaults) else need
    encoded = frozen_features(teacher, texts, 0, progress=progress, cache=cache, layers=stored)
    if stored != need:
        encoded = {t: e.layers(stored, need) for t, e in encoded.items()}
    return encoded


def augmented(programs: list[Labelled], k: int, seed: int = 0) -> list[Labelled]:
    """Up to ``k`` variants of each train program with its numbers re-sampled (train only: a variant of a val
    problem would leak it)."""
    from ..programs.augment import answer_like, step_variants
    from ..records.datasets import problem_id

    out = []
    for p in programs:
        for text, prog in step_variants(p.question, p.program, k, f"{seed}:{p.id}"):
            out.append(Labelled(problem_id(text), text, answer_like(as_text(prog.answer), p.answer), prog, "train"))
    return out


def _batches(items: list, size: int, rng: random.Random) -> list[list]:
    """Batches of similar length (less padding), in random order; a group's items (one set target) stay in one
    batch."""
    draw = {}
    for it in items:
        draw.setdefault(it.group if it.group is not None else id(it), rng.random())
    order = sorted(items, key=lambda it: (len(it.features), draw[it.group if it.group is not None else id(it)]))
    batches, cur = [], []
    for k, it in enumerate(order):
        cur.append(it)
        last = k + 1 == len(order)
        if last or (len(cur) >= size and (it.group is None or order[k + 1].group != it.group)):
            batches.append(cur)
            cur = []
    rng.shuffle(batches)
    return batches


@torch.no_grad()
def greedy(model: Reader, batch: dict, constrain=None) -> list[list[tuple[int, int, int]]]:
    """The most probable step at each step (STOP ends), for a batch. ``constrain(k, logp, stop)`` (the oracle
    ladder) may rule steps out (-inf) before each choice."""
    ctx = model.start(batch)
    B = ctx["cand"].shape[0]
    out: list[list] = [[] for _ in range(B)]
    alive = torch.ones(B, dtype=torch.bool)
    for k in range(model.cfg.max_steps):
        logp, stop = model.scores(ctx)
        if constrain is not None:
            logp, stop = constrain(k, logp, stop)
        flat = logp.flatten(1)
        best, idx = flat.max(1)
        halt = stop >= best
        S = logp.shape[1]
        op, i, j = idx % len(OPS), idx // (S * len(OPS)), (idx // len(OPS)) % S
        go = alive & ~halt
        for b in torch.nonzero(go).flatten().tolist():
            out[b].append((int(op[b]), int(i[b]), int(j[b])))
        alive = go
        if not alive.any():
            break
        ctx = model.advance(ctx, op, i, j, go=go)
    return out


def run_values(steps, values: list[Fraction]) -> Fraction | None:
    """The answer of ``steps`` over slot values (``steps.run_slots``), None for no steps or one that fails."""
    out = run_slots(steps, values)
    return out[-1] if out else None


def slot_values(item: ReaderItem, width: int) -> list[Fraction]:
    """An item's candidate values padded to a batch's ``width`` (result slots start there)."""
    return [c.value for c in item.cand] + [Fraction(0)] * (width - len(item.cand))


def evaluate_items(model: Reader, items: list[ReaderItem], answers: list[str], batch_size: int = 64) -> dict:
    """Teacher-forced step top-1 and operand-slot top-1, free-running exact match and answer accuracy (greedy)."""
    from ..programs.execute import exact

    model.eval()
    step_hit = slot_hit = steps = slots = exact_hit = answer_hit = 0
    for k in range(0, len(items), batch_size):
        chunk, gold = items[k:k + batch_size], answers[k:k + batch_size]
        batch = collate(chunk, model.cfg)
        ctx = model.start(batch)
        C = batch["n_cand"]
        for t in range(model.cfg.max_steps):
            live = batch["live"][:, t] & ~batch["stop"][:, t]
            if not live.any():
                break
            logp, _ = model.scores(ctx)
            S = logp.shape[1]
            idx = logp.flatten(1).argmax(1)
            op, i, j = idx % len(OPS), idx // (S * len(OPS)), (idx // len(OPS)) % S
            for b in torch.nonzero(live).flatten().tolist():
                tg = batch["target"][b, t]
                steps += 1
                step_hit += bool(tg[i[b], j[b], op[b]])
                ok_a, ok_b = tg[i[b]].any(), tg[:, j[b]].any()  # this slot's value is one a target step reads
                slots += 2
                slot_hit += int(bool(ok_a)) + int(bool(ok_b))
            ch = batch["chosen"][:, t]
            ctx = model.advance(ctx, ch[:, 0], ch[:, 1], ch[:, 2], go=live)
        for it, prog, g in zip(chunk, greedy(model, batch), gold):
            v = run_values(prog, slot_values(it, C))
            answer_hit += v is not None and exact(g) is not None and v == exact(g)
            exact_hit += len(prog) == len(it.targets) and all(
                _slot_step(s, C, len(it.cand)) in {(op, i, j) for op, i, j in tg} for s, tg in zip(prog, it.targets))
    n = max(1, len(items))
    return {"n": len(items), "step_top1": step_hit / max(1, steps), "operand_top1": slot_hit / max(1, slots),
            "exact_match": exact_hit / n, "answer_accuracy": answer_hit / n}


def _slot_step(s, width: int, n_cand: int):
    """A step over batch-padded slots back to the problem's own candidate indices."""
    op, i, j = s
    back = lambda x: x if x < n_cand else x - width + n_cand  # noqa: E731
    return (op, back(i), back(j))


def train(labelled: list[Labelled], teacher, out: Path, opts: TrainOptions, cache: Path | None = None,
          provenance: dict | None = None, work: Path | None = None, start: Path | None = None) -> dict:
    """Train (or resume) a reader on the train split of ``labelled``; save the best epoch's weights in ``out``.
    The resumable state (``checkpoint.pt``, ``best.pt``) is kept in ``work`` (default: ``out``), so a shipped
    ``out`` holds only the weights, config, provenance and metrics. ``start``: a saved reader to go on from (its
    config and constants; the loop's rounds), instead of new weights."""
    from tqdm import tqdm

    from .encode import backbone_id
    from .saved import write_trained_on

    torch.manual_seed(opts.seed)
    rng = random.Random(opts.seed)
    train_p = [p for p in labelled if p.split == "train"][:opts.limit]
    constants = fit_constants(train_p, opts.min_constant_count)  # before augmentation: its copies would count
    train_p += augmented(train_p, opts.augment, opts.seed)
    val_p = [p for p in labelled if p.split == "val"]
    if not train_p or not val_p:
        raise ConfigError(f"reader: {len(train_p)} train and {len(val_p)} val programs; both splits are needed")
    defaults = default_layers(teacher.config.num_hidden_layers)
    begun = load(start, teacher).train() if start is not None else None
    cfg = ReaderConfig(backbone=backbone_id(teacher), d_in=teacher.config.hidden_size,
                       layers=list(opts.layers or defaults),
                       constants=constants, formats=list(FORMATS),
                       hidden=opts.hidden, train_layers=opts.train_layers,
                       depth=teacher.config.num_hidden_layers, lora_rank=opts.lora_rank,
                       readings=opts.readings) if begun is None else begun.cfg
    texts = [p.question for p in train_p + val_p]
    encoded = features_for(teacher, cfg, texts, cache, opts.progress)
    train_items, _, dropped = items_for(train_p, encoded, cfg, opts.sets)
    val_items, val_kept, _ = items_for(val_p, encoded, cfg)
    val_answers = [p.answer for p in val_kept]
    model = Reader(cfg, teacher.model) if begun is None else begun
    top = [p for n, p in model.named_parameters() if n.startswith("top") and p.requires_grad]
    rest = [p for n, p in model.named_parameters() if not n.startswith("top")]
    groups = [{"params": rest, "lr": opts.lr}] + ([{"params": top, "lr": opts.top_lr}] if top else [])
    optim = torch.optim.AdamW(groups, lr=opts.lr, weight_decay=opts.weight_decay)
    work = Path(work or out)
    work.mkdir(parents=True, exist_ok=True)
    ckpt_path = work / "checkpoint.pt"
    state = {"epoch": 0, "best": -1.0, "best_epoch": 0, "curve": [], "stale": 0}
    if ckpt_path.exists():
        ck = torch.load(ckpt_path, weights_only=False)
        if ck["config"] != cfg.to_dict() or ck.get("options") != _hashed(opts):
            raise ConfigError(f"{ckpt_path}: a checkpoint of another configuration; remove it to start afresh")
        model.load_state_dict(ck["model"])
        optim.load_state_dict(ck["optim"])
        state = ck["state"]
        rng.setstate(ck["rng"])
        torch.set_rng_state(ck["torch_rng"])
    steps_per_epoch = math.ceil(len(train_items) / opts.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(optim, [g["lr"] for g in groups], total_steps=max(1, opts.epochs * steps_per_epoch),
                                                pct_start=0.1, last_epoch=state["epoch"] * steps_per_epoch - 1)
    while state["epoch"] < opts.epochs and state["stale"] < opts.patience:
        model.train()
        t0, total, n = time.perf_counter(), 0.0, 0
        batches = _batches(train_items, opts.batch_size, rng)
        for batch_items in tqdm(batches, desc=f"reader epoch {state['epoch'] + 1}", unit="batch",
                                disable=not opts.progress):
            loss, _ = model.loss(collate(batch_items, cfg))
            optim.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optim.step()
            sched.step()
            total, n = total + loss.item(), n + 1
        seconds = time.perf_counter() - t0
        val = evaluate_items(model, val_items, val_answers)
        state["epoch"] += 1
        state["curve"].append({"epoch": state["epoch"], "loss": total / max(1, n), "seconds": round(seconds, 1)} | val)
        if val["answer_accuracy"] > state["best"]:
            state |= {"best": val["answer_accuracy"], "best_epoch": state["epoch"], "stale": 0}
            torch.save(model.state_dict(), work / "best.pt")
        else:
            state["stale"] += 1
        torch.save({"config": cfg.to_dict(), "options": _hashed(opts), "model": model.state_dict(), "optim": optim.state_dict(),
                    "state": state, "rng": rng.getstate(), "torch_rng": torch.get_rng_state()}, ckpt_path)
        if opts.progress:
            print(f"epoch {state['epoch']}: loss {total / max(1, n):.3f}, val {json.dumps(val)} ({seconds:.0f} s)")
    model.load_state_dict(torch.load(work / "best.pt"))
    metrics = {"best_epoch": state["best_epoch"], "val": state["curve"][state["best_epoch"] - 1],
               "train_programs": len(train_items), "val_programs": len(val_items),
               "dropped": dict(dropped), "constants": cfg.constants, "curve": state["curve"]}
    save(model, out, (provenance or {}) | {"train_problems": len(train_p)}, metrics)
    write_trained_on(out, set(texts))  # evaluation refuses these problems (by content hash)
    return metrics


def _hashed(opts: TrainOptions) -> dict:
    """The options a checkpoint's weights depend on (not how long to train or how to show it)."""
    return {k: v for k, v in vars(opts).items() if k not in ("epochs", "patience", "progress")}


def save(model: Reader, out: Path, provenance: dict, metrics: dict) -> Path:
    from safetensors.torch import save_file

    from .top import trained_state

    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.half() for k, v in trained_state(model).items()}, str(out / "model.safetensors"))
    (out / "config.json").write_text(json.dumps(model.cfg.to_dict(), indent=1))
    (out / "provenance.json").write_text(json.dumps(provenance, indent=1))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    from .saved import _plot

    _plot([{k: v for k, v in c.items() if k not in ("n", "seconds")} for c in metrics.get("curve", [])], "reader",
          out / "curve.png")
    return out


def load(path: Path, teacher) -> Reader:
    """The reader saved in ``path``, for ``teacher``'s backbone; a ConfigError names what does not match."""
    from safetensors.torch import load_file

    from .encode import backbone_id
    from .top import check_loaded

    path = Path(path)
    if not (path / "config.json").is_file():
        raise ConfigError(f"{path}: no saved reader (config.json missing)")
    try:
        cfg = ReaderConfig(**json.loads((path / "config.json").read_text()))
    except TypeError as e:
        raise ConfigError(f"{path}/config.json: not a reader config this version reads ({e})") from None
    if cfg.backbone != backbone_id(teacher):
        raise ConfigError(f"{path}: trained on backbone {cfg.backbone}, not {backbone_id(teacher)}")
    model = Reader(cfg, teacher.model)
    missing, unexpected = model.load_state_dict(
        {k: v.float() for k, v in load_file(str(path / "model.safetensors")).items()}, strict=False)
    check_loaded(model, missing, unexpected, path)
    return model.eval()
