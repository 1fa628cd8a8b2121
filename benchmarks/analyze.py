#!/usr/bin/env python3
"""Analyze benchmark: ms per chunk per core, MB/s of attention processed, beside numpy copy bandwidth.

Each measurement is made with a fork per sandboxed call and with the persistent sandbox worker, in the
same run, and a micro-benchmark times one trivial expression through ``run_sandboxed`` both ways.

    .venv/bin/python benchmarks/analyze.py [--store URL --run NAME] [--n 40]

Without --run it first captures N GSM8K train problems (bundled sample when
../shared/data is absent) with the embedded teacher into a temporary store.
Timings exclude store I/O: chunks are decoded into memory first.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
GSM8K = ROOT.parent / "shared" / "data" / "gsm8k" / "train.jsonl"
SAMPLE = ROOT / "shared" / "mycelium" / "data" / "sample_problems.jsonl"


def main() -> int:
    from mycelium.analysis.analyze import analyze
    from mycelium.core import sandbox
    from mycelium.core.config import AnalyzeConfig, CaptureConfig, IngestConfig
    from mycelium.core.keys import RunKeys, item_of_commit
    from mycelium.core.store import LocalStore, open_store
    from mycelium.core.sandbox import run_sandboxed
    from mycelium.mathlang.expressions import find_expressions, label_expressions
    from mycelium.mathlang.safe_math import _eval_many
    from mycelium.records.capture import Trace
    from mycelium.records.chunk import decode_chunk
    from mycelium.stages.analyze import AnalyzeStage
    from mycelium.stages.capture import run_capture
    from mycelium.stages.runner import run_stage

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--store", default=None)
    ap.add_argument("--run", default=None)
    ap.add_argument("--n", type=int, default=40)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="mycelium-bench-")
    try:
        if args.run:
            store, run = open_store(args.store), args.run
        else:
            store, run = LocalStore(tmp), "bench"
            data = GSM8K if GSM8K.is_file() else SAMPLE
            print(f"capturing {args.n} problems of {data} with the embedded teacher ...", flush=True)
            run_capture(data, run, store, CaptureConfig(progress=False), IngestConfig(limit=args.n))
        keys = RunKeys(run)
        pids = [item_of_commit(k) for k in store.list(keys.commits("capture"))][: args.n]
        items = [(Trace.model_validate(store.get_json(keys.trace(p))), decode_chunk(store.get(keys.chunk(p)))) for p in pids]
        arrays = [a for _, c in items for a in c.arrays().values()]
        mb = sum(a.nbytes for a in arrays) / 2**20
        cfg = AnalyzeConfig(progress=False)

        # The same loops with a fork per sandboxed call and with the persistent sandbox worker, same session,
        # alternating twice; the faster pass of each counts.
        full, exprs = {"fork": float("inf"), "persistent": float("inf")}, {}
        for mode in ("fork", "persistent") * 2:
            sandbox.PERSISTENT = mode == "persistent"
            analyze(*items[0], cfg)  # warm imports (scipy, sympy, latex parser) and the worker
            t0 = time.perf_counter()
            for trace, chunk in items:
                analyze(trace, chunk, cfg)
            elapsed = time.perf_counter() - t0
            if elapsed < full[mode]:
                full[mode] = elapsed
                t0 = time.perf_counter()
                for trace, _ in items:
                    label_expressions(find_expressions(trace.cot_text))
                exprs[mode] = time.perf_counter() - t0
        calls, micro = 200, {}
        for mode in ("fork", "persistent"):
            run_sandboxed(_eval_many, ["48/2"], persistent=mode == "persistent")
            t0 = time.perf_counter()
            for _ in range(calls):
                run_sandboxed(_eval_many, ["48/2"], persistent=mode == "persistent")
            micro[mode] = (time.perf_counter() - t0) / calls
        sandbox.PERSISTENT = True

        reps = 20
        t0 = time.perf_counter()
        for _ in range(reps):
            for a in arrays:
                np.copy(a)
        copy_s = (time.perf_counter() - t0) / reps

        n = len(items)
        print(f"{n} chunks, {mb:.1f} MB of arrays as decoded ({mb / n * 1024:.0f} KB/chunk)")
        for mode in ("fork", "persistent"):
            print(f"one core, sandbox {mode}: {1000 * full[mode] / n:.1f} ms/chunk, of which expressions in the "
                  f"sandbox {1000 * exprs[mode] / n:.1f} ms and signals/steps/mapping "
                  f"{1000 * (full[mode] - exprs[mode]) / n:.1f} ms")
        print(f"persistent sandbox vs fork per call: analysis x{full['fork'] / full['persistent']:.2f} faster; "
              f"{calls} calls of one trivial expression: {1000 * micro['fork']:.2f} vs "
              f"{1000 * micro['persistent']:.3f} ms/call (x{micro['fork'] / micro['persistent']:.0f})")
        full, exprs = full["persistent"], exprs["persistent"]
        print(f"attention processed: {mb / full:.1f} MB/s (signals part alone {mb / max(full - exprs, 1e-9):.1f} MB/s); "
              f"numpy copy of the same arrays: {mb / copy_s:.0f} MB/s "
              f"(analysis at {100 * (mb / full) / (mb / copy_s):.2f}% of copy bandwidth)")

        for mode, workers in [(m, w) for w in sorted({1, os.cpu_count() or 1}) for m in ("fork", "persistent")]:
            os.environ["MYCELIUM_SANDBOX"] = mode  # the pool's spawned workers read it
            st = LocalStore(Path(tmp) / f"pool{workers}{mode}")  # the run's records and the N chunks, nothing analysed
            needed = [k for k in store.list(keys("stages", "")) if not k.endswith(("analyze.json", "aggregate.json",
                                                                                   "discover.json"))]
            needed += [*store.list(keys.commits("ingest")), *store.list(keys("problems", ""))]
            needed += [k for p in pids for k in (keys.trace(p), keys.chunk(p), keys.commit("capture", p))]
            for key in needed:
                st.put(key, store.get(key))
            t0 = time.perf_counter()
            summary = run_stage(AnalyzeStage(st, run, AnalyzeConfig(progress=False)), items=pids, workers=workers,
                                progress=False)
            wall = time.perf_counter() - t0
            out = summary.n_out
            print(f"pool, {workers} worker(s), sandbox {mode}: {wall:.1f} s wall for {out} chunks = "
                  f"{1000 * wall * workers / out:.1f} ms per chunk per core (store I/O and worker start included)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
