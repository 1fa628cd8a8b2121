"""Saved readers side by side on merge's val split of GSM8K train, in one run, beside the last number on the
same problems (greedy decoding, as training's early stopping measures).

    python benchmarks/reader_val.py shared/mycelium/data/students/reader runs/reader-aug2 [...]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "gsm8k" / "train.jsonl"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("readers", nargs="+")
    args = ap.parse_args()
    if not DATA.is_file():
        print(f"skipped: {DATA} is absent")
        return 0
    from mycelium.evaluation.evaluate import last_number
    from mycelium.evaluation.grading import exact_equal
    from mycelium.students.reader_train import annotation_programs, evaluate_items, features_for, items_for, load
    from mycelium.teacher.model import load_teacher

    teacher = load_teacher("embedded")
    val = [p for p in annotation_programs(DATA)[0] if p.split == "val"]
    print(f"| reader | val programs | operand top-1 | step top-1 | exact match | answer acc. | last number, same "
          f"| answer acc., all {len(val)} val |\n|---|---|---|---|---|---|---|---|")
    for path in args.readers:
        model = load(Path(path), teacher)
        items, kept, _ = items_for(val, features_for(teacher, model.cfg, [p.question for p in val],
                                                     ROOT / "runs" / ".features", False), model.cfg)
        m = evaluate_items(model, items, [p.answer for p in kept])
        last = sum(bool(exact_equal(p.answer, last_number(p.question) or "")) for p in kept) / len(kept)
        print(f"| {path} | {m['n']} | {m['operand_top1']:.3f} | {m['step_top1']:.3f} | {m['exact_match']:.3f} | "
              f"{m['answer_accuracy']:.3f} | {last:.3f} | {m['answer_accuracy'] * m['n'] / len(val):.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
