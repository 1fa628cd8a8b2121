#!/usr/bin/env python3
"""IB discovery benchmark: time and peak memory for 5k, 20k and 42k synthetic steps of 896 dims.

    .venv/bin/python benchmarks/ib.py [--sizes 5000 20000 42000]

Synthetic steps: 30 planted templates (clusters in X, each with its own op-label
set over a 12-label vocabulary, 10 % of labels noisy). Each size runs in a fresh
process (peak RSS is its own): neighbour smoothing + anneal + operating point.
Prints the fitted scaling exponent of time in N and whether 42k fits one Lambda
(15 minutes, 10 GB).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np

LAMBDA_SECONDS, LAMBDA_MB = 15 * 60, 10 * 1024


def synthetic(n: int, d: int = 896, k: int = 30, vocab: int = 12, noise: float = 0.1, seed: int = 0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, d)) * 3
    label = rng.integers(0, k, size=n)
    X = (centers[label] + rng.normal(size=(n, d))).astype(np.float32)
    sets = [rng.choice(vocab, size=rng.integers(1, 4), replace=False) for _ in range(k)]
    Y = np.zeros((n, vocab), np.float32)
    for i, c in enumerate(label):
        s = sets[c] if rng.random() > noise else rng.choice(vocab, size=rng.integers(1, 4), replace=False)
        Y[i, s] = 1.0 / len(s)
    return X, Y, label


def child(n: int) -> dict:
    from mycelium.core.config import DiscoverConfig
    from mycelium.templates.taxonomy import cut, surface_tension
    from mycelium.templates.ib import anneal, smooth_labels

    X, Y, _ = synthetic(n)
    cfg = DiscoverConfig()
    t0 = time.perf_counter()
    pyx = smooth_labels(X, Y, cfg)
    t1 = time.perf_counter()
    an = anneal(pyx, cfg)
    t2 = time.perf_counter()
    templates, _ = surface_tension(an, cut(an, cfg.gain), cfg.min_size)
    t3 = time.perf_counter()
    return {"n": n, "smooth_s": t1 - t0, "anneal_s": t2 - t1, "cut_s": t3 - t2, "total_s": t3 - t0,
            "templates": len(templates), "splits": len(an.splits), "beta_steps": len(an.history),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[5000, 20000, 42000])
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child)))
        return 0
    rows = []
    print(f"{'steps':>7} {'smooth s':>9} {'anneal s':>9} {'total s':>8} {'peak RSS MB':>11} {'templates':>9} {'splits':>6}")
    for n in args.sizes:
        out = subprocess.run([sys.executable, __file__, "--child", str(n)], capture_output=True, text=True)
        if out.returncode:
            print(out.stderr[-3000:], file=sys.stderr)
            return 1
        r = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(r)
        print(f"{r['n']:>7} {r['smooth_s']:>9.1f} {r['anneal_s']:>9.1f} {r['total_s']:>8.1f} {r['peak_rss_mb']:>11.0f}"
              f" {r['templates']:>9} {r['splits']:>6}", flush=True)
    if len(rows) >= 2:
        slope = np.polyfit(np.log([r["n"] for r in rows]), np.log([r["total_s"] for r in rows]), 1)[0]
        print(f"fitted scaling exponent of time in N: {slope:.2f}")
    big = rows[-1]
    fits = big["total_s"] < LAMBDA_SECONDS and big["peak_rss_mb"] < LAMBDA_MB
    print(f"{big['n']} steps: {big['total_s']:.0f} s of {LAMBDA_SECONDS} s, {big['peak_rss_mb']:.0f} MB of {LAMBDA_MB} MB "
          f"-> {'fits' if fits else 'does NOT fit'} one Lambda (ratios {big['total_s'] / LAMBDA_SECONDS:.2f} time, "
          f"{big['peak_rss_mb'] / LAMBDA_MB:.2f} memory)")
    return 0 if fits else 1


if __name__ == "__main__":
    sys.exit(main())
