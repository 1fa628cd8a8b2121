"""GPU worker: prepare a run, or capture one shard of its problems (AWS Batch jobs).

    python -m gpu_workers.capture.entry_point --store s3://bucket/runs --run NAME --prepare
    python -m gpu_workers.capture.entry_point --store s3://bucket/runs --run NAME [--shard KEY]

``--prepare`` (or ``MYCELIUM_CAPTURE_MODE=prepare``) runs once per run, before the array job: it checks the
run's capture config (recorded from the manifest when the run started) and finds the computing heads. Without
``--shard`` the worker captures shard ``$AWS_BATCH_JOB_ARRAY_INDEX`` (0 when the
job is not an array job), so one job definition serves every element.

It always writes a final status object, ``<run>/status/capture/<shard>.json``
(``prepare.json`` for ``--prepare``): succeeded with counts, or failed with the
traceback, so an orchestrator never waits on a silent worker.
"""

from __future__ import annotations

import argparse
import os
import sys

from gpu_workers.status import report


def _prepare(store, run: str) -> dict:
    from mycelium.stages.capture import CaptureStage
    from mycelium.stages.problems import shard_keys

    stage = CaptureStage.current(store, run)
    cal = stage.prepare()
    return {"shards": len(shard_keys(store, stage.keys)), "computing_heads": [list(h) for h in cal.computing_heads]}


def _capture(store, run: str, shard: str) -> tuple[bool, dict]:
    from mycelium.stages.capture import CaptureStage
    from mycelium.stages.runner import run_stage
    from mycelium.teacher.generation import generate_with_vllm, use_vllm

    # The run's config was pinned when it started and its computing heads by --prepare: a shard never recalibrates.
    stage = CaptureStage.current(store, run)
    items = stage.items([shard])
    backend = "hf"
    if use_vllm(stage.config):  # the whole shard's CoTs first, then the eager teacher gets the GPU
        todo = [stage.problem(pid) for pid in items if not _done(stage, pid)]
        stage.generated, backend = generate_with_vllm(stage.config, todo), "vllm"
        stage.backend = backend
    # Elements of an array job run at once: each reports its part here, the run's line is tallied at the end.
    summary = run_stage(stage, items=items, progress=False, save_summary=False)
    out = {"summary": summary.model_dump(), "generation": backend if stage.config.cot == "generate" else "reference"}
    if summary.all_failed:
        out["error"] = f"every problem of the shard failed: see {stage.keys.failures('capture')}"
    return not summary.all_failed, out


def _done(stage, pid: str) -> bool:
    """Already captured; a corrupt commit counts as not done (run_stage then makes it a ledger entry)."""
    from mycelium.core.errors import StoreError

    try:
        return stage.is_done(pid)
    except StoreError:
        return False


def main(argv: list[str] | None = None) -> int:
    from mycelium.core import env
    from mycelium.core.keys import RunKeys
    from mycelium.core.store import open_store

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--store", required=True)
    ap.add_argument("--run", required=True)
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--prepare", action="store_true", default=os.environ.get(env.CAPTURE_MODE) == "prepare",
                      help=f"pin the config and calibrate (once per run; or ${env.CAPTURE_MODE}=prepare)")
    mode.add_argument("--shard", help="key of a problems/part-*.jsonl shard (default: the array index's)")
    args = ap.parse_args(argv)

    store, keys = open_store(args.store), RunKeys(args.run)
    if args.prepare:
        name = "prepare"
    else:
        args.shard = args.shard or keys.shard(int(os.environ.get(env.BATCH_ARRAY_INDEX, "0")))
        name = args.shard.rsplit("/", 1)[-1].removesuffix(".jsonl")
    status: dict = {"run": args.run, "job": name, "batch_job_id": os.environ.get("AWS_BATCH_JOB_ID")}

    def work() -> tuple[bool, dict]:
        return (True, _prepare(store, args.run)) if args.prepare else _capture(store, args.run, args.shard)

    return report(store, keys("status", "capture", f"{name}.json"), status, work)

if __name__ == "__main__":
    sys.exit(main())
