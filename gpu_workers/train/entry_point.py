"""GPU worker: train a run's specialists on one multi-GPU instance (an AWS Batch job on g5.12xlarge / g5.48xlarge).

    python -m gpu_workers.train.entry_point --store s3://bucket/runs --run NAME [--components C1,...] [--epochs N]

It starts ``torchrun --nproc_per_node <GPUs>`` on ``mycelium train`` (DDP over NCCL; one process without a GPU),
reading the run's merged examples from the store, then uploads each component's directory to
``<run>/models/<C>/`` and always writes ``<run>/status/train/<job>.json``: succeeded with each component's val
metrics, or failed with the reason, so an orchestrator never waits on a silent worker.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from gpu_workers.status import report


def gpus() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except ImportError:
        return 0


def train_command(store: str, run: str, out: Path, extra: list[str], n_proc: int) -> list[str]:
    """The command that trains: torchrun over ``n_proc`` processes, or one plain process."""
    args = ["train", "--run", run, "--store", store, "--out", str(out), "--no-progress", *extra]
    if n_proc <= 1:
        return [sys.executable, "-m", "mycelium.cli", *args]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n_proc),
            "-m", "mycelium.cli", "--", *args]


def upload(store, run: str, out: Path) -> dict:
    """Every component's files to ``<run>/models/<C>/``; component -> its val metrics."""
    from mycelium.core.keys import RunKeys

    keys, metrics = RunKeys(run), {}
    for component in sorted(p for p in out.iterdir() if p.is_dir()):
        for f in sorted(component.iterdir()):
            store.put(keys.model(component.name, f.name), f.read_bytes())
        metrics[component.name] = json.loads((component / "metrics.json").read_text())["val"]
    return metrics


def main(argv: list[str] | None = None) -> int:
    from mycelium.core.keys import RunKeys
    from mycelium.core.store import open_store

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--store", required=True)
    ap.add_argument("--run", required=True)
    ap.add_argument("--nproc", type=int, default=None, help="processes (default: one per GPU)")
    args, extra = ap.parse_known_args(argv)  # the rest goes to `mycelium train` (--components, --epochs, ...)
    store, keys = open_store(args.store), RunKeys(args.run)
    name = os.environ.get("AWS_BATCH_JOB_ID", "local")
    n_proc = args.nproc if args.nproc is not None else max(1, gpus())
    status: dict = {"run": args.run, "job": name, "processes": n_proc}

    def work() -> tuple[bool, dict]:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "models"
            done = subprocess.run(train_command(args.store, args.run, out, extra, n_proc), capture_output=True,
                                  text=True)
            sys.stderr.write(done.stderr[-20000:])
            sys.stdout.write(done.stdout)
            if done.returncode != 0:
                raise RuntimeError(f"mycelium train exited {done.returncode}: {done.stderr.strip()[-2000:]}")
            return True, {"val": upload(store, args.run, out)}

    return report(store, keys("status", "train", f"{name}.json"), status, work)

if __name__ == "__main__":
    sys.exit(main())
