#!/usr/bin/env python3
"""The six specialists trained on a run's merged labels: wall time, peak memory, val metrics beside baselines.

    .venv/bin/python benchmarks/train_students.py --run gsm8k-train                      # all six, frozen features
    .venv/bin/python benchmarks/train_students.py --run gsm8k-train --components C3,C1 \\
        --variants frozen,placeholders,top2,lora2 --train-problems 1500 --epochs 4          # what each lever buys

Each variant trains in a fresh process (its peak RSS is its own; the backbone is loaded, every question
encoded once, then each component trained with early stopping on its task metric), through the same
``run_train`` that ``mycelium train`` calls. Variants:

- ``frozen``: heads and a small bidirectional adapter on cached features of the whole frozen backbone (K = 0);
- ``placeholders``: the same, the backbone reading the text with its numbers as N0, N1, …;
- ``top2``: the top 2 backbone layers trained (features cached below them);
- ``lora2``: the top 2 layers frozen, LoRA r16 adapters on them trained;
- ``order``: frozen, C3's operand pointers also seeing each number's place among the mentions.

Prints, per variant, the wall time (encode + training), peak RSS and the val metrics, each component beside
the best of its trivial baselines scored on the same val examples; writes ``<out>/results.json`` and
``<out>/students.png`` (the primary metric per component and variant, baseline marked).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

VARIANTS = {"frozen": {}, "placeholders": {"placeholders": True}, "top2": {"train_layers": 2},
            "lora2": {"train_layers": 2, "lora_rank": 16}, "order": {"mention_order": True}}


def child(args) -> dict:
    from mycelium.core.store import open_store
    from mycelium.stages.train import run_train
    from mycelium.students.train import TrainOptions
    from mycelium.teacher.model import load_teacher

    t0 = time.perf_counter()
    teacher = load_teacher("embedded")
    results = run_train(open_store(args.store), args.run, Path(args.out) / args.child, teacher, args.components.split(","),
                        opts=TrainOptions(epochs=args.epochs, progress=not args.no_progress),
                        train_problems=args.train_problems, feature_cache=args.feature_cache, **VARIANTS[args.child])
    total = time.perf_counter() - t0
    trained = sum(r.get("seconds", 0) for r in results.values())
    return {"variant": args.child, "seconds": round(total, 1), "training_s": round(trained, 1),
            "encode_and_load_s": round(total - trained, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024), "results": results}


def primary(component: str) -> str:
    """The first metric early stopping watches (the others only break its ties)."""
    from mycelium.students.train import PRIMARY

    return PRIMARY[component][0]


def report(runs: list[dict], out: Path) -> None:
    print(f"\n{'variant':13} {'wall s':>8} {'encode+load s':>13} {'train s':>8} {'peak RSS MB':>11}")
    for r in runs:
        print(f"{r['variant']:13} {r['seconds']:>8.0f} {r['encode_and_load_s']:>13.0f} {r['training_s']:>8.0f} "
              f"{r['peak_rss_mb']:>11}")
    components = list(runs[0]["results"])
    print("\nval, primary metric per component (best trivial baseline on the same val examples)")
    print(f"{'component':9} {'metric':22} {'best baseline':>14}  " + " ".join(f"{r['variant']:>13}" for r in runs))
    for c in components:
        first = runs[0]["results"][c]
        if "skipped" in first:
            print(f"{c:9} skipped: {first['skipped']}")
            continue
        m = primary(c)
        base = max((v[m], n) for n, v in first["baselines"].items() if m in v)
        print(f"{c:9} {m:22} {base[0]:>14.3f}  " + " ".join(f"{r['results'][c]['val'][m]:>13.3f}" for r in runs)
              + f"   ({base[1]})")
    print("\nevery val metric of the first variant, and every baseline's")
    for c in components:
        r = runs[0]["results"][c]
        if "skipped" in r:
            continue
        print(f"{c:9} student ({r['n_train']} train ex, {r['n_val']} val ex, best epoch {r['best_epoch']}, "
              f"{r['examples_per_s']:.0f} ex/s): " + ", ".join(f"{k} {v:.3f}" for k, v in r["val"].items()))
        for name, v in r["baselines"].items():
            print(f"{'':9} baseline {name}: " + ", ".join(f"{k} {x:.3f}" for k, x in v.items()))
    _plot(runs, components, out / "students.png")


def _plot(runs: list[dict], components: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [c for c in components if "skipped" not in runs[0]["results"][c]]
    fig, ax = plt.subplots(figsize=(1.6 * len(shown) + 2, 3.5))
    width = 0.8 / len(runs)
    for i, r in enumerate(runs):
        ax.bar([j + i * width for j in range(len(shown))], [r["results"][c]["val"][primary(c)] for c in shown],
               width, label=r["variant"])
    for j, c in enumerate(shown):
        base = max(v[primary(c)] for v in runs[0]["results"][c]["baselines"].values() if primary(c) in v)
        ax.hlines(base, j - width / 2, j + 0.8 - width / 2, colors="k", linestyles="--",
                  label="best baseline" if j == 0 else None)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(shown))], [f"{c}\n{primary(c)}" for c in shown], fontsize=7)
    ax.set_ylabel("val")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", required=True)
    ap.add_argument("--store", default="runs")
    ap.add_argument("--components", default="C1,C2,C3,C4,C5,C6")
    ap.add_argument("--variants", default="frozen", help=f"comma-separated, of {', '.join(VARIANTS)}")
    ap.add_argument("--train-problems", type=int, help="the first N train problems only (val: all of it)")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--out", default="/tmp/mycelium-train-bench")
    ap.add_argument("--feature-cache", help="encoded texts, read and extended (time the encode: leave it out)")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--child", choices=list(VARIANTS), help=argparse.SUPPRESS)
    args = ap.parse_args()
    out = Path(args.out)
    if args.child:
        result = child(args)
        (out / f"{args.child}.json").write_text(json.dumps(result, indent=1))
        return 0
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        ap.error(f"unknown variant(s) {unknown}: choose from {list(VARIANTS)}")
    out.mkdir(parents=True, exist_ok=True)
    runs = []
    for v in variants:
        print(f"== {v}: {VARIANTS[v] or 'frozen backbone, cached features'}", flush=True)
        subprocess.run([sys.executable, __file__, "--child", v, *_without(sys.argv[1:], "--variants")], check=True)
        runs.append(json.loads((out / f"{v}.json").read_text()))
    (out / "results.json").write_text(json.dumps(runs, indent=1))
    report(runs, out)
    print(f"\nwrote {out}/results.json, {out}/students.png and each variant's models under {out}/<variant>/")
    return 0


def _without(cmd: list[str], flag: str) -> list[str]:
    """``cmd`` without ``flag`` and its value."""
    out, skip = [], False
    for a in cmd:
        if skip:
            skip = False
            continue
        if a == flag:
            skip = True
            continue
        if not a.startswith(flag + "="):
            out.append(a)
    return out


if __name__ == "__main__":
    sys.exit(main())
