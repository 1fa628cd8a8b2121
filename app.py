#!/usr/bin/env python3
"""CDK app: Mycelium's stacks. `cdk synth` / `cdk deploy` read this through cdk.json.

Context: ``mycelium:bucket`` (the runs bucket's globally unique name), ``mycelium:region``, ``account``,
``mycelium:max_vcpus`` (g5 capacity, default 64), ``mycelium:spot`` ("true" for Spot g5),
``mycelium:name`` (function name prefix, default "mycelium"), ``mycelium:vllm`` (a vLLM version to install in the capture image).
"""

import stacks  # noqa: F401, I001 - first: silences the Node end-of-life banner before jsii starts

import os

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks
from stacks.gpu_workers import GpuWorkersStack
from stacks.orchestration import OrchestrationStack
from stacks.processing import ProcessingStack
from stacks.storage import StorageStack


#: Feature flags the stacks rely on (also in cdk.json, for the CLI).
FLAGS = {"@aws-cdk/aws-stepfunctions:useDistributedMapResultWriterV2": True}


def build(app: cdk.App) -> dict[str, cdk.Stack]:
    for flag, value in FLAGS.items():
        app.node.set_context(flag, value)
    ctx = app.node.try_get_context
    # The CDK CLI sets CDK_DEFAULT_ACCOUNT/REGION from the credentials it deploys with.
    env = cdk.Environment(account=ctx("account") or os.environ.get("CDK_DEFAULT_ACCOUNT"),
                          region=ctx("mycelium:region") or os.environ.get("CDK_DEFAULT_REGION"))
    bucket_name = app.node.try_get_context("mycelium:bucket") or "mycelium-runs"
    storage = StorageStack(app, "MyceliumStorage", bucket_name=bucket_name, env=env)
    name_prefix = app.node.try_get_context("mycelium:name") or "mycelium"
    processing = ProcessingStack(app, "MyceliumProcessing", bucket_name=bucket_name, env=env, name_prefix=name_prefix)
    processing.add_stack_dependency(storage)
    gpu = GpuWorkersStack(app, "MyceliumGpuWorkers", bucket_name=bucket_name, env=env,
                          max_vcpus=int(ctx("mycelium:max_vcpus") or 64),
                          spot=str(ctx("mycelium:spot") or "false").lower() == "true",
                          vllm_version=str(ctx("mycelium:vllm") or ""),
                          train_gpus=int(ctx("mycelium:train_gpus") or 8))
    gpu.add_stack_dependency(storage)
    orchestration = OrchestrationStack(
        app, "MyceliumOrchestration", bucket_name=bucket_name, env=env, function_names=processing.function_names,
        job_queue=gpu.queue, job_definition=gpu.job_definition, train_queue=gpu.train_queue,
        train_job_definition=gpu.train_job_definition, name_prefix=name_prefix)
    orchestration.add_stack_dependency(processing)
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))  # findings fail the synth
    return {"storage": storage, "processing": processing, "gpu_workers": gpu, "orchestration": orchestration}


if __name__ == "__main__":
    app = cdk.App()
    build(app)
    app.synth()
