#!/usr/bin/env python3
"""Capture benchmark: problems/s, stored bytes per problem and peak RSS, today's code beside this one's.

    .venv/bin/python benchmarks/capture.py [--data FILE] [--sizes 10 40] [--batch 8] [--cot reference]

Variants, each size in a fresh process (so peak RSS is that run's own), embedded teacher on the CPU (or CUDA
when present): **today** = the library at ``benchmarks/baseline.py``'s commit (one problem per forward pass,
chunk v1); **batch 1** = this code one problem per pass; **batch N** = this code, N problems per pass (the
default). The first problems of GSM8K train (../shared/data; else the bundled sample) run longest first, so
every run holds the same longest sequence; the ratio of peak RSS between sizes shows whether memory stays
flat as the run grows. Prints the throughput and bytes ratios against today's code, and the
bytes-per-problem formula of both chunk formats for the embedded teacher and for a 7B teacher.
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

from baseline import BASELINE_REF, baseline_env

ROOT = Path(__file__).resolve().parents[1]
GSM8K = ROOT.parent / "shared" / "data" / "gsm8k" / "train.jsonl"
SAMPLE = ROOT / "shared" / "mycelium" / "data" / "sample_problems.jsonl"


def child(data: str, n: int, cot: str, opts: dict) -> dict:
    from mycelium.core.config import CaptureConfig, IngestConfig
    from mycelium.core.store import LocalStore
    from mycelium.stages.capture import run_capture
    from mycelium.teacher.model import load_teacher

    teacher = load_teacher("embedded")
    rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    cfg = CaptureConfig(cot=cot, progress=False, **{k: v for k, v in opts.items() if k in CaptureConfig.model_fields})
    with tempfile.TemporaryDirectory() as tmp:
        t0, c0 = time.perf_counter(), time.process_time()
        res = run_capture(data, "bench", LocalStore(tmp), cfg, IngestConfig(limit=n), teacher=teacher)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    cap = res.summary.stages["capture"]
    return {
        "n": cap.n_out, "failed": cap.failed, "wall_s": wall, "capture_s": cap.seconds,
        "problems_per_s": cap.n_out / cap.seconds, "cpu_s_per_problem": cpu / cap.n_out,
        "bytes_per_problem": cap.counters["chunk_bytes"] / cap.n_out,
        "cot_tokens_per_problem": cap.counters["cot_tokens"] / cap.n_out,
        "problem_tokens_per_problem": cap.counters["problem_tokens"] / cap.n_out,
        "rss_after_load_mb": rss_loaded / 2**20,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "L": teacher.n_layers, "H": teacher.n_heads, "d": teacher.hidden_size,
        "format": getattr(cfg, "chunk_format_version", 1), "batch": opts.get("batch_size", 1),
    }


def run_child(path: str, n: int, cot: str, opts: dict, env: dict) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", str(n), "--data", path, "--cot", cot,
                          "--opts", json.dumps(opts)], capture_output=True, text=True,
                         env={**env, "TQDM_DISABLE": "1"}, cwd=tempfile.gettempdir())
    if out.returncode:
        raise SystemExit(f"capture child failed:\n{out.stderr[-3000:]}")
    row = json.loads(out.stdout.strip().splitlines()[-1])
    if row["n"] < n:
        raise SystemExit(f"only {row['n']} problems captured for a run of {n} ({path} is too small)")
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(GSM8K if GSM8K.is_file() else SAMPLE))
    ap.add_argument("--sizes", type=int, nargs="+", default=[10, 40])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--cot", default="reference", choices=["reference", "generate"])
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--opts", default="{}", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.data, args.child, args.cot, json.loads(args.opts))))
        return 0

    from mycelium.records.chunk import bytes_per_problem
    from mycelium.teacher.model import load_teacher

    load_teacher("embedded")  # warm the converted-weights cache so no child pays the GGUF conversion
    print(f"data: {args.data}  cot: {args.cot}  teacher: embedded SmolLM2-135M-Instruct")
    # Peak memory is set by the longest sequence (eager attention is N^2 per layer). So that every run holds
    # the same worst case, the problems run longest first: the smallest run holds the longest of them all.
    with open(args.data, "rb") as f:
        lines = [line for _, line in zip(range(max(args.sizes)), f)]
    ordered = tempfile.NamedTemporaryFile("wb", suffix=".jsonl", delete=False)
    ordered.writelines(sorted(lines, key=len, reverse=True))
    ordered.close()
    today = baseline_env()
    variants = ([(f"today ({BASELINE_REF})", today, {})] if today else []) + [
        ("batch 1", dict(os.environ), {"batch_size": 1}), (f"batch {args.batch}", dict(os.environ),
                                                             {"batch_size": args.batch})]
    if not today:
        print(f"(no git checkout of {BASELINE_REF}: 'batch 1' stands for today's code)")
    rows = {name: [run_child(ordered.name, n, args.cot, opts, env) for n in args.sizes] for name, env, opts in variants}
    os.unlink(ordered.name)
    print(f"{'variant':<18} {'problems':>8} {'problems/s':>10} {'CPU s/problem':>13} {'bytes/problem':>13} "
          f"{'CoT tokens':>10} {'RSS loaded MB':>13} {'peak RSS MB':>11}")
    for name, rs in rows.items():
        for r in rs:
            print(f"{name:<18} {r['n']:>8} {r['problems_per_s']:>10.2f} {r['cpu_s_per_problem']:>13.2f} "
                  f"{r['bytes_per_problem']:>13,.0f} "
                  f"{r['cot_tokens_per_problem']:>10.1f} {r['rss_after_load_mb']:>13.0f} {r['peak_rss_mb']:>11.0f}")
    base, new = rows[variants[0][0]][-1], rows[variants[-1][0]][-1]
    print(f"\nagainst {variants[0][0]}, {new['n']} problems:")
    print(f"  throughput {new['problems_per_s'] / base['problems_per_s']:.2f}x (target >= 2); CPU seconds per problem "
          f"{base['cpu_s_per_problem'] / new['cpu_s_per_problem']:.2f}x fewer (steadier when the machine is shared)")
    print(f"  stored bytes per problem {new['bytes_per_problem'] / base['bytes_per_problem']:.3f}x "
          f"({new['bytes_per_problem'] / 1e6:.3f} MB; target <= 0.5 MB)")
    for name, rs in rows.items():
        a, b = rs[0], rs[-1]
        print(f"  peak RSS {b['n']}/{a['n']} problems, {name}: {b['peak_rss_mb'] / a['peak_rss_mb']:.3f} "
              f"(flat memory means ~1.0)")
    t, p = new["cot_tokens_per_problem"], new["problem_tokens_per_problem"]
    for version in (1, 2):
        est = bytes_per_problem(new["L"], new["H"], round(t), round(p), new["d"], 8, version=version)
        print(f"formula v{version}, embedded teacher (mean T={t:.0f}, P={p:.0f}, k=8): {est:,} bytes uncompressed")
    v1, v2 = (bytes_per_problem(28, 28, 300, 100, 3584, 8, version=v) for v in (1, 2))
    print(f"formula for a 7B teacher (L=28, H=28, d=3584, T=300, P=100, k=8): v1 {v1:,} bytes, v2 {v2:,} bytes "
          f"({v2 / v1:.3f}x; target <= 2.4 MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
