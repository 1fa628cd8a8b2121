"""GPU worker: capture one shard of problems (an AWS Batch array job element).

    python -m gpu_workers.capture.entry_point --store s3://bucket/runs --run NAME --shard KEY

It always writes a final status object, ``<run>/status/capture/<shard>.json``:
succeeded with counts, or failed with the traceback, so an orchestrator never
waits on a silent worker.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback


def main(argv: list[str] | None = None) -> int:
    from mycelium.capture import HeadSet
    from mycelium.capture_stage import capture_problems
    from mycelium.artifacts import StageSummary
    from mycelium.config import CaptureConfig
    from mycelium.ingest import read_shard
    from mycelium.runs import RunKeys
    from mycelium.store import open_store
    from mycelium.teacher import load_teacher

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--store", required=True)
    ap.add_argument("--run", required=True)
    ap.add_argument("--shard", required=True, help="key of a problems/part-*.jsonl shard")
    args = ap.parse_args(argv)

    store, keys = open_store(args.store), RunKeys(args.run)
    status_key = keys("status", "capture", args.shard.rsplit("/", 1)[-1].replace(".jsonl", ".json"))
    status: dict = {"shard": args.shard, "started": time.time()}
    try:
        # The run's capture config and computing heads were fixed when the run was ingested/calibrated.
        cfg = CaptureConfig.model_validate(store.get_json(keys("capture", "config.json"))["config"])
        heads = store.get_json(keys("capture", "calibration.json"))["computing_heads"]
        teacher = load_teacher(cfg.teacher, cfg.device, cfg.dtype)
        summary = StageSummary()
        problems = list(read_shard(store, args.shard))
        capture_problems(problems, len(problems), store, keys, teacher, cfg,
                         HeadSet(teacher.n_layers, tuple(tuple(h) for h in heads)), summary)
        state = "failed" if summary.all_failed else "succeeded"
        status.update(state=state, summary=summary.model_dump())
        if summary.all_failed:
            status["error"] = f"every problem of the shard failed: see {keys('failures', 'capture')}/"
        return 0 if state == "succeeded" else 1
    except BaseException as e:  # noqa: BLE001 - the status object must say why
        status.update(state="failed", error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc())
        return 1
    finally:
        status["finished"] = time.time()
        try:
            store.put_json(status_key, status)
        except Exception:  # noqa: BLE001 - last resort: stderr
            print(json.dumps(status), file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
