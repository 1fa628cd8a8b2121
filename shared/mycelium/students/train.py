"""Training one specialist: batches of cached features, AdamW, early stopping on the component's task metric.

Batches hold examples of similar length (``length_batches``): a random batch of GSM8K problems pads to its
longest, about 2.5 times the mean, and the padding costs as much as the text.

Under ``torchrun --nproc_per_node N`` the same call trains with DDP (NCCL on GPUs, gloo on CPU): every rank
walks the same shuffled order of global batches and takes its share of each, gradients are averaged, and rank
0 evaluates and keeps the best state. A global batch of B examples split over N ranks is then the same
optimisation step as one process taking all B (up to the per-token means of C1 over unequal shares).
"""

from __future__ import annotations

import copy
import os
import random
import time
from dataclasses import dataclass, field

import torch

from .data import Item, Vocab
from .decode import collate, decode
from .metrics import score
from .model import Student

#: The metrics early stopping watches, per component (higher is better), the later ones breaking ties of the
#: earlier: C6's format is constant on GSM8K (every answer an integer), so its answer node decides there.
PRIMARY = {"C1": ("char_f1",), "C2": ("template_micro_f1",), "C3": ("operand_exact_match", "node_count_accuracy"),
           "C4": ("mention_accuracy",), "C5": ("edge_f1",), "C6": ("format_accuracy", "answer_node_accuracy")}


def better(component: str, metrics: dict, best: dict) -> bool:
    key = lambda m: tuple(m[k] for k in PRIMARY[component])  # noqa: E731
    return key(metrics) > key(best)


@dataclass
class TrainOptions:
    epochs: int = 8
    batch_size: int = 32
    lr: float = 1e-3
    backbone_lr: float = 2e-5
    weight_decay: float = 0.01
    patience: int = 2
    seed: int = 0
    progress: bool = True


@dataclass
class History:
    epochs: list[dict] = field(default_factory=list)
    best_epoch: int = -1
    best: dict = field(default_factory=dict)
    seconds: float = 0.0
    examples_per_s: float = 0.0


def world() -> tuple[int, int]:
    """(rank, world size): from torchrun's environment, else (0, 1)."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def init_distributed() -> None:
    """Join torchrun's process group once (NCCL when CUDA is there, else gloo)."""
    import torch.distributed as dist

    if world()[1] > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")


def length_batches(lengths: list[int], batch_size: int, rng: random.Random | None = None,
                   pool: int = 64) -> list[list[int]]:
    """Batches of indices of similar length (little padding): shuffled, then sorted by length within pools of
    ``pool`` batches, and the batches shuffled. Without ``rng``: every index in length order (evaluation)."""
    order = list(range(len(lengths)))
    if rng is None:
        order.sort(key=lambda i: lengths[i])
        return [order[s:s + batch_size] for s in range(0, len(order), batch_size)]
    rng.shuffle(order)
    out = []
    for s in range(0, len(order), batch_size * pool):
        chunk = sorted(order[s:s + batch_size * pool], key=lambda i: lengths[i])
        out += [chunk[j:j + batch_size] for j in range(0, len(chunk), batch_size)]
    rng.shuffle(out)
    return out


def evaluate(model: Student, items: list[Item], questions: list[str], gold: list[dict], vocab: Vocab,
             batch_size: int = 64) -> tuple[dict, list[dict]]:
    model.eval()
    c, preds = model.cfg.component, [None] * len(items)
    with torch.no_grad():
        for idx in length_batches([len(it.features) for it in items], batch_size):
            part = [items[i] for i in idx]
            for i, p in zip(idx, decode(c, model(collate(part, c)), part, [questions[i] for i in idx], vocab)):
                preds[i] = p
    model.train()
    return score(c, preds, gold), preds


def train(model: Student, train_items: list[Item], val_items: list[Item], val_questions: list[str],
          val_gold: list[dict], opts: TrainOptions) -> History:
    """Train ``model`` in place (its best epoch's state on val at the end) and return the history."""
    import torch.distributed as dist
    from tqdm import tqdm

    rank, size = world()
    init_distributed()
    c, vocab = model.cfg.component, model.vocab
    torch.manual_seed(opts.seed)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]  # LoRA: the adapters, not the layers
    backbone = [p for n, p in trainable if n.startswith(("top.", "norm."))]
    heads = [p for n, p in trainable if not n.startswith(("top.", "norm."))]
    groups = [{"params": heads, "lr": opts.lr}] + ([{"params": backbone, "lr": opts.backbone_lr}] if backbone else [])
    optim = torch.optim.AdamW(groups, weight_decay=opts.weight_decay)
    net = model
    if size > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, find_unused_parameters=True)
    steps_per_epoch = len(length_batches([0] * len(train_items), opts.batch_size, random.Random(0)))
    total = steps_per_epoch * opts.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(optim, lambda s: min(1.0, (s + 1) / max(1, total // 20))
                                              * max(0.05, 1 - s / max(1, total)))
    history, best_state, bad = History(), None, 0
    rng = random.Random(opts.seed)
    start = time.perf_counter()
    seen = 0
    lengths = [len(it.features) for it in train_items]
    for epoch in range(opts.epochs):
        bar = tqdm(total=len(train_items), desc=f"{c} epoch {epoch + 1}/{opts.epochs}", unit="ex",
                   disable=not opts.progress or rank != 0)
        losses = []
        for global_batch in length_batches(lengths, opts.batch_size, rng):  # the same on every rank
            mine = global_batch[rank::size]
            if not mine:  # a short last batch: every rank must still take part in the all-reduce
                mine = global_batch[:1]
            batch = collate([train_items[i] for i in mine], c)
            loss = model.loss(net(batch), batch)
            optim.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optim.step()
            sched.step()
            losses.append(float(loss.detach()))
            seen += len(global_batch)
            bar.update(len(global_batch))
            bar.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.3f}",
                            ex_s=f"{seen / (time.perf_counter() - start):.0f}")
        bar.close()
        metrics, _ = evaluate(model, val_items, val_questions, val_gold, vocab) if rank == 0 else ({}, None)
        if size > 1:  # rank 0's decision, for every rank
            flag = [metrics]
            dist.broadcast_object_list(flag, src=0)
            metrics = flag[0]
        history.epochs.append({"epoch": epoch + 1, "loss": sum(losses) / max(1, len(losses)), **metrics})
        if history.best_epoch < 0 or better(c, metrics, history.best):
            history.best_epoch, history.best, bad = epoch + 1, dict(metrics), 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            bad += 1
            if bad >= opts.patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    history.seconds = time.perf_counter() - start
    history.examples_per_s = seen / max(history.seconds, 1e-9)
    return history
