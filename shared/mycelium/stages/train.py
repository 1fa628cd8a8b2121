"""Stage 8, train: the six specialists from a run's merged examples -> ``<out>/<component>/``.

Reads ``training/<C>/{train,val}.jsonl`` (merge's output, committed with the current lineage), encodes every
question once with the frozen part of the backbone, fits the vocabularies on train, trains each component
with early stopping on its task metric, and scores it on val beside the trivial baselines of
``students.metrics`` measured on the same examples. Runs as one process or under ``torchrun`` (DDP).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

from ..core.errors import RunNotFoundError
from ..core.keys import RUN_ITEM, RunKeys
from ..core.lineage import current_lineage, mismatch, read_commit
from ..core.store import Store, jsonl
from ..records.programs import COMPONENTS
from ..students.data import Vocab, make_item
from ..students.metrics import Baselines, score
from ..students.train import TrainOptions, evaluate, train, world


def read_training(store: Store, run: str, round: int = 0) -> tuple[dict[str, dict[str, list[dict]]], dict]:
    """component -> split -> examples, and the provenance (merge's lineage, each file's sha256). ``round``: an
    improvement round's merge (``merge-r<k>``) instead of the teacher's."""
    keys = RunKeys(run)
    stage = "merge" if round == 0 else f"merge-r{round}"
    commit = read_commit(store, keys, stage, RUN_ITEM)
    if commit is None:
        raise RunNotFoundError(f"run {run!r}: no merged training data ({stage}): run `mycelium label` and "
                               f"`mycelium merge --run {run}` first")
    why = mismatch(current_lineage(store, keys, stage), commit.lineage)
    if why:
        raise RunNotFoundError(f"run {run!r}: the merged training data ({stage}) is stale ({why}): run "
                               f"`mycelium merge --run {run}`")
    data, digests = {}, {}
    for c in COMPONENTS:
        data[c] = {}
        for split in ("train", "val"):
            key = keys.training(c, split, round)
            raw = store.get(key)
            digests[f"{c}/{split}"] = hashlib.sha256(raw).hexdigest()
            if commit.outputs.get(key) != digests[f"{c}/{split}"]:
                raise RunNotFoundError(f"{store.url}/{key}: not the bytes merge committed (changed or cut off)")
            data[c][split] = [json.loads(line) for line in jsonl(raw)]
    return data, {"run": run, "merge_lineage": commit.lineage, "sha256": digests, "round": round}


def _root(e: dict) -> str:
    return e.get("parent_id") or e["problem_id"]


def _first_problems(data: dict, n: int) -> dict:
    return only_problems(data, set(sorted({_root(e) for c in data for e in data[c]["train"]})[:n]))


def problems_digest(problems) -> str:
    return hashlib.sha256("\n".join(sorted(problems)).encode()).hexdigest()[:12]


def only_problems(data: dict, keep: set[str]) -> dict:
    """The train examples of the problems in ``keep`` (a variant with its parent); val untouched."""
    return {c: {**data[c], "train": [e for e in data[c]["train"] if _root(e) in keep]} for c in data}


def run_train(store: Store, run: str, out: Path, teacher, components: list[str], opts: TrainOptions | None = None,
              val_source: str = "teacher", train_problems: int | None = None, feature_cache: Path | None = None,
              from_round: int = 0, problems: set[str] | None = None, **design) -> dict[str, dict]:
    """Train ``components``; return component -> {"val": metrics, "baselines": {name: metrics}, ...}.

    ``train_problems``: train on the examples of the first N train problems only (by problem id, a variant with
    its parent), for learning curves and quick comparisons; val is always the whole val split. ``problems``: the
    same by problem id (an improvement loop's problems). ``from_round``: an improvement round's merged data.
    ``feature_cache``: a directory of encoded texts (``encode.FeatureCache``), read and extended.

    ``design``: the StudentConfig fields every component shares (train_layers, placeholders, lora_rank, hidden,
    adapter_layers, dropout, heads); the rest of the config comes from the data and the backbone."""
    from ..students.encode import backbone_id, frozen_features
    from ..students.model import StudentConfig
    import torch

    from ..students.saved import build, save, write_trained_on

    opts = opts or TrainOptions()
    rank, _ = world()
    data, provenance = read_training(store, run, from_round)
    if problems is not None:
        data = only_problems(data, problems)
        provenance["problems"] = problems_digest(problems)
    if train_problems is not None:
        data = _first_problems(data, train_problems)
        provenance["train_problems"] = train_problems
    if not any(data[c]["train"] for c in components):
        raise RunNotFoundError(f"run {run!r}: the merged training data has no train examples")
    vocab = Vocab.fit({c: [e["target"] for e in data[c]["train"]] for c in COMPONENTS})
    questions = sorted({e["question"] for c in components for s in ("train", "val") for e in data[c][s]})
    train_layers, placeholders = design.get("train_layers", 0), design.get("placeholders", False)
    encoded = frozen_features(teacher, questions, train_layers, progress=opts.progress and rank == 0,
                              placeholders=placeholders, cache=feature_cache)
    if rank == 0:
        write_trained_on(Path(out), {e["question"] for c in data for s in data[c].values() for e in s})
    baselines = Baselines({k: [e["target"] for e in data[k]["train"]] for k in COMPONENTS})  # fitted once
    results = {}
    for c in components:
        train_ex = data[c]["train"]
        val_ex = [e for e in data[c]["val"] if val_source == "all" or e["provenance"]["source"] == val_source]
        if not train_ex or not val_ex:
            results[c] = {"skipped": f"{len(train_ex)} train and {len(val_ex)} val examples"}
            continue
        train_items = [make_item(c, e["question"], e["target"], encoded[e["question"]], vocab) for e in train_ex]
        val_items = [make_item(c, e["question"], e["target"], encoded[e["question"]], vocab) for e in val_ex]
        cfg = StudentConfig(component=c, backbone=backbone_id(teacher), d_in=int(encoded[questions[0]].features.shape[1]),
                            vocab=asdict(vocab), **design)
        torch.manual_seed(opts.seed)  # the same initial weights on every rank and every run
        model = build(cfg, teacher)
        gold = [e["target"] for e in val_ex]
        qs = [e["question"] for e in val_ex]
        history = train(model, train_items, val_items, qs, gold, opts)
        if rank != 0:
            continue
        val, _ = evaluate(model, val_items, qs, gold, vocab)
        base_preds: dict[str, list[dict]] = {}
        for e in val_ex:
            for name, p in baselines.predict(c, e, e["target"]).items():
                base_preds.setdefault(name, []).append(p)
        metrics = {"val": val, "baselines": {n: score(c, p, gold) for n, p in base_preds.items()},
                   "n_train": len(train_ex), "n_val": len(val_ex), "val_source": val_source,
                   "best_epoch": history.best_epoch, "seconds": round(history.seconds, 1),
                   "examples_per_s": round(history.examples_per_s, 1),
                   "unlearnable_slots": sum(it.skipped_slots for it in train_items)}
        save(model, Path(out) / c, {**provenance, "options": asdict(opts), "teacher": teacher.model_id}, metrics,
             history.epochs)
        results[c] = metrics
    return results
