#!/usr/bin/env python3
"""What each specialist earns with no learning: the trivial baselines scored on a run's val split.

    .venv/bin/python benchmarks/student_baselines.py --run gsm8k-train [--store runs] [--source teacher]

Reads training/<C>/{train,val}.jsonl (after `mycelium merge`), fits the majorities on train, scores every
baseline of mycelium.students.metrics on val, and prints one table: the yardstick for the students' figures.
"""

from __future__ import annotations

import argparse
import json
import sys


def main() -> int:
    from mycelium.core.keys import RunKeys
    from mycelium.core.store import jsonl, open_store
    from mycelium.records.programs import COMPONENTS
    from mycelium.students.metrics import Baselines, score

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", required=True)
    ap.add_argument("--store", default="runs")
    ap.add_argument("--source", default="teacher", help="val examples of this source only ('all' for every one)")
    args = ap.parse_args()
    store, keys = open_store(args.store), RunKeys(args.run)

    def read(component: str, split: str) -> list[dict]:
        rows = [json.loads(line) for line in jsonl(store.get(keys.training(component, split)))]
        return [r for r in rows if args.source == "all" or r["provenance"]["source"] == args.source or split == "train"]

    train = {c: [r["target"] for r in read(c, "train")] for c in COMPONENTS}
    baselines = Baselines(train)
    print(f"run {args.run}: baselines fitted on train, scored on val ({args.source} examples)")
    print(f"{'component':9} {'n val':>6}  {'baseline':66} metrics")
    for c in COMPONENTS:
        val = read(c, "val")
        gold = [r["target"] for r in val]
        preds: dict[str, list[dict]] = {}
        for r in val:
            for name, p in baselines.predict(c, r, r["target"]).items():
                preds.setdefault(name, []).append(p)
        for name, p in preds.items():
            metrics = ", ".join(f"{k} {v:.3f}" for k, v in score(c, p, gold).items())
            print(f"{c:9} {len(val):>6}  {name:66} {metrics}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
