#!/usr/bin/env python3
"""IB discovery benchmark: time and peak memory for 5k, 20k and 42k synthetic steps of 896 dims, today's
code (the anneal before it was made faster, loaded from git) beside the current one, in the same run.

    .venv/bin/python benchmarks/ib.py [--sizes 5000 20000 42000] [--configs exact fast] [--baseline REV | --no-baseline]

Synthetic steps: 30 planted templates (clusters in X, each with its own op-label
set over a 12-label vocabulary, 10 % of labels noisy). Each size and each version
runs in a fresh process (peak RSS is its own): neighbour smoothing + anneal +
operating point (cut and surface tension). The baseline is the library at
``--baseline`` (default: ``benchmarks/baseline.py``'s commit, before the faster
anneal), extracted from git and run in its own process with the same config and the
same inputs; the table gives its
time and peak RSS, the current code's, their ratio, and whether both found the
same anneal (a digest of every split and of q(t|x), which are the same to the bit
in float64). Prints the fitted scaling exponent of time in N and whether the
largest size fits the target (120 s, 10 GB) and one Lambda (15 minutes, 10 GB).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
from baseline import BASELINE_REF, baseline_env

LAMBDA_SECONDS, LAMBDA_MB = 15 * 60, 10 * 1024
TARGET_SECONDS, TARGET_MB = 120, 10 * 1024


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


#: The current code's configs: ``exact`` is the defaults (today's anneal to the bit); ``fast`` also iterates over
#: the distinct rows of p(y|x) in float32 (an equivalent anneal: the same taxonomy, not the same bits).
CONFIGS = {"exact": {}, "fast": {"distinct_rows": True, "dtype": "float32"}, "rows": {"distinct_rows": True}}


def _digest(obj) -> str:
    return hashlib.sha256(obj if isinstance(obj, bytes) else json.dumps(obj).encode()).hexdigest()[:10]


def child(n: int, version: str, options: dict) -> dict:
    from mycelium.core.config import DiscoverConfig

    from mycelium.templates import ib, taxonomy  # today's (the baseline's tree on PYTHONPATH) or the current one

    cfg = DiscoverConfig(**options)
    X, Y, _ = synthetic(n)
    t0 = time.perf_counter()
    pyx = ib.smooth_labels(X, Y, cfg)
    t1 = time.perf_counter()
    an = ib.anneal(pyx, cfg)
    t2 = time.perf_counter()
    templates, _ = taxonomy.surface_tension(an, taxonomy.cut(an, cfg.gain), cfg.min_size)
    t3 = time.perf_counter()
    hard = taxonomy.memberships(an, templates).argmax(1)
    return {"n": n, "smooth_s": t1 - t0, "anneal_s": t2 - t1, "cut_s": t3 - t2, "total_s": t3 - t0,
            "templates": len(templates), "splits": len(an.splits), "beta_steps": len(an.history),
            "iterations": sum(h["iterations"] for h in an.history),
            # the same bits: every split and q(t|x). The same taxonomy: the split tree (betas to 9 digits: the
            # predicted critical beta moves in the 14th with BLAS's threads), the templates (named by their tree
            # nodes) and each step's template
            "bits": _digest(json.dumps([s.to_json() for s in an.splits]).encode() + an.qtx.tobytes()),
            "taxonomy": _digest([[(f"{s.beta:.9g}", s.parent, s.children) for s in an.splits], templates,
                                 hard.tolist()]),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_child(n: int, version: str, options: dict) -> dict:
    env = dict(os.environ) if version == "current" else baseline_env(version)
    if env is None:
        raise SystemExit(f"no git checkout of {version}: pass --no-baseline or --baseline REV")
    out = subprocess.run([sys.executable, __file__, "--child", str(n), "--version", version,
                          "--options", json.dumps(options)], capture_output=True, text=True, env=env,
                         cwd=tempfile.gettempdir())
    if out.returncode:
        print(out.stderr[-3000:], file=sys.stderr)
        raise SystemExit(1)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[5000, 20000, 42000])
    ap.add_argument("--configs", nargs="+", choices=sorted(CONFIGS), default=["exact", "fast"],
                    help="the current code's configs to time (exact: the defaults; fast: %s)" % CONFIGS["fast"])
    ap.add_argument("--baseline", default=BASELINE_REF, help="git revision of today's code to compare with")
    ap.add_argument("--no-baseline", action="store_true", help="time the current code only")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--version", default="current", help=argparse.SUPPRESS)
    ap.add_argument("--options", default="{}", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.version, json.loads(args.options))))
        return 0
    print(f"threads: OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')} of {os.cpu_count()} CPUs; load "
          f"average {os.getloadavg()[0]:.2f} at the start; baseline (today) "
          f"{'none' if args.no_baseline else args.baseline[:12]}; " + "; ".join(f"{c}: {CONFIGS[c] or 'defaults'}"
                                                                               for c in args.configs))
    print(f"{'steps':>6} {'version':>7} {'smooth s':>8} {'anneal s':>8} {'cut s':>6} {'total s':>7} {'peak MB':>7}"
          f" {'templ.':>6} {'splits':>6} {'iters':>5} {'bits':>10} {'taxonomy':>10}")
    versions = ([] if args.no_baseline else [("today", args.baseline, {})]) + [(c, "current", CONFIGS[c])
                                                                              for c in args.configs]
    rows = []
    for n in args.sizes:
        got = {}
        for name, version, options in versions:
            r = got[name] = run_child(n, version, options)
            print(f"{n:>6} {name:>7} {r['smooth_s']:>8.1f} {r['anneal_s']:>8.1f} {r['cut_s']:>6.1f} {r['total_s']:>7.1f}"
                  f" {r['peak_rss_mb']:>7.0f} {r['templates']:>6} {r['splits']:>6} {r['iterations']:>5}"
                  f" {r['bits']:>10} {r['taxonomy']:>10}", flush=True)
        for name in args.configs if "today" in got else []:
            old, new = got["today"], got[name]
            same = ("the same bits" if old["bits"] == new["bits"] else
                    "the same taxonomy" if old["taxonomy"] == new["taxonomy"] else "a DIFFERENT taxonomy")
            print(f"{n:>6} {'÷' + name:>7} {old['smooth_s'] / new['smooth_s']:>7.2f}x {old['anneal_s'] / new['anneal_s']:>7.2f}x"
                  f" {old['cut_s'] / max(new['cut_s'], 1e-9):>5.1f}x {old['total_s'] / new['total_s']:>6.2f}x"
                  f" {old['peak_rss_mb'] / new['peak_rss_mb']:>6.2f}x  today's time / {name}'s; {same} as today",
                  flush=True)
        rows.append(got)
    ok = True
    for name in args.configs:
        ns, ts = [r[name]["n"] for r in rows], [r[name]["total_s"] for r in rows]
        big = rows[-1][name]
        fits = big["total_s"] < TARGET_SECONDS and big["peak_rss_mb"] < TARGET_MB
        ok &= fits or name != args.configs[-1]  # the exit status: whether the last (fastest) config meets it
        slope = f"time ∝ N^{np.polyfit(np.log(ns), np.log(ts), 1)[0]:.2f}; " if len(rows) >= 2 else ""
        print(f"{name}: {slope}{big['n']} steps in {big['total_s']:.0f} s (target {TARGET_SECONDS} s), peak "
              f"{big['peak_rss_mb']:.0f} MB (target {TARGET_MB} MB) -> {'meets' if fits else 'does NOT meet'} the "
              f"target; one Lambda: {big['total_s'] / LAMBDA_SECONDS:.2f} of its time, "
              f"{big['peak_rss_mb'] / LAMBDA_MB:.2f} of its memory")
    print(f"load average {os.getloadavg()[0]:.2f} at the end")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
