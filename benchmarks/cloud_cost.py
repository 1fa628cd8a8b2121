#!/usr/bin/env python3
"""Cost and scale of a cloud run, from measured per-chunk handler time and chunk size.

    .venv/bin/python benchmarks/cloud_cost.py [--store runs --run NAME] [--n 100] [--problems 10000]
        [--capture-rate 2.08]

It uploads ``n`` committed chunks (with their traces and capture commits, and the
run's records and shards) of a local run to a moto S3 bucket and times the real
Lambda handlers on them: analyze once per chunk (GET of the commits, chunk and
trace, the analysis, PUT of signals, steps and the commit), then aggregate and
discover once. Lambda GB-seconds use each function's configured
memory (stacks/processing.py); state transitions are counted from the deployed
definition's shape; S3 bytes are measured per problem. Without --run it
captures ``n`` GSM8K train problems with the embedded teacher first.

GPU hours are ``problems / capture-rate``: pass the rate measured on the GPU
you deploy (the default is the embedded teacher's rate on 2 CPU cores,
benchmarks/capture.py). Prices are us-east-1 on-demand list prices; edit PRICES.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PRICES = {  # USD, us-east-1 on-demand list prices
    "lambda_gb_s": 0.0000166667, "lambda_request": 0.20 / 1e6,
    "sfn_transition": 0.025 / 1000,
    "s3_gb_month": 0.023, "s3_put": 0.005 / 1000, "s3_get": 0.0004 / 1000,
    "g5_xlarge_hour": 1.006,
}
BUCKET = "mycelium-cost"


def _local_run(args) -> tuple[str, str]:
    if args.run:
        return args.store, args.run
    from mycelium.stages.capture import run_capture
    from mycelium.core.config import CaptureConfig, IngestConfig
    from mycelium.core.store import LocalStore

    gsm8k = ROOT.parent / "shared" / "data" / "gsm8k" / "train.jsonl"
    data = gsm8k if gsm8k.is_file() else ROOT / "shared" / "mycelium" / "data" / "sample_problems.jsonl"
    tmp = tempfile.mkdtemp(prefix="mycelium-cost-")
    run_capture(data, "cost", LocalStore(tmp), CaptureConfig(progress=True), IngestConfig(limit=args.n))
    return tmp, "cost"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--store", default="runs")
    ap.add_argument("--run", default=None)
    ap.add_argument("--n", type=int, default=100, help="chunks to time")
    ap.add_argument("--problems", type=int, default=10000, help="the run size to cost")
    ap.add_argument("--capture-rate", type=float, default=2.08, help="problems/s of one capture worker")
    ap.add_argument("--ib-exponent", type=float, default=1.32, help="discover time ~ steps^k (benchmarks/ib.py)")
    args = ap.parse_args()

    import boto3
    from moto import mock_aws

    from mycelium.core.config import AggregateConfig, AnalyzeConfig, DiscoverConfig
    from mycelium.core.keys import RunKeys, item_of_commit
    from mycelium.core.store import open_store
    from mycelium.stages.aggregate import AggregateStage
    from mycelium.stages.analyze import AnalyzeStage
    from mycelium.stages.discover import DiscoverStage
    from stacks.processing import STAGES
    from tests.conftest import load_handler

    store_url, run = _local_run(args)
    local = open_store(store_url)
    keys = RunKeys(run)
    pids = sorted(item_of_commit(k) for k in local.list(keys.commits("capture")))[: args.n]
    for k, v in {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_DEFAULT_REGION": "us-east-1",
                 "MYCELIUM_STORE": f"s3://{BUCKET}/runs"}.items():
        os.environ[k] = v
    with mock_aws():
        boto3.client("s3").create_bucket(Bucket=BUCKET)
        s3 = open_store(f"s3://{BUCKET}/runs")
        capture_bytes = 0
        for key in [keys.stage_record("ingest"), keys.stage_record("capture"), *local.list(keys.commits("ingest")),
                    *local.list(keys("problems", ""))]:
            s3.put(key, local.get(key))
        for pid in pids:
            for key in (keys.chunk(pid), keys.commit("capture", pid), keys.trace(pid)):
                blob = local.get(key)
                capture_bytes += len(blob)
                s3.put(key, blob)
        # as a cloud run's start does (mycelium.cloud.run.start_run): the later stages' records
        for stage in (AnalyzeStage(s3, run, AnalyzeConfig(progress=False)), AggregateStage(s3, run, AggregateConfig()),
                      DiscoverStage(s3, run, DiscoverConfig(progress=False))):
            stage.begin()
        analyze = load_handler("analyze").handler
        times = []
        for pid in pids:
            t0 = time.perf_counter()
            analyze({"run": run, "item_key": f"runs/{keys.commit('capture', pid)}"})
            times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        agg = load_handler("aggregate").handler({"run": run})
        t_agg = time.perf_counter() - t0
        t0 = time.perf_counter()
        load_handler("discover").handler({"run": run, "min_size": 5})
        t_dis = time.perf_counter() - t0
        out_bytes = sum(len(s3.get(k)) for k in s3.list(f"{run}/") if k.split("/")[1] in ("signals", "steps"))
        ib_bytes = sum(len(s3.get(k)) for k in s3.list(f"{run}/ib/"))

    n, N = len(pids), args.problems
    ms = statistics.mean(times) * 1000
    p95 = sorted(times)[int(0.95 * (n - 1))] * 1000
    scale = (N / n) ** args.ib_exponent
    gb = {s: spec.memory_mb / 1024 for s, spec in STAGES.items()}
    lam = {"analyze": N * ms / 1000 * gb["analyze"], "aggregate": t_agg * (N / n) * gb["aggregate"],
           "discover": t_dis * scale * gb["discover"]}
    # transitions: main path ~10 states; each map child (one per capture commit): its Task and its end
    transitions = 10 + 2 * N
    chunk_per_problem = capture_bytes / n
    s3_bytes = N * (chunk_per_problem + out_bytes / n) + ib_bytes * (N / n)
    gpu_h = N / args.capture_rate / 3600
    rows = [
        ("analyze Lambda", f"{N:,} invocations x {ms:.0f} ms (p95 {p95:.0f}) x {gb['analyze']:.0f} GB",
         f"{lam['analyze']:,.0f} GB-s", lam["analyze"] * PRICES["lambda_gb_s"] + N * PRICES["lambda_request"]),
        ("aggregate Lambda", f"{t_agg:.2f} s for {n} problems ({agg['steps']} steps), linear",
         f"{lam['aggregate']:,.0f} GB-s", lam["aggregate"] * PRICES["lambda_gb_s"]),
        ("discover Lambda", f"{t_dis:.2f} s for {n}, x (N/n)^{args.ib_exponent}", f"{lam['discover']:,.0f} GB-s",
         lam["discover"] * PRICES["lambda_gb_s"]),
        ("Step Functions", "10 + 2 per committed chunk", f"{transitions:,} transitions",
         transitions * PRICES["sfn_transition"]),
        ("Batch capture (g5.xlarge)", f"{N:,} / {args.capture_rate} problems/s", f"{gpu_h:.2f} GPU-h",
         gpu_h * PRICES["g5_xlarge_hour"]),
        ("S3 storage", f"{chunk_per_problem / 1e6:.2f} MB/problem captured + {out_bytes / n / 1e3:.1f} KB analysed",
         f"{s3_bytes / 1e9:.2f} GB", s3_bytes / 1e9 * PRICES["s3_gb_month"]),
        ("S3 requests", "capture 3 PUT; analyze 4 GET, 3 PUT (+1 DELETE, free) per problem",
         f"{11 * N:,} requests", N * (6 * PRICES["s3_put"] + 4 * PRICES["s3_get"])),
    ]
    print(f"measured on {n} chunks of run {run!r}; costed for {N:,} problems")
    print(f"{'item':28} {'basis':58} {'quantity':>18} {'USD':>8}")
    for item, basis, qty, usd in rows:
        print(f"{item:28} {basis:58} {qty:>18} {usd:8.2f}")
    print(f"{'total':28} {'':58} {'':>18} {sum(r[3] for r in rows):8.2f}")
    print(f"ratios: analyze {ms:.0f} ms/chunk vs {STAGES['analyze'].timeout_min * 60000} ms timeout "
          f"({ms / (STAGES['analyze'].timeout_min * 60000):.5f}); discover at N needs ~{t_dis * scale:.0f} s of "
          f"{STAGES['discover'].timeout_min * 60} s ({t_dis * scale / (STAGES['discover'].timeout_min * 60):.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
