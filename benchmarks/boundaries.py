#!/usr/bin/env python3
"""Sweep the JSD boundary settings on a captured run; choose on one half, report on the other.

    .venv/bin/python benchmarks/boundaries.py --run NAME [--store URL] [--layers all|late]

Reference boundaries are the first token of each calculation's own text (where the CoT
starts writing it: GSM8K ``48/2 = <<48/2=24>>``, inline ``a / b = c``, LaTeX), not the layout.
The first half of the run's problems (sorted by id) picks the setting with the best F1; the
second half reports it, beside as many boundaries at random word starts.
"""

from __future__ import annotations

import argparse
import itertools
import sys

import numpy as np


def main() -> int:
    from mycelium.analysis.boundaries import boundary_match, calculation_starts, find_boundaries, prf
    from mycelium.analysis.text import word_starts
    from mycelium.core.config import AnalyzeConfig
    from mycelium.core.keys import RunKeys, item_of_commit
    from mycelium.core.store import open_store
    from mycelium.mathlang.expressions import find_expressions
    from mycelium.records.capture import Trace
    from mycelium.records.chunk import decode_chunk

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", required=True)
    ap.add_argument("--store", default=None)
    args = ap.parse_args()
    store, keys = open_store(args.store), RunKeys(args.run)
    rows = []
    for pid in (item_of_commit(k) for k in store.list(keys.commits("capture"))):
        trace = Trace.model_validate(store.get_json(keys.trace(pid)))
        chunk = decode_chunk(store.get(keys.chunk(pid)))
        offsets = np.asarray(trace.cot_offsets).reshape(-1, 2)
        ref = calculation_starts(trace.cot_text, offsets, find_expressions(trace.cot_text))
        if ref.size == 0:
            continue
        jsd_by_layer = chunk.jsd.astype(np.float32).mean(1)  # [L, T]
        rows.append((jsd_by_layer, word_starts(trace.cot_text, offsets), ref))
    L = rows[0][0].shape[0]
    half = len(rows) // 2
    layer_sets = {"all": list(range(L)), "first half": list(range(L // 2)), "second half": list(range(L // 2, L))}
    grid = list(itertools.product(layer_sets, [0.5, 1.0, 2.0, 3.0, 4.0], [4, 8, 16, 24, 32]))

    def score(part, layers, prom, dist):
        cfg = AnalyzeConfig(peak_prominence=prom, peak_distance=dist)
        tp = fp = fn = 0
        n_b = 0
        for jsd_l, allowed, ref in part:
            b, _, _ = find_boundaries(jsd_l[layer_sets[layers]].mean(0), allowed, cfg)
            m = boundary_match(b, ref, cfg.boundary_tolerance)
            tp, fp, fn, n_b = tp + m[0], fp + m[1], fn + m[2], n_b + len(b)
        return {**prf(tp, fp, fn), "boundaries_per_problem": n_b / len(part),
                "reference_per_problem": sum(len(r) for *_, r in part) / len(part)}

    def chance(part, layers, prom, dist, seed=0):
        """The same number of boundaries per problem, at random word starts."""
        rng = np.random.default_rng(seed)
        cfg = AnalyzeConfig(peak_prominence=prom, peak_distance=dist)
        tp = fp = fn = 0
        for jsd_l, allowed, ref in part:
            n = len(find_boundaries(jsd_l[layer_sets[layers]].mean(0), allowed, cfg)[0])
            cand = np.flatnonzero(allowed[1:]) + 1
            b = rng.choice(cand, size=min(n, cand.size), replace=False) if cand.size else cand
            m = boundary_match(b, ref, cfg.boundary_tolerance)
            tp, fp, fn = tp + m[0], fp + m[1], fn + m[2]
        return prf(tp, fp, fn)

    print(f"{args.run}: {len(rows)} problems with reference boundaries; tune on {half}, report on {len(rows) - half}")
    print(f"{'layers':>12} {'prominence':>10} {'distance':>8} {'F1 (tune)':>9}")
    results = []
    for layers, prom, dist in grid:
        s = score(rows[:half], layers, prom, dist)
        results.append((s["f1"], layers, prom, dist))
        print(f"{layers:>12} {prom:>10} {dist:>8} {s['f1']:>9.3f}")
    _, layers, prom, dist = max(results)
    held = score(rows[half:], layers, prom, dist)
    d = AnalyzeConfig()
    default_layers = next((k for k, v in layer_sets.items() if v == d.layers_for(L)), None)
    layer_sets["default"] = d.layers_for(L)
    default_layers = default_layers or "default"
    default = score(rows[half:], default_layers, d.peak_prominence, d.peak_distance)
    print(f"best on the tuning half: layers={layers} prominence={prom} distance={dist}")
    print(f"held-out half, best setting:    P {held['precision']:.3f} R {held['recall']:.3f} F1 {held['f1']:.3f} "
          f"({held['boundaries_per_problem']:.1f} boundaries vs {held['reference_per_problem']:.1f} reference per problem)")
    print(f"held-out half, default setting: P {default['precision']:.3f} R {default['recall']:.3f} F1 {default['f1']:.3f} "
          f"({default['boundaries_per_problem']:.1f} boundaries per problem)")
    base = chance(rows[half:], layers, prom, dist)
    print(f"held-out half, chance (same count at random word starts): P {base['precision']:.3f} "
          f"R {base['recall']:.3f} F1 {base['f1']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
