"""What each of the reader's levers buys, on merge's val split of GSM8K train (annotation programs), each variant
trained in this run on the same first N train programs, beside the trivial baseline on the same val problems.

    python benchmarks/reader_levers.py --n 1000 --epochs 5 [--curve 1000 3000] [--teacher-run gsm8k-train]

Rows: the reader with every lever; the same with last-layer features only; one target per step (no set
targets); the steps in the order the solution wrote them (no canonical order); each mention read as written
only (no readings: "half" is 1/2, never 2); the backbone's top 2 layers trained with it, and LoRA on its top 4;
the train programs augmented with variants whose numbers are re-sampled.
With --curve, the full reader at each size (the learning curve). With --teacher-run (a labelled run of GSM8K
train, `make teacher-programs LIMIT=N`), what the teacher's attention buys: the reader trained on the teacher's
programs (the values it read, operands grounded by its attention) against the same reader trained on GSM8K's
own annotations (operands string-matched) of the same problems, both validated on the annotations' val.
Answer accuracy is over the val programs a variant can express and over all val problems (an inexpressible one
counts as wrong), beside the last number on the same problems. Writes reports/reader/levers.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "gsm8k" / "train.jsonl"


def expressible(p, constants: list[str], readings: int = 3) -> bool:
    """Whether the reader's candidates (with these constants) hold every operand of ``p``'s program."""
    from mycelium.students.reader import candidates, step_targets

    if len(p.program.steps) > 10:
        return False
    try:
        step_targets(p.program, [c.value for c in candidates(p.question, constants, readings)[0]])
        return True
    except ValueError:
        return False


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--curve", type=int, nargs="*", default=[])
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--teacher-run", default=None, help="a labelled run of GSM8K train (runs/<name>)")
    ap.add_argument("--store", default=str(ROOT / "runs"))
    ap.add_argument("--out", default=str(ROOT / "reports" / "reader"))
    args = ap.parse_args()
    if not DATA.is_file():
        print(f"skipped: {DATA} is absent")
        return 0
    import torch

    from mycelium.evaluation.evaluate import last_number
    from mycelium.evaluation.grading import exact_equal
    from mycelium.students.reader_train import TrainOptions, annotation_programs, train
    from mycelium.teacher.model import load_teacher

    torch.set_num_threads(args.threads)
    teacher = load_teacher("embedded")
    canonical, _ = annotation_programs(DATA)
    written, _ = annotation_programs(DATA, order="written")
    val = [p for p in canonical if p.split == "val"]
    trivial = sum(bool(exact_equal(p.answer, last_number(p.question) or "")) for p in val) / len(val)
    variants = {
        "reader: layer mix, set targets, canonical order": (canonical, {}),
        "last layer only (features)": (canonical, {"layers": [30]}),
        "one target per step (no set targets)": (canonical, {"sets": False}),
        "the order the solution wrote (no canonical order)": (written, {}),
        "each mention as written only (no readings)": (canonical, {"readings": 1}),
        "the backbone's top 2 layers trained (peak lr 1e-4)": (canonical, {"train_layers": 2}),
        "the backbone's top 2 layers trained (peak lr 5e-4)": (canonical, {"train_layers": 2, "top_lr": 5e-4}),
        "numbers re-sampled (2 variants per train program)": (canonical, {"augment": 2}),
        "LoRA (rank 8, peak lr 2e-3) on the backbone's top 4 layers": (canonical, {"train_layers": 4, "lora_rank": 8,
                                                                                 "top_lr": 2e-3}),
    }
    runs = [(name, args.n, progs, kw) for name, (progs, kw) in variants.items()
            if args.only is None or any(o in name for o in args.only)]
    runs += [(f"reader, {n} train programs", n, canonical, {}) for n in args.curve]
    if args.teacher_run:
        from mycelium.core.store import open_store
        from mycelium.students.reader_train import run_programs

        taught, _ = run_programs(open_store(args.store), args.teacher_run)
        taught = [p for p in taught if p.split == "train"]
        ids = {p.id for p in taught}
        same = [p for p in canonical if p.split == "train" and p.id in ids]
        n = len(taught)
        runs += [(f"annotations (string-matched), the teacher's {len(ids)} problems", n, same + val, {}),
                 (f"the teacher's programs (its attention, the values it read), {len(ids)} problems", n,
                  taught + val, {})]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "levers.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    for name, n, progs, kw in runs:
        key = f"{name} @ {n}"
        if key in results:
            continue
        t0 = time.perf_counter()
        m = train(progs, teacher, ROOT / "runs" / "reader-levers" / key.replace(" ", "_").replace(":", "").replace(",", ""),
                  TrainOptions(epochs=args.epochs, limit=n, progress=False, **kw), cache=ROOT / "runs" / ".features")
        per_epoch = [c["seconds"] for c in m["curve"]]
        held = [p for p in val if expressible(p, m["constants"], kw.get("readings", 3))]  # its val accuracy's
        m["val"]["all_val_answer_accuracy"] = m["val"]["answer_accuracy"] * m["val"]["n"] / len(val)
        m["val"]["last_number_same_val"] = sum(bool(exact_equal(p.answer, last_number(p.question) or ""))
                                               for p in held) / max(1, len(held))
        results[key] = {"train_programs": m["train_programs"], "best_epoch": m["best_epoch"], **m["val"],
                        "seconds_per_epoch": round(sum(per_epoch) / len(per_epoch), 1),
                        "minutes": round((time.perf_counter() - t0) / 60, 1)}
        print(key, json.dumps(results[key]), flush=True)
        path.write_text(json.dumps(results | {"_last number (same val problems)": trivial}, indent=1))
    lines = ["| variant | train programs | val operand top-1 | step top-1 | exact match | answer acc. (greedy) | "
             "last number, same val | answer acc., all val | s/epoch |", "|---|---|---|---|---|---|---|---|---|"]
    for key, r in results.items():
        if not key.startswith("_"):
            lines.append(f"| {key.rsplit(' @ ', 1)[0]} | {r['train_programs']} | {r['operand_top1']:.3f} | "
                         f"{r['step_top1']:.3f} | {r['exact_match']:.3f} | {r['answer_accuracy']:.3f} | "
                         f"{r.get('last_number_same_val', float('nan')):.3f} | {r['n'] * r['answer_accuracy'] / len(val):.3f} | "
                         f"{r['seconds_per_epoch']} |")
    lines.append(f"| the last number in the problem, all {len(val)} val problems | - | - | - | - | - | - | {trivial:.3f} | - |")
    (out / "levers.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
