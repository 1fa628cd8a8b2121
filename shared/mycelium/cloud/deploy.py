"""``mycelium deploy``: the ``cdk deploy`` (or ``cdk synth``) of the stacks, with Mycelium's context."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from ..core.errors import MyceliumError

ROOT = Path(__file__).resolve().parents[3]


def deploy_command(bucket: str, region: str | None = None, name: str = "mycelium", spot: bool = False,
                   max_vcpus: int | None = None, vllm: str | None = None, synth_only: bool = False,
                   cdk: str | None = None, train_gpus: int | None = None) -> list[str]:
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
               "mycelium:spot": "true" if spot else None, "mycelium:max_vcpus": max_vcpus, "mycelium:vllm": vllm,
               "mycelium:train_gpus": train_gpus}
    for k, v in context.items():
        if v is not None:
            argv += ["--context", f"{k}={v}"]
    return argv


def deploy(argv: list[str]) -> int:
    """Run the command in the repository root (where cdk.json is)."""
    return subprocess.call(argv, cwd=ROOT)
