"""`cdk synth` of the whole app for the tests, and the state machine definition out of it."""

from __future__ import annotations

import json
from pathlib import Path

import stacks  # noqa: F401 - before aws_cdk: silences the Node end-of-life banner


def synthesize(outdir: Path, region: str = "us-east-1", bucket: str = "mycelium-runs") -> dict[str, dict]:
    """Stack name ("storage", "processing", "gpu_workers", "orchestration") -> its CloudFormation template."""
    import aws_cdk

    from app import build

    app = aws_cdk.App(outdir=str(outdir), context={"mycelium:region": region, "mycelium:bucket": bucket})
    built = build(app)
    app.synth()  # cdk-nag runs here: an unresolved finding raises
    return {name: aws_cdk.assertions.Template.from_stack(stack).to_json() for name, stack in built.items()}


def only(template: dict, kind: str, prefix: str = "") -> dict:
    """The properties of the template's one resource of ``kind`` whose logical id starts with ``prefix``."""
    (res,) = [r for k, r in template["Resources"].items() if r["Type"] == kind and k.startswith(prefix)]
    return res["Properties"]


def resolve(value, imports: dict[str, str], pseudo: dict[str, str]) -> str:
    """Fill a Fn::Join of strings, pseudo parameters and cross-stack imports into plain text.

    ``imports`` maps a word of the export's name ("CaptureQueue") to the value it stands for.
    """
    if isinstance(value, str):
        return value
    if "Fn::Join" in value:
        sep, parts = value["Fn::Join"]
        return sep.join(resolve(p, imports, pseudo) for p in parts)
    if "Ref" in value:
        return pseudo[value["Ref"]]
    if "Fn::ImportValue" in value:
        (hit,) = [v for word, v in imports.items() if word in value["Fn::ImportValue"]]
        return hit
    raise AssertionError(f"unexpected CloudFormation value in the definition: {value}")


def state_machine_definition(templates: dict, imports: dict[str, str] | None = None,
                             pseudo: dict[str, str] | None = None) -> dict:
    """The synthesized ASL, references filled (placeholders where no value is given)."""
    imports = imports or {"CaptureQueue": "<job-queue-arn>", "CaptureJob": "<job-definition-arn>",
                          "TrainQueue": "<train-job-queue-arn>", "TrainJob": "<train-job-definition-arn>"}
    pseudo = pseudo or {"AWS::Partition": "aws", "AWS::Region": "<region>", "AWS::AccountId": "<account>"}
    props = only(templates["orchestration"], "AWS::StepFunctions::StateMachine")
    return json.loads(resolve(props["DefinitionString"], imports, pseudo))
