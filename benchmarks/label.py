#!/usr/bin/env python3
"""The label stage on a run: its time per problem on one core, and what it keeps (beside what it rejects).

    .venv/bin/python benchmarks/label.py --run gsm8k-ref [--n 200] [--augment 10]

Times LabelStage.process (reading the analysed steps, building, executing in the sandbox, examples;
no writes) on the first N committed problems, in this one process, without and with augmentation.
Then prints the run's own label summary and training stats when the stages have run on it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import Counter


def main() -> int:
    from mycelium.core.config import LabelConfig
    from mycelium.core.keys import RunKeys
    from mycelium.core.store import open_store
    from mycelium.stages.analyze import AnalyzeStage
    from mycelium.stages.base import SkipItem
    from mycelium.stages.label import LabelStage

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", required=True)
    ap.add_argument("--store", default="runs")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--augment", type=int, default=10)
    args = ap.parse_args()
    store = open_store(args.store)
    for k in (0, args.augment):
        stage = LabelStage(store, args.run, LabelConfig(augment=k, progress=False))
        stage.templates  # noqa: B018 - loaded once, as a worker does
        stage.problem_by_id  # noqa: B018
        times, kept, variants, why = [], 0, 0, Counter()
        for pid in stage.items()[: args.n]:
            t0 = time.perf_counter()
            try:
                out = stage.process(pid)
            except SkipItem:
                continue
            times.append(time.perf_counter() - t0)
            kept += out.counters.get("kept", 0)
            variants += out.counters.get("variants", 0)
            record = json.loads(out.files[stage.keys.label(pid)])
            why.update(record.get("augment_rejected", {}))
        print(f"augment K={k}: {len(times)} problems, {1000 * statistics.mean(times):.1f} ms per problem on one core "
              f"(median {1000 * statistics.median(times):.1f}, p95 {1000 * sorted(times)[int(0.95 * (len(times) - 1))]:.1f}); "
              f"{kept} kept" + (f", {variants} variants (yield {variants / max(1, kept * k):.2f} of K); samples rejected: "
                                f"{dict(why.most_common())}" if k else ""))
    analyze = AnalyzeStage.current(store, args.run)  # the stage before it, on the same problems: the yardstick
    times = []
    for pid in stage.items()[: args.n]:
        t0 = time.perf_counter()
        analyze.process(pid)
        times.append(time.perf_counter() - t0)
    print(f"beside: the analyze stage on the same {len(times)} problems, {1000 * statistics.mean(times):.1f} ms per problem")
    keys = RunKeys(args.run)
    summary = store.get_json(keys.summary)["stages"].get("label")
    if summary:
        c = summary["counters"]
        n, kept = summary["n_in"], c.get("kept", 0)
        print(f"run {args.run}: {kept} of {n} problems' programs execute to the dataset's answer ({100 * kept / max(1, n):.1f}%)")
        for name, v in sorted(c.items()):
            if name.startswith("rejected: "):
                print(f"  {name}: {v} ({100 * v / max(1, n):.1f}%)")
        if c.get("variants") is not None:
            print(f"  augmentation: {c.get('variants', 0)} variants from {c.get('augment_tries', 0)} samples")
    if store.exists(keys("training", "stats.json")):
        print(json.dumps(store.get_json(keys("training", "stats.json"))["examples"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
