"""cdk synth in the tests (no AWS credentials, no Docker): real properties of the stacks, and cdk-nag."""

import json
from fnmatch import fnmatchcase

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
        if any(a.startswith("s3:Delete") for a in actions):  # only ledger entries and re-sharded leftovers
            assert actions == ["s3:DeleteObject"], actions
            deleted = [json.dumps(r) for r in resources]
            assert deleted and all("/failures/" in r or "/problems/*" in r or "/stages/student-r*" in r
                                   for r in deleted), deleted
    text = json.dumps(t.to_json())
    for stage, spec in STAGES.items():
        for pattern in spec.writes + spec.deletes:
            assert f"/runs/*/{pattern}" in text
        # every stage clears its own ledger entries when an item succeeds (same as locally); a round's stages are
        # named by their round (merge-r1, the solver's student-r1)
        ledgers = {"merge": {"merge", "merge-r1"}, "solve": {"student-r1"}}.get(stage, {stage})
        if stage not in ("finish", "improve"):
            assert all(any(fnmatchcase(f"failures/{x}/p0.json", d) for d in spec.deletes) for x in ledgers), stage
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


def test_cdk_nag_is_clean_for_a_concrete_account_too(tmp_path, monkeypatch):
    """`cdk deploy` resolves account and region: the acknowledgments must still match their findings."""
    monkeypatch.setenv("CDK_DEFAULT_ACCOUNT", "123456789012")
    monkeypatch.setenv("CDK_DEFAULT_REGION", "eu-west-1")
    app = aws_cdk.App(outdir=str(tmp_path), context={"mycelium:bucket": "team-runs"})
    built = build(app)
    app.synth()  # raises on an unresolved finding
    assert built["orchestration"].region == "eu-west-1" and built["orchestration"].account == "123456789012"


def test_cdk_nag_would_catch_a_wildcard_policy(tmp_path):
    """The check can fail: a role with s3:* on * is a finding that stops the synth."""
    from aws_cdk import aws_iam as iam

    app = aws_cdk.App(outdir=str(tmp_path), context={"mycelium:region": "us-east-1"})
    built = build(app)
    role = iam.Role(built["processing"], "Wide", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"))
    role.add_to_policy(iam.PolicyStatement(actions=["s3:*"], resources=["*"]))
    with pytest.raises(Exception, match="IAM5|[Vv]alidation"):
        app.synth()


# ------------------------------------------------------------------------------------------------ GPU workers
def test_batch_runs_capture_on_g5_gpus_from_zero(synthesized):
    from stacks.gpu_workers import INSTANCE_TYPES

    t = _template(synthesized["gpu_workers"])
    (env,) = [r["Properties"] for k, r in t.find_resources("AWS::Batch::ComputeEnvironment").items()
              if k.startswith("G5") and not k.startswith("G5Train")]
    resources = env["ComputeResources"]
    assert env["Type"] == "managed" and resources["Type"] == "EC2"
    assert resources["InstanceTypes"] == list(INSTANCE_TYPES) and all(i.startswith("g5.") for i in INSTANCE_TYPES)
    assert resources["MinvCpus"] == 0 and resources["Ec2Configuration"] == [{"ImageType": "ECS_AL2_NVIDIA"}]
    (job,) = [r["Properties"] for k, r in t.find_resources("AWS::Batch::JobDefinition").items()
              if k.startswith("CaptureJob")]
    container = job["ContainerProperties"]
    assert {"Type": "GPU", "Value": "1"} in container["ResourceRequirements"]
    assert container["Command"][-2:] == ["--run", "Ref::run"] and job["Parameters"] == {"run": "unset"}
    assert "Fn::Sub" in json.dumps(container["Image"])  # the ECR asset built from gpu_workers/Dockerfile
    assert job["RetryStrategy"]["Attempts"] == 3
    # Private subnets, S3 through a gateway endpoint, flow logs on.
    t.resource_count_is("AWS::EC2::VPCEndpoint", 1)
    t.has_resource_properties("AWS::EC2::VPCEndpoint", {"VpcEndpointType": "Gateway"})
    t.resource_count_is("AWS::EC2::FlowLog", 1)


def test_capture_job_role_is_scoped_to_its_prefixes(synthesized):
    from stacks.gpu_workers import CAPTURE_WRITES

    statements = [s for k, p in _template(synthesized["gpu_workers"]).find_resources("AWS::IAM::Policy").items()
                  if k.startswith("CaptureJobRole") for s in p["Properties"]["PolicyDocument"]["Statement"]]
    by_action = {json.dumps(s["Action"]): json.dumps(s["Resource"]) for s in statements}
    assert set(by_action) == {'"s3:GetObject"', '"s3:PutObject"', '"s3:ListBucket"', '"s3:DeleteObject"'}
    for pattern in CAPTURE_WRITES:
        assert f"mycelium-runs/runs/*/{pattern}" in by_action['"s3:PutObject"']
    assert "/ib/" not in by_action['"s3:PutObject"'] and "/steps/" not in by_action['"s3:PutObject"']
    assert by_action['"s3:DeleteObject"'].endswith(':s3:::mycelium-runs/runs/*/failures/capture/*"]]}')


def test_training_runs_on_one_multi_gpu_g5_per_job_with_shared_memory_for_nccl(synthesized):
    from stacks.gpu_workers import TRAIN_WRITES

    t = _template(synthesized["gpu_workers"])
    (env,) = [r["Properties"] for k, r in t.find_resources("AWS::Batch::ComputeEnvironment").items()
              if k.startswith("G5Train")]
    assert env["ComputeResources"]["InstanceTypes"] == ["g5.48xlarge"] and env["ComputeResources"]["MinvCpus"] == 0
    (job,) = [r["Properties"] for k, r in t.find_resources("AWS::Batch::JobDefinition").items() if k.startswith("TrainJob")]
    container = job["ContainerProperties"]
    assert {"Type": "GPU", "Value": "8"} in container["ResourceRequirements"]
    assert container["LinuxParameters"]["SharedMemorySize"] >= 16 * 1024
    assert container["Command"][-2:] == ["--run", "Ref::run"]
    statements = [s for k, p in t.find_resources("AWS::IAM::Policy").items() if k.startswith("TrainJobRole")
                  for s in p["Properties"]["PolicyDocument"]["Statement"]]
    by_action = {json.dumps(s["Action"]): json.dumps(s["Resource"]) for s in statements}
    assert set(by_action) == {'"s3:GetObject"', '"s3:PutObject"', '"s3:ListBucket"'}
    for pattern in TRAIN_WRITES:
        assert f"mycelium-runs/runs/*/{pattern}" in by_action['"s3:PutObject"']
    assert "/training/" not in by_action['"s3:PutObject"'] and "/chunks/" not in by_action['"s3:GetObject"']


def test_four_gpu_training_picks_g5_12xlarge(tmp_path):
    import aws_cdk
    from stacks.gpu_workers import GpuWorkersStack

    app = aws_cdk.App(outdir=str(tmp_path))
    stack = GpuWorkersStack(app, "G", bucket_name="mycelium-runs", train_gpus=4)
    t = _template(stack)
    (env,) = [r["Properties"] for k, r in t.find_resources("AWS::Batch::ComputeEnvironment").items()
              if k.startswith("G5Train")]
    assert env["ComputeResources"]["InstanceTypes"] == ["g5.12xlarge"]
    with pytest.raises(ValueError, match="train_gpus"):
        GpuWorkersStack(app, "H", bucket_name="mycelium-runs", train_gpus=3)


# ---------------------------------------------------------------------------------------------- orchestration
@pytest.fixture(scope="module")
def asl(synthesized):
    from tests.synth import state_machine_definition

    return state_machine_definition({"orchestration": _template(synthesized["orchestration"]).to_json()})


def test_state_machine_is_standard_traced_and_logged(synthesized):
    t = _template(synthesized["orchestration"])
    t.has_resource_properties("AWS::StepFunctions::StateMachine", {
        "StateMachineType": "STANDARD", "TracingConfiguration": {"Enabled": True},
        "LoggingConfiguration": assertions.Match.object_like({"Level": "ALL"}),
    })


def test_pipeline_order_and_the_distributed_map(asl):
    states = asl["States"]
    order, name = [], asl["StartAt"]
    while name and states[name]["Type"] != "Choice":
        order.append(name)
        name = states[name].get("Next")
    assert order == ["ParseRun", "Ingest", "Prepare"]
    assert {c["Next"] for c in states["HowManyShards?"]["Choices"]} | {states["HowManyShards?"]["Default"]} == \
        {"CaptureShards", "CaptureShard"}
    for capture in ("CaptureShards", "CaptureShard", "Prepare"):
        assert states[capture]["Resource"] == "arn:aws:states:::batch:submitJob.sync"
        assert states[capture]["Parameters"]["Parameters"] == {"run.$": "$.run"}
    assert states["CaptureShards"]["Parameters"]["ArrayProperties"] == {"Size.$": "$.ingest.shards"}
    assert "ArrayProperties" not in states["CaptureShard"]["Parameters"]  # Batch arrays need 2+ elements

    m = states["Analyze"]
    assert m["Type"] == "Map" and m["ItemProcessor"]["ProcessorConfig"]["Mode"] == "DISTRIBUTED"
    assert m["ItemReader"]["Resource"] == "arn:aws:states:::s3:listObjectsV2"
    # the map's items are the capture commits: a chunk is an item only once it is committed
    assert m["ItemReader"]["Parameters"] == {"Bucket": "mycelium-runs",
                                             "Prefix.$": "States.Format('runs/{}/commits/capture/', $.run)"}
    assert m["MaxConcurrencyPath"] == "$.ingest.map.max_concurrency"
    assert m["ToleratedFailurePercentagePath"] == "$.ingest.map.tolerated_failure_percentage"
    assert m["ResultWriter"]["Resource"] == "arn:aws:states:::s3:putObject"
    assert m["ResultWriter"]["Parameters"] == {"Bucket": "mycelium-runs", "Prefix": "runs/_map-results"}
    assert "ItemBatcher" not in m  # one chunk per invocation, the same definition moto runs
    inner = m["ItemProcessor"]
    assert inner["StartAt"] == "AnalyzeChunk" and list(inner["States"]) == ["AnalyzeChunk"]
    assert inner["States"]["AnalyzeChunk"]["Parameters"] == {"run.$": "$.run", "item_key.$": "$.item_key"}
    assert [states[n].get("Next") for n in ("Analyze", "Aggregate", "Discover", "Finish")] == \
        ["Aggregate", "Discover", "Label", "RunSucceeded"]


def test_the_second_half_labels_trains_evaluates_and_loops_while_the_report_says_so(asl):
    states = asl["States"]
    order, name = [], "Label"
    while states[name]["Type"] != "Choice":
        order.append(name)
        name = states[name]["Next"]
    assert order == ["Label", "StartLoop", "Merge", "Train", "Plan"] and name == "Verifier?"
    # the run's verifier option: the reader's beams of the train and val parts, the verifier's training job
    verify = states["Verifier?"]
    assert verify["Choices"] == [{"Variable": "$.plan.verifier", "BooleanEquals": True, "Next": "BeamsTrain"}]
    assert verify["Default"] == "Evaluate"
    assert [states[n]["Next"] for n in ("BeamsTrain", "BeamsVal", "TrainVerifier")] == \
        ["BeamsVal", "TrainVerifier", "Evaluate"]
    assert states["TrainVerifier"]["Parameters"]["ContainerOverrides"]["Environment"] == [
        {"Name": "MYCELIUM_ROUND", "Value.$": "States.Format('{}', $.round)"},
        {"Name": "MYCELIUM_TRAIN", "Value": "verifier"}]
    assert states["Evaluate"]["Next"] == "Report" and states["Report"]["Next"] == "Improve?"
    label = states["Label"]
    assert label["ItemReader"]["Parameters"]["Prefix.$"] == "States.Format('runs/{}/commits/analyze/', $.run)"
    assert states["Merge"]["Parameters"] == {"run.$": "$.run", "round.$": "$.round"}
    train = states["Train"]
    assert train["Resource"] == "arn:aws:states:::batch:submitJob.sync"
    assert train["Parameters"]["JobQueue"] == "<train-job-queue-arn>"
    assert train["Parameters"]["JobDefinition"] == "<train-job-definition-arn>"
    assert train["Parameters"]["ContainerOverrides"]["Environment"] == [
        {"Name": "MYCELIUM_ROUND", "Value.$": "States.Format('{}', $.round)"}]
    for name, split, parts in (("Evaluate", "val", "$.plan.val_parts"), ("SolveTrain", "train", "$.plan.train_parts"),
                               ("BeamsTrain", "beams-train", "$.plan.train_parts"),
                               ("BeamsVal", "beams-val", "$.plan.val_parts")):
        m = states[name]
        assert m["Type"] == "Map" and m["ItemProcessor"]["ProcessorConfig"]["Mode"] == "DISTRIBUTED"
        assert m["ItemsPath"] == parts and m["ItemSelector"]["split"] == split
        (task,) = m["ItemProcessor"]["States"].values()
        assert task["Resource"].endswith(":function:mycelium-solve") and task["Parameters"]["split.$"] == "$.split"
    improve = states["Improve?"]
    (go,) = improve["Choices"]
    assert go == {"Variable": "$.report.continue", "BooleanEquals": True, "Next": "NextRound"}
    assert improve["Default"] == "Finish"
    assert states["NextRound"] == {"Type": "Pass", "InputPath": "$.report.next_round", "ResultPath": "$.round",
                                   "Next": "SolveTrain"}
    assert states["SolveTrain"]["Next"] == "MopUp" and states["MopUp"]["Next"] == "AnythingNew?"
    new = states["AnythingNew?"]
    assert [c["Next"] for c in new["Choices"]] == ["ReportNothingNew", "PrepareMopUp"] and new["Default"] == "Merge"
    assert states["ReportNothingNew"]["Next"] == "Finish"
    # the mop-up run is captured, analysed and labelled as a run is, then merged into the round
    for capture in ("PrepareMopUp", "CaptureMopUpShard", "CaptureMopUpShards"):
        assert states[capture]["Parameters"]["Parameters"] == {"run.$": "$.mopup.run"}
    assert states["AnalyzeMopUp"]["ItemReader"]["Parameters"]["Prefix.$"] == \
        "States.Format('runs/{}/commits/capture/', $.mopup.run)"
    assert states["AnalyzeMopUp"]["Next"] == "LabelMopUp" and states["LabelMopUp"]["Next"] == "Merge"


def _tasks(asl):
    out = dict(asl["States"])
    for state in asl["States"].values():
        out.update(state.get("ItemProcessor", {}).get("States", {}))
    return out


def test_lambda_tasks_retry_throttling_with_backoff_and_jitter(asl):
    lambdas = {n: s for n, s in _tasks(asl).items() if s["Type"] == "Task" and ":lambda:" in s["Resource"]}
    assert set(lambdas) == {"Ingest", "AnalyzeChunk", "Aggregate", "Discover", "Finish", "RecordFailure", "LabelItem",
                            "Merge", "Plan", "EvaluatePart", "Report", "SolveTrainPart", "MopUp", "ReportNothingNew",
                            "AnalyzeMopUpItem", "LabelMopUpItem", "BeamsTrainPart", "BeamsValPart"}
    for name, state in lambdas.items():
        (retry,) = state["Retry"]
        assert "Lambda.TooManyRequestsException" in retry["ErrorEquals"], name
        assert retry["BackoffRate"] == 2 and retry["JitterStrategy"] == "FULL" and retry["MaxAttempts"] >= 3


def test_every_step_of_the_run_has_a_failure_path_that_records_why(asl):
    states = asl["States"]
    guarded = [n for n, s in states.items() if s["Type"] in ("Task", "Map") and n != "RecordFailure"]
    assert set(guarded) == {"Ingest", "Prepare", "CaptureShard", "CaptureShards", "Analyze", "Aggregate", "Discover",
                            "Finish", "Label", "Merge", "Train", "Plan", "Evaluate", "Report", "SolveTrain", "MopUp",
                            "ReportNothingNew", "PrepareMopUp", "CaptureMopUpShard", "CaptureMopUpShards",
                            "AnalyzeMopUp", "LabelMopUp", "BeamsTrain", "BeamsVal", "TrainVerifier"}
    for name in guarded:
        assert states[name]["Catch"] == [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error",
                                          "Next": "RecordFailure"}], name
    record = states["RecordFailure"]
    assert record["Parameters"] == {"run.$": "$.run", "state": "failed", "error.$": "$.error"}
    assert states[record["Next"]] == {"Type": "Fail", "Error": "MyceliumRunFailed", "CausePath": "$.error.Cause"}


def test_a_manifest_upload_starts_one_execution(synthesized):
    t = _template(synthesized["orchestration"])
    (rule,) = t.find_resources("AWS::Events::Rule").values()
    assert rule["Properties"]["EventPattern"] == {
        "source": ["aws.s3"], "detail-type": ["Object Created"],
        "detail": {"bucket": {"name": ["mycelium-runs"]}, "object": {"key": [{"wildcard": "runs/*/manifest.json"}]}},
    }
    (target,) = rule["Properties"]["Targets"]
    assert target["Arn"] == {"Ref": next(iter(t.find_resources("AWS::StepFunctions::StateMachine")))}
    assert "DeadLetterConfig" in target and target["RetryPolicy"]["MaximumRetryAttempts"] == 8


def test_state_machine_role_has_no_open_data_permissions(synthesized):
    t = _template(synthesized["orchestration"])
    for policy in t.find_resources("AWS::IAM::Policy").values():
        for s in policy["Properties"]["PolicyDocument"]["Statement"]:
            actions = s["Action"] if isinstance(s["Action"], list) else [s["Action"]]
            if s["Resource"] == "*":  # only services without resource-level permissions
                assert all(a.startswith(("logs:", "xray:")) for a in actions), actions
            assert not any(a in ("*", "s3:*", "lambda:*", "batch:*") for a in actions)
            if any(a.startswith("s3:Put") for a in actions):
                assert json.dumps(s["Resource"]).endswith('runs/_map-results/*"]]}')
            if "s3:ListBucket" in actions:
                assert s["Condition"] in ({"StringLike": {"s3:prefix": [f"runs/*/commits/{of}/*"]}}
                                          for of in ("capture", "analyze"))
