"""The AWS side of the CLI: deploy the stacks, find a run's execution, report its progress.

``mycelium submit`` needs nothing from here (it is an upload: see :func:`mycelium.manifest.submit`).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from .errors import MyceliumError
from .manifest import MANIFEST
from .runs import RunKeys
from .store import Store

ROOT = Path(__file__).resolve().parents[2]
#: The state machine's name (the orchestration stack names it ``<prefix>-pipeline``).
PIPELINE = "pipeline"


def deploy_command(bucket: str, region: str | None = None, name: str = "mycelium", spot: bool = False,
                   max_vcpus: int | None = None, vllm: str | None = None, synth_only: bool = False,
                   cdk: str | None = None) -> list[str]:
    """The ``cdk deploy`` (or ``cdk synth``) command line with Mycelium's context."""
    cdk = cdk or shutil.which("cdk")
    if cdk is None:
        raise MyceliumError("the AWS CDK CLI is not on PATH: install it with `npm install -g aws-cdk` "
                            "(Node.js 18+), then run `cdk bootstrap` once per account and region")
    argv = [cdk, "synth" if synth_only else "deploy", "--all"]
    if not synth_only:
        argv += ["--require-approval", "never"]
    argv += ["--app", f"{sys.executable} app.py"]  # this interpreter has aws-cdk-lib; cdk.json's python3 may not
    context = {"mycelium:bucket": bucket, "mycelium:name": name, "mycelium:region": region,
               "mycelium:spot": "true" if spot else None, "mycelium:max_vcpus": max_vcpus, "mycelium:vllm": vllm}
    for k, v in context.items():
        if v is not None:
            argv += ["--context", f"{k}={v}"]
    return argv


def deploy(argv: list[str]) -> int:
    """Run the command in the repository root (where cdk.json is)."""
    return subprocess.call(argv, cwd=ROOT)


def state_machine_arn(sfn, name: str = "mycelium") -> str:
    want = f"{name}-{PIPELINE}"
    for page in sfn.get_paginator("list_state_machines").paginate():
        for sm in page["stateMachines"]:
            if sm["name"] == want:
                return sm["stateMachineArn"]
    raise MyceliumError(f"no state machine named {want!r} in this account and region: run `mycelium deploy` first")


def find_execution(sfn, machine_arn: str, run: str, prefix: str = "runs", look_back: int = 200) -> dict | None:
    """The newest execution started by ``<prefix>/<run>/manifest.json`` (executions are named by EventBridge)."""
    key = f"{prefix}/{run}/{MANIFEST}"
    seen = 0
    for page in sfn.get_paginator("list_executions").paginate(stateMachineArn=machine_arn):
        for ex in page["executions"]:  # newest first
            desc = sfn.describe_execution(executionArn=ex["executionArn"])
            event = json.loads(desc.get("input") or "{}")
            if event.get("detail", {}).get("object", {}).get("key") == key:
                return desc
            seen += 1
            if seen >= look_back:
                return None
    return None


def run_status(sfn, store: Store, machine_arn: str, run: str) -> dict:
    """Execution status, map-run item counts, and what the bucket says (capture workers, the run's end)."""
    keys = RunKeys(run)
    out: dict = {"run": run, "submitted": store.exists(keys(MANIFEST)), "execution": None, "map_runs": []}
    desc = find_execution(sfn, machine_arn, run, getattr(store, "prefix", "runs") or "runs")
    if desc is not None:
        out["execution"] = {k: str(desc[k]) for k in ("executionArn", "status", "startDate", "stopDate") if k in desc}
        for mr in sfn.list_map_runs(executionArn=desc["executionArn"]).get("mapRuns", []):
            d = sfn.describe_map_run(mapRunArn=mr["mapRunArn"])
            counts = d.get("itemCounts", {})
            out["map_runs"].append({"status": d.get("status"), **{k: counts.get(k, 0) for k in (
                "pending", "running", "succeeded", "failed", "timedOut", "aborted", "total")}})
    workers = [store.get_json(k) for k in store.list(keys("status", "capture") + "/") if k.endswith(".json")]
    out["capture_jobs"] = {s: sum(w.get("state") == s for w in workers) for s in ("succeeded", "failed")}
    out["chunks"] = sum(1 for k in store.list(keys("chunks") + "/") if k.endswith(".json"))
    out["ended"] = store.get_json(keys("status", "run.json")) if store.exists(keys("status", "run.json")) else None
    return out


def format_status(st: dict) -> str:
    lines = [f"run {st['run']}" + ("" if st["submitted"] else " (no manifest: not submitted)")]
    ex = st["execution"]
    lines.append(f"execution: {ex['status']} since {ex.get('startDate')}  {ex['executionArn']}" if ex
                 else "execution: none found (the upload may not have reached the rule yet)")
    lines.append(f"capture: {st['chunks']} chunks; worker jobs succeeded {st['capture_jobs']['succeeded']}, "
                 f"failed {st['capture_jobs']['failed']}")
    for mr in st["map_runs"]:
        lines.append("analyze map: {status}; pending {pending}, running {running}, succeeded {succeeded}, "
                     "failed {failed}, timed out {timedOut}, aborted {aborted} of {total}".format(**mr))
    if st["ended"]:
        end = st["ended"]
        lines.append(f"ended {end['state']} at {end['at']}" + (f": {end['error']}: {end['cause']}" if end["error"] else ""))
    return "\n".join(lines)
