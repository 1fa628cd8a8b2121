"""cdk synth in the tests (no AWS credentials, no Docker): real properties of the stacks, and cdk-nag."""

import json

import pytest

import stacks  # noqa: F401 - before aws_cdk: silences the Node end-of-life banner

aws_cdk = pytest.importorskip("aws_cdk")
from aws_cdk import assertions  # noqa: E402

from app import build  # noqa: E402
from stacks.processing import STAGES  # noqa: E402


@pytest.fixture(scope="module")
def synthesized(tmp_path_factory):
    app = aws_cdk.App(outdir=str(tmp_path_factory.mktemp("cdk.out")), context={"mycelium:region": "us-east-1"})
    built = build(app)
    app.synth()
    return built


def _template(stack):
    return assertions.Template.from_stack(stack)


def test_bucket_is_encrypted_private_versioned_and_tls_only(synthesized):
    t = _template(synthesized["storage"])
    t.has_resource_properties("AWS::S3::Bucket", {
        "BucketEncryption": {"ServerSideEncryptionConfiguration": [
            {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]},
        "PublicAccessBlockConfiguration": {"BlockPublicAcls": True, "BlockPublicPolicy": True,
                                           "IgnorePublicAcls": True, "RestrictPublicBuckets": True},
        "VersioningConfiguration": {"Status": "Enabled"},
        "LoggingConfiguration": assertions.Match.object_like({"LogFilePrefix": "runs-bucket/"}),
        "LifecycleConfiguration": {"Rules": assertions.Match.array_with([assertions.Match.object_like({
            "Id": "raw-chunks", "Prefix": "runs/", "Status": "Enabled",
            "Transitions": [{"StorageClass": "STANDARD_IA", "TransitionInDays": 30}], "ExpirationInDays": 365})])},
    })
    policies = t.find_resources("AWS::S3::BucketPolicy")
    assert len(policies) == 2  # runs bucket and access-log bucket
    for policy in policies.values():
        statements = policy["Properties"]["PolicyDocument"]["Statement"]
        assert any(s["Effect"] == "Deny" and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
                   for s in statements)


def test_bucket_sends_events_to_eventbridge(synthesized):
    notifications = _template(synthesized["storage"]).find_resources("Custom::S3BucketNotifications")
    (props,) = [r["Properties"] for r in notifications.values()]
    assert props["NotificationConfiguration"] == {"EventBridgeConfiguration": {}}


def test_one_image_function_per_stage_with_memory_timeout_dlq_and_json_logs(synthesized):
    t = _template(synthesized["processing"])
    fns = t.find_resources("AWS::Lambda::Function")
    assert len(fns) == len(STAGES)
    by_cmd = {f["Properties"]["ImageConfig"]["Command"][0]: f["Properties"] for f in fns.values()}
    for stage, spec in STAGES.items():
        props = by_cmd[f"lambdas.{stage}.handler.handler"]
        assert props["PackageType"] == "Image"
        assert props["MemorySize"] == spec.memory_mb and props["Timeout"] == spec.timeout_min * 60
        assert "TargetArn" in props["DeadLetterConfig"]
        assert props["LoggingConfig"]["LogFormat"] == "JSON"
        assert "MYCELIUM_STORE" in props["Environment"]["Variables"]
    for queue in t.find_resources("AWS::SQS::Queue").values():
        assert queue["Properties"]["SqsManagedSseEnabled"] is True


def _statements(t):
    out = []
    for policy in t.find_resources("AWS::IAM::Policy").values():
        out += policy["Properties"]["PolicyDocument"]["Statement"]
    return out


def test_iam_is_least_privilege_per_stage(synthesized):
    t = _template(synthesized["processing"])
    statements = _statements(t)
    assert statements
    for s in statements:
        actions = s["Action"] if isinstance(s["Action"], list) else [s["Action"]]
        resources = s["Resource"] if isinstance(s["Resource"], list) else [s["Resource"]]
        assert "s3:*" not in actions and "*" not in actions
        assert "*" not in resources
        assert not any(a.startswith("s3:Delete") for a in actions)
    text = json.dumps(t.to_json())
    for stage, spec in STAGES.items():
        for pattern in spec.writes:
            assert f"/runs/*/{pattern}" in text
    # analyze may write its outputs but never ib/ or chunks/
    role_policies = {k: v for k, v in t.find_resources("AWS::IAM::Policy").items() if k.startswith("AnalyzeRole")}
    puts = [json.dumps(s["Resource"]) for p in role_policies.values()
            for s in p["Properties"]["PolicyDocument"]["Statement"] if s["Action"] == "s3:PutObject"]
    assert puts and not any("/ib/" in r or "/chunks/" in r for r in puts)


def test_cdk_nag_aws_solutions_has_no_unresolved_findings(tmp_path):
    """cdk-nag runs as a policy-validation plugin: any unacknowledged finding fails the synth."""
    app = aws_cdk.App(outdir=str(tmp_path), context={"mycelium:region": "us-east-1"})
    build(app)
    app.synth()  # raises on an unresolved AwsSolutions finding
    report = tmp_path / "policy-validation-report.json"
    if report.exists():
        data = json.loads(report.read_text())
        failures = [v for plugin in data.get("pluginReports", []) for v in plugin.get("violations", [])]
        assert failures == [], failures[:3]


def test_cdk_nag_would_catch_a_wildcard_policy(tmp_path):
    """The check can fail: a role with s3:* on * is a finding that stops the synth."""
    from aws_cdk import aws_iam as iam

    app = aws_cdk.App(outdir=str(tmp_path), context={"mycelium:region": "us-east-1"})
    built = build(app)
    role = iam.Role(built["processing"], "Wide", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"))
    role.add_to_policy(iam.PolicyStatement(actions=["s3:*"], resources=["*"]))
    with pytest.raises(Exception, match="IAM5|[Vv]alidation"):
        app.synth()
