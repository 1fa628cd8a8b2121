"""The reader's oracle ladder and attribution on GSM8K test, against the test split's own annotations as gold
step programs (used here only; the solver never sees them).

    python benchmarks/reader_ladder.py [--models shared/mycelium/data/students/reader] [--limit N]

Writes reports/reader-gsm8k-test/ladder.{json,md}: the answer accuracy (greedy) at each rung, the gold
programs' ceiling, and why each wrong greedy answer is wrong (``mycelium.evaluation.reader_ladder``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "gsm8k" / "test.jsonl"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=str(ROOT / "shared" / "mycelium" / "data" / "students" / "reader"))
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--out", default=str(ROOT / "reports" / "reader-gsm8k-test"))
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if not DATA.is_file():
        print(f"skipped: {DATA} is absent")
        return 0
    import torch

    from mycelium.evaluation.reader_ladder import reader_ladder
    from mycelium.students.reader_train import annotation_programs, features_for, load
    from mycelium.teacher.model import load_teacher

    torch.set_num_threads(args.threads)
    teacher = load_teacher("embedded")
    model = load(Path(args.models), teacher)
    gold, reasons = annotation_programs(DATA)
    gold = gold[:args.limit]
    encoded = features_for(teacher, model.cfg, [p.question for p in gold], ROOT / "runs" / ".features")
    res = reader_ladder(model, gold, encoded) | {"no_annotation_program": dict(reasons), "models": str(Path(args.models).resolve().relative_to(ROOT)) if Path(args.models).resolve().is_relative_to(ROOT) else args.models}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ladder.json").write_text(json.dumps(res, indent=1))
    n = res["gold_programs"]
    lines = [f"Over the {n} GSM8K test problems whose annotation program the reader can express, of the "
             f"{res['problems']} read with one ({sum(reasons.values())} of the file's problems have none; greedy decoding):", "", "| rung | answer accuracy | gain |", "|---|---|---|"]
    prev = None
    for rung, acc in res["ladder"].items():
        lines.append(f"| {rung} | {acc:.3f} | {'' if prev is None else f'{acc - prev:+.3f}'} |")
        prev = acc
    lines.append(f"| the last number in the problem (same problems) | {res['last_number_same_problems']:.3f} | |")
    wrong = sum(res["blame"].values())
    lines += ["", f"Why the {wrong} wrong greedy answers are wrong (first blame):", "", "| blame | problems | share |",
              "|---|---|---|"] + [f"| {b} | {c} | {c / max(1, wrong):.1%} |" for b, c in res["blame"].items()]
    (out / "ladder.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
