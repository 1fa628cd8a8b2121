"""GPU worker: prepare a run, or capture one shard of its problems (AWS Batch jobs).

    python -m gpu_workers.capture.entry_point --store s3://bucket/runs --run NAME --prepare
    python -m gpu_workers.capture.entry_point --store s3://bucket/runs --run NAME [--shard KEY]

``--prepare`` (or ``MYCELIUM_CAPTURE_MODE=prepare``) runs once per run, before the array job: it pins the run's capture
config (from the run manifest) and finds the computing heads. Without
``--shard`` the worker captures shard ``$AWS_BATCH_JOB_ARRAY_INDEX`` (0 when the
job is not an array job), so one job definition serves every element.

It always writes a final status object, ``<run>/status/capture/<shard>.json``
(``prepare.json`` for ``--prepare``): succeeded with counts, or failed with the
traceback, so an orchestrator never waits on a silent worker.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback


def _prepare(store, keys, manifest, teacher) -> dict:
    from mycelium.capture_stage import prepare_capture

    shard_keys = sorted(k for k in store.list(keys("problems") + "/") if k.endswith(".jsonl"))
    cal = prepare_capture(store, keys, teacher, manifest.capture, manifest.ingest, manifest.data,
                          manifest.data_sha256, shard_keys)
    return {"shards": len(shard_keys), "computing_heads": [list(h) for h in cal.computing_heads]}


def _capture(store, keys, cfg, shard: str) -> tuple[bool, dict]:
    from mycelium.artifacts import StageSummary
    from mycelium.capture import HeadSet
    from mycelium.capture_stage import capture_problems
    from mycelium.errors import ConfigError
    from mycelium.generation import generate_with_vllm, use_vllm
    from mycelium.ingest import read_shard
    from mycelium.teacher import load_teacher

    # The run's config and computing heads were fixed by --prepare; a shard never recalibrates.
    pinned = store.get_json(keys("capture", "config.json"))["config_hash"]
    if cfg.hash() != pinned:
        raise ConfigError(f"run {keys.run!r}: the manifest's capture config ({cfg.hash()}) is not the one "
                          f"--prepare pinned ({pinned}); submit a new run instead of editing the manifest")
    heads = store.get_json(keys("capture", "calibration.json"))["computing_heads"]
    summary = StageSummary()
    problems = list(read_shard(store, shard))
    generated, backend = None, "hf"
    if use_vllm(cfg):  # the whole shard's CoTs first, then the eager teacher gets the GPU
        todo = [p for p in problems if not store.exists(keys.manifest(p.id))]
        generated, backend = generate_with_vllm(cfg, todo), "vllm"
    teacher = load_teacher(cfg.teacher, cfg.device, cfg.dtype)
    capture_problems(problems, len(problems), store, keys, teacher, cfg,
                     HeadSet(teacher.n_layers, tuple(tuple(h) for h in heads)), summary, generated)
    out = {"summary": summary.model_dump(), "generation": backend if cfg.cot == "generate" else "reference"}
    if summary.all_failed:
        out["error"] = f"every problem of the shard failed: see {keys('failures', 'capture')}/"
    return not summary.all_failed, out


def main(argv: list[str] | None = None) -> int:
    from mycelium import env
    from mycelium.manifest import load_manifest
    from mycelium.runs import RunKeys
    from mycelium.store import open_store
    from mycelium.teacher import load_teacher

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
    status: dict = {"run": args.run, "job": name, "started": time.time(),
                    "batch_job_id": os.environ.get("AWS_BATCH_JOB_ID")}
    try:
        manifest = load_manifest(store, keys)
        cfg = manifest.capture
        if args.prepare:
            ok, out = True, _prepare(store, keys, manifest, load_teacher(cfg.teacher, cfg.device, cfg.dtype))
        else:
            ok, out = _capture(store, keys, cfg, args.shard)
        status.update(state="succeeded" if ok else "failed", **out)
        return 0 if ok else 1
    except BaseException as e:  # noqa: BLE001 - the status object must say why
        status.update(state="failed", error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc())
        return 1
    finally:
        status["finished"] = time.time()
        try:
            store.put_json(keys("status", "capture", f"{name}.json"), status)
        except Exception:  # noqa: BLE001 - last resort: stderr, which Batch sends to CloudWatch
            print(json.dumps(status), file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
