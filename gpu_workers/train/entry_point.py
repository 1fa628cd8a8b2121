"""GPU worker: train a run's specialists on one multi-GPU instance (an AWS Batch job on g5.12xlarge / g5.48xlarge).

    python -m gpu_workers.train.entry_point --store s3://bucket/runs --run NAME [--components C1,...] [--epochs N]

It starts ``torchrun --nproc_per_node <GPUs>`` on ``mycelium train`` (DDP over NCCL; one process without a GPU),
reading the run's merged examples from the store, then uploads each component's directory to
``<run>/models/<C>/`` and always writes ``<run>/status/train/<job>.json``: succeeded with each component's val
metrics, or failed with the reason, so an orchestrator never waits on a silent worker.

In the improvement loop the state machine sets ``MYCELIUM_ROUND=k``: the job then trains on round k's merged
data with the loop's options (the run's ``stages/improve.json``: epochs, batch size, width, its problems) and
uploads to ``<run>/rounds/r<k>/models/<C>/`` (round 0: ``<run>/models/<C>/``). With ``MYCELIUM_TRAIN=verifier``
it trains the round's verifier from the reader's beams the solve map wrote (``mycelium train-verifier``) and
uploads it to ``models/verifier/`` of the round.
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


def train_command(store: str, run: str, out: Path, extra: list[str], n_proc: int, what: str | None = None
                  ) -> list[str]:
    """The command that trains: torchrun over ``n_proc`` processes, or one plain process. ``what`` "verifier":
    the round's verifier from its beams (one process: it is small)."""
    if what == "verifier":
        return [sys.executable, "-m", "mycelium.cli", "train-verifier", "--run", run, "--store", store, "--out",
                str(out), "--no-progress", *extra]
    args = ["train", "--run", run, "--store", store, "--out", str(out), "--no-progress", *extra]
    if n_proc <= 1:
        return [sys.executable, "-m", "mycelium.cli", *args]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n_proc),
            "-m", "mycelium.cli", "--", *args]


def round_args(store, run: str, k: int) -> list[str]:
    """``mycelium train``'s options for improvement round ``k``: the loop's, as the run's improve record has them."""
    from mycelium.core.keys import RunKeys
    from mycelium.stages.improve import improve_config

    c = improve_config(store, RunKeys(run))
    return ["--round", str(k), "--epochs", str(c.epochs), "--batch-size", str(c.batch_size), "--lr", str(c.lr),
            "--seed", str(c.seed), "--hidden", str(c.hidden), "--adapter-layers", str(c.adapter_layers),
            "--backbone", c.backbone, *(["--problems", str(c.problems)] if c.problems else [])]


def upload(store, run: str, out: Path, round: int = 0) -> dict:
    """Every component's files to ``<run>/models/<C>/`` (round k: ``rounds/r<k>/models/<C>/``); component -> its
    val metrics."""
    from mycelium.core.keys import RunKeys

    keys, metrics = RunKeys(run), {}
    for component in sorted(p for p in out.iterdir() if p.is_dir()):
        for f in sorted(component.iterdir()):
            store.put(keys.model(component.name, f.name, round), f.read_bytes())
        metrics[component.name] = json.loads((component / "metrics.json").read_text())["val"]
    return metrics


def main(argv: list[str] | None = None) -> int:
    from mycelium.core import env
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
    round_, what = os.environ.get(env.TRAIN_ROUND), os.environ.get(env.TRAIN_WHAT) or None
    status: dict = {"run": args.run, "job": name, "processes": n_proc, "round": round_, "trains": what or "students"}

    def work() -> tuple[bool, dict]:
        if what == "verifier":
            more = ["--round", str(int(round_ or 0)), *extra]
        else:
            more = extra if round_ is None else [*round_args(store, args.run, int(round_)), *extra]
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "models"
            done = subprocess.run(train_command(args.store, args.run, out, more, n_proc, what), capture_output=True,
                                  text=True)
            sys.stderr.write(done.stderr[-20000:])
            sys.stdout.write(done.stdout)
            if done.returncode != 0:
                raise RuntimeError(f"mycelium train exited {done.returncode}: {done.stderr.strip()[-2000:]}")
            return True, {"val": upload(store, args.run, out, int(round_ or 0))}

    return report(store, keys("status", "train", f"{name}.json"), status, work)

if __name__ == "__main__":
    sys.exit(main())
