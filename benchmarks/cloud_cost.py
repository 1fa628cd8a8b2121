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

The second half: the label handler is timed on the same chunks (after discover), merge once; with ``--loop
runs/<run>/rounds/improve.json`` (a ``mycelium improve`` report) the training, the solver on the val problems,
the students' labels and the teacher's mop-up are costed from that loop's measured per-item times, for
``--rounds`` improvement rounds. Those were measured on this machine's CPU: training and mop-up generation on
a g5 are faster, so their rows are upper bounds; the solver's rows are Lambda CPU time, as measured.
"""

from __future__ import annotations

import argparse
import json
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
    "g5_xlarge_hour": 1.006, "g5_48xlarge_hour": 16.288,
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
    ap.add_argument("--loop", default=None, help="a `mycelium improve` report (rounds/improve.json) to cost the "
                                                  "training, the solver and the mop-up from")
    ap.add_argument("--out", default=None, help="also write the table as JSON here (the README's headline reads "
                    "reports/cloud-cost/cost.json)")
    ap.add_argument("--rounds", type=int, default=2, help="improvement rounds to cost (with --loop)")
    args = ap.parse_args()

    import boto3
    from moto import mock_aws

    from mycelium.core.config import AggregateConfig, AnalyzeConfig, DiscoverConfig, LabelConfig, MergeConfig
    from mycelium.core.keys import RunKeys, item_of_commit
    from mycelium.core.store import open_store
    from mycelium.stages.aggregate import AggregateStage
    from mycelium.stages.analyze import AnalyzeStage
    from mycelium.stages.discover import DiscoverStage
    from mycelium.stages.label import LabelStage
    from mycelium.stages.merge import MergeStage
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
                      DiscoverStage(s3, run, DiscoverConfig(progress=False)), LabelStage(s3, run, LabelConfig(
                          progress=False)), MergeStage(s3, run, MergeConfig())):
            stage.begin()
        def per_item(stage: str, upstream: str) -> list[float]:
            """The map stage's handler on each chunk's upstream commit, timed."""
            handler, out = load_handler(stage).handler, []
            for pid in pids:
                t0 = time.perf_counter()
                handler({"run": run, "item_key": f"runs/{keys.commit(upstream, pid)}"})
                out.append(time.perf_counter() - t0)
            return out

        times = per_item("analyze", "capture")
        t0 = time.perf_counter()
        agg = load_handler("aggregate").handler({"run": run})
        t_agg = time.perf_counter() - t0
        t0 = time.perf_counter()
        load_handler("discover").handler({"run": run, "min_size": 5})
        t_dis = time.perf_counter() - t0
        out_bytes = sum(len(s3.get(k)) for k in s3.list(f"{run}/") if k.split("/")[1] in ("signals", "steps"))
        ib_bytes = sum(len(s3.get(k)) for k in s3.list(f"{run}/ib/"))
        label_times = per_item("label", "analyze")
        t0 = time.perf_counter()
        load_handler("merge").handler({"run": run})
        t_merge = time.perf_counter() - t0

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
    label_ms = statistics.mean(label_times) * 1000
    rows += [
        ("label Lambda", f"{N:,} x {label_ms:.0f} ms x {gb['label']:.0f} GB", f"{N * label_ms / 1000 * gb['label']:,.0f} GB-s",
         N * label_ms / 1000 * gb["label"] * PRICES["lambda_gb_s"] + N * PRICES["lambda_request"]),
        ("merge Lambda", f"{t_merge:.2f} s for {n} problems, linear", f"{t_merge * N / n * gb['merge']:,.0f} GB-s",
         t_merge * N / n * gb["merge"] * PRICES["lambda_gb_s"]),
    ]
    if args.loop:
        rows += loop_rows(json.loads(Path(args.loop).read_text()), N, args.rounds, gb)
    print(f"measured on {n} chunks of run {run!r}; costed for {N:,} problems")
    print(f"{'item':28} {'basis':58} {'quantity':>18} {'USD':>8}")
    for item, basis, qty, usd in rows:
        print(f"{item:28} {basis:58} {qty:>18} {usd:8.2f}")
    print(f"{'total':28} {'':58} {'':>18} {sum(r[3] for r in rows):8.2f}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({
            "problems": N, "measured_on_chunks": n, "run": run, "loop_rounds": args.rounds if args.loop else 0,
            "bytes_per_problem_captured": chunk_per_problem, "total_usd": sum(r[3] for r in rows),
            "command": "benchmarks/cloud_cost.py " + " ".join(sys.argv[1:]),
            "rows": [{"item": i, "basis": b, "quantity": q, "usd": u} for i, b, q, u in rows]}, indent=1))
    print(f"ratios: analyze {ms:.0f} ms/chunk vs {STAGES['analyze'].timeout_min * 60000} ms timeout "
          f"({ms / (STAGES['analyze'].timeout_min * 60000):.5f}); discover at N needs ~{t_dis * scale:.0f} s of "
          f"{STAGES['discover'].timeout_min * 60} s ({t_dis * scale / (STAGES['discover'].timeout_min * 60):.2f})")
    return 0


def loop_rows(report: dict, N: int, rounds: int, gb: dict, val_share: float = 0.1) -> list[tuple]:
    """Round 0 (train, the solver on val) and ``rounds`` improvement rounds (the students' labels on the training
    problems, the teacher's mop-up, train, val), for N problems, from a loop's measured per-item times."""
    rows = report["rounds"]
    later = [r for r in rows[1:] if "seconds" in r and "students" in r]
    n_train = report["problems"]  # val_share: merge's (the loop may have measured on a subset of val)
    # the six students, their epochs, per training problem (a round that trained: a resumed round 0 did not)
    train_per_problem = max(r["seconds"]["train_s"] for r in rows if "seconds" in r) / n_train
    # the solver's mean time per val problem in the least loaded round (the CPU was shared with other jobs)
    solve_s = min(r["solve_ms_mean"] for r in rows if "solve_ms_mean" in r) / 1000
    student_s = statistics.mean(r["seconds"]["students_s"] / r["students"]["tried"] for r in later) if later else solve_s
    asked = [r["mop_up"]["asked"] for r in later]
    mop_s = (statistics.mean(r["seconds"]["mop_up_s"] / r["mop_up"]["asked"] for r in later if r["mop_up"]["asked"])
             if any(asked) else 0.0)
    mop_share = statistics.mean(a / n_train for a in asked) if asked else 0.0
    trains, vals = 1 + rounds, 1 + rounds
    train_h = trains * N * (1 - val_share) * train_per_problem / 3600
    gbs_val = vals * N * val_share * solve_s * gb["solve"]
    gbs_students = rounds * N * (1 - val_share) * student_s * gb["solve"]
    mop_h = rounds * N * (1 - val_share) * mop_share * mop_s / 3600
    return [
        ("Batch train (g5.48xlarge)", f"{trains} x {N * (1 - val_share):,.0f} problems x {train_per_problem:.2f} s "
         "(2-core CPU: an upper bound)", f"{train_h:.2f} h", train_h * PRICES["g5_48xlarge_hour"]),
        ("solve Lambda, val", f"{vals} x {N * val_share:,.0f} x {solve_s * 1000:.0f} ms x {gb['solve']:.0f} GB",
         f"{gbs_val:,.0f} GB-s", gbs_val * PRICES["lambda_gb_s"]),
        ("solve Lambda, student labels", f"{rounds} x {N * (1 - val_share):,.0f} x {student_s * 1000:.0f} ms x "
         f"{gb['solve']:.0f} GB", f"{gbs_students:,.0f} GB-s", gbs_students * PRICES["lambda_gb_s"]),
        ("Batch mop-up capture (g5.xlarge)", f"{rounds} x {100 * mop_share:.1f} % asked x {mop_s:.1f} s "
         "(generated CoT, 2-core CPU: an upper bound)", f"{mop_h:.2f} GPU-h", mop_h * PRICES["g5_xlarge_hour"]),
    ]


if __name__ == "__main__":
    sys.exit(main())
