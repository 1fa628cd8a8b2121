"""What each of the reader's levers buys, on merge's val split of GSM8K train (annotation programs), each variant
trained in this run on the same first N train programs, beside the trivial baseline on the same val problems.

    python benchmarks/reader_levers.py --n 1000 --epochs 8 [--curve 1000 3000] [--threads 1]

Rows: the reader with every lever; the same with last-layer features only; one target per
step (no set targets); the steps in the order the solution wrote them (no canonical order). With --curve, the
full reader at each size (the learning curve). Writes reports/reader/levers.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "gsm8k" / "train.jsonl"


def expressible(p, constants: list[str]) -> bool:
    """Whether the reader's candidates (with these constants) hold every operand of ``p``'s program."""
    from mycelium.students.reader import candidates, step_targets

    if len(p.program.steps) > 10:
        return False
    try:
        step_targets(p.program, [c.value for c in candidates(p.question, constants)[0]])
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
    }
    runs = [(name, args.n, progs, kw) for name, (progs, kw) in variants.items()
            if args.only is None or any(o in name for o in args.only)]
    runs += [(f"reader, {n} train programs", n, canonical, {}) for n in args.curve]
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
        held = [p for p in val if expressible(p, m["constants"])]  # the problems its val accuracy is over
        m["val"]["last_number_same_val"] = sum(bool(exact_equal(p.answer, last_number(p.question) or ""))
                                               for p in held) / max(1, len(held))
        results[key] = {"train_programs": m["train_programs"], "best_epoch": m["best_epoch"], **m["val"],
                        "seconds_per_epoch": round(sum(per_epoch) / len(per_epoch), 1),
                        "minutes": round((time.perf_counter() - t0) / 60, 1)}
        print(key, json.dumps(results[key]), flush=True)
        path.write_text(json.dumps(results | {"_last number (same val problems)": trivial}, indent=1))
    lines = ["| variant | train programs | val operand top-1 | step top-1 | exact match | answer acc. (greedy) | "
             "last number, same val | s/epoch |", "|---|---|---|---|---|---|---|---|"]
    for key, r in results.items():
        if not key.startswith("_"):
            lines.append(f"| {key.rsplit(' @ ', 1)[0]} | {r['train_programs']} | {r['operand_top1']:.3f} | "
                         f"{r['step_top1']:.3f} | {r['exact_match']:.3f} | {r['answer_accuracy']:.3f} | "
                         f"{r.get('last_number_same_val', float('nan')):.3f} | {r['seconds_per_epoch']} |")
    lines.append(f"| the last number in the problem, all {len(val)} val problems | - | - | - | - | - | {trivial:.3f} | - |")
    (out / "levers.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
