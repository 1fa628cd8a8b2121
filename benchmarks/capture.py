#!/usr/bin/env python3
"""Capture benchmark: problems/s, bytes per problem and peak RSS for 10 and 40 problems.

    .venv/bin/python benchmarks/capture.py [--data FILE] [--sizes 10 40] [--cot reference]

Each size runs in a fresh process (so peak RSS is that run's own) with the
embedded teacher on the CPU (or CUDA when present). The first 40 problems of GSM8K
train (../shared/data; else the bundled sample) run longest first, so every run
holds the same longest sequence; the 40/10 ratio of peak RSS then shows whether
memory stays flat as the run grows.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GSM8K = ROOT.parent / "shared" / "data" / "gsm8k" / "train.jsonl"
SAMPLE = ROOT / "shared" / "mycelium" / "data" / "sample_problems.jsonl"


def child(data: str, n: int, cot: str) -> dict:
    from mycelium.stages.capture import run_capture
    from mycelium.core.config import CaptureConfig, IngestConfig
    from mycelium.core.store import LocalStore
    from mycelium.teacher.model import load_teacher

    teacher = load_teacher("embedded")
    rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        res = run_capture(data, "bench", LocalStore(tmp), CaptureConfig(cot=cot, progress=False),
                          IngestConfig(limit=n), teacher=teacher)
        wall = time.perf_counter() - t0
    cap = res.summary.stages["capture"]
    return {
        "n": cap.n_out, "failed": cap.failed, "wall_s": wall, "capture_s": cap.seconds,
        "problems_per_s": cap.n_out / cap.seconds, "bytes_per_problem": cap.counters["chunk_bytes"] / cap.n_out,
        "cot_tokens_per_problem": cap.counters["cot_tokens"] / cap.n_out,
        "problem_tokens_per_problem": cap.counters["problem_tokens"] / cap.n_out,
        "rss_after_load_mb": rss_loaded / 2**20,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "L": teacher.n_layers, "H": teacher.n_heads, "d": teacher.hidden_size,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(GSM8K if GSM8K.is_file() else SAMPLE))
    ap.add_argument("--sizes", type=int, nargs="+", default=[10, 40])
    ap.add_argument("--cot", default="reference", choices=["reference", "generate"])
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.data, args.child, args.cot)))
        return 0

    from mycelium.records.chunk import bytes_per_problem
    from mycelium.teacher.model import load_teacher

    load_teacher("embedded")  # warm the converted-weights cache so no child pays the GGUF conversion
    print(f"data: {args.data}  cot: {args.cot}  teacher: embedded SmolLM2-135M-Instruct")
    # Peak memory is set by the longest sequence (eager attention is N^2 per layer). So that every
    # run holds the same worst case, the problems run longest first: the 10-problem run contains
    # the longest of the 40, and with flat memory its peak equals the 40-problem run's.
    with open(args.data, "rb") as f:
        lines = [line for _, line in zip(range(max(args.sizes)), f)]
    ordered = tempfile.NamedTemporaryFile("wb", suffix=".jsonl", delete=False)
    ordered.writelines(sorted(lines, key=len, reverse=True))
    ordered.close()
    rows = []
    for n in args.sizes:
        out = subprocess.run([sys.executable, __file__, "--child", str(n), "--data", ordered.name, "--cot", args.cot],
                             capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
        if out.returncode:
            print(out.stderr[-3000:], file=sys.stderr)
            return out.returncode
        row = json.loads(out.stdout.strip().splitlines()[-1])
        if row["n"] < n:
            print(f"only {row['n']} problems captured for a run of {n} ({args.data} is too small)", file=sys.stderr)
            return 1
        rows.append(row)
    print(f"{'problems':>8} {'problems/s':>10} {'bytes/problem':>13} {'CoT tokens':>10} {'RSS loaded MB':>13} {'peak RSS MB':>11}")
    for r in rows:
        print(f"{r['n']:>8} {r['problems_per_s']:>10.2f} {r['bytes_per_problem']:>13,.0f} {r['cot_tokens_per_problem']:>10.1f}"
              f" {r['rss_after_load_mb']:>13.0f} {r['peak_rss_mb']:>11.0f}")
    os.unlink(ordered.name)
    a, b = rows[0], rows[-1]
    print(f"peak RSS ratio {b['n']}/{a['n']} problems: {b['peak_rss_mb'] / a['peak_rss_mb']:.3f}  "
          f"(problems ratio {b['n'] / a['n']:.1f}; flat memory means ~1.0)")
    print(f"throughput ratio {b['n']}/{a['n']}: {b['problems_per_s'] / a['problems_per_s']:.2f}")
    t, p = b["cot_tokens_per_problem"], b["problem_tokens_per_problem"]
    est = bytes_per_problem(b["L"], b["H"], round(t), round(p), b["d"], 8)
    print(f"formula (uncompressed, mean T={t:.0f}, P={p:.0f}): {est:,} bytes; measured compressed: "
          f"{b['bytes_per_problem']:,.0f} ({b['bytes_per_problem'] / est:.2f} of the formula)")
    print(f"formula for a 7B teacher (L=28, H=28, d=3584, T=300, P=100, k=8): "
          f"{bytes_per_problem(28, 28, 300, 100, 3584, 8):,} bytes uncompressed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
