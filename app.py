#!/usr/bin/env python3
"""CDK app: Mycelium's stacks. `cdk synth` / `cdk deploy` read this through cdk.json.

Context: ``mycelium:bucket`` (the runs bucket's globally unique name), ``mycelium:region``, ``account``.
"""

import stacks  # noqa: F401, I001 - first: silences the Node end-of-life banner before jsii starts

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks
from stacks.processing import ProcessingStack
from stacks.storage import StorageStack


def build(app: cdk.App) -> dict[str, cdk.Stack]:
    env = cdk.Environment(account=app.node.try_get_context("account"), region=app.node.try_get_context("mycelium:region"))
    bucket_name = app.node.try_get_context("mycelium:bucket") or "mycelium-runs"
    storage = StorageStack(app, "MyceliumStorage", bucket_name=bucket_name, env=env)
    processing = ProcessingStack(app, "MyceliumProcessing", bucket_name=bucket_name, env=env)
    processing.add_stack_dependency(storage)
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))  # findings fail the synth
    return {"storage": storage, "processing": processing}


if __name__ == "__main__":
    app = cdk.App()
    build(app)
    app.synth()
