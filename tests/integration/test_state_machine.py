"""The synthesized state machine, executed on moto's Step Functions engine.

The definition is the one ``cdk synth`` writes (``MyceliumOrchestration``'s
``DefinitionString``), with only CloudFormation references filled in. moto's
engine runs every state itself: the Distributed Map's S3 item reader and result
writer work on the moto bucket. Two calls leave the engine:

- Lambda invocations go in-process to ``lambdas/<stage>/handler.py`` (the
  function name says which stage), as Lambda would call them: an exception
  comes back as ``FunctionError`` with the error type and message.
- Batch ``submitJob.sync`` runs the real capture worker entry point with the
  synthesized job definition's command (``Ref::run`` filled from the job's
  Parameters) and environment, once per array element with
  ``AWS_BATCH_JOB_ARRAY_INDEX`` set; the job's status is what the workers
  returned.

Differences from AWS, each on purpose: the Distributed Map runs its children in
moto's threads (AWS: Express child executions); no ItemBatcher is used in the
deployed definition, so there is nothing to drop; the result writer's manifest
is written but moto leaves its result files empty; ToleratedFailurePercentagePath
is parsed but not enforced by moto.
"""

from __future__ import annotations

import io
import json
import os
import time
import uuid

import boto3
import pytest
from moto import mock_aws

from mycelium.core.config import AnalyzeConfig, CaptureConfig, DiscoverConfig, IngestConfig
from mycelium.cli import main as cli
from mycelium.cloud.status import format_status, run_status
from mycelium.cloud.manifest import submit
from mycelium.core.keys import RunKeys
from mycelium.core.store import open_store

from ..conftest import SAMPLE, load_handler, write_jsonl
from ..iam import RecordingStore, denied
from ..synth import only, state_machine_definition, synthesize

pytest.importorskip("aws_cdk")

BUCKET, REGION, ACCOUNT = "mycelium-test-runs", "us-east-1", "123456789012"
QUEUE_ARN = f"arn:aws:batch:{REGION}:{ACCOUNT}:job-queue/mycelium-capture"
JOBDEF_ARN = f"arn:aws:batch:{REGION}:{ACCOUNT}:job-definition/mycelium-capture:1"


@pytest.fixture(scope="module")
def templates(tmp_path_factory):
    return synthesize(tmp_path_factory.mktemp("cdk.out"), REGION, BUCKET)


def definition(templates: dict) -> dict:
    return state_machine_definition(templates, {"Queue": QUEUE_ARN, "CaptureJob": JOBDEF_ARN},
                                    {"AWS::Partition": "aws", "AWS::Region": REGION, "AWS::AccountId": ACCOUNT})


# ------------------------------------------------------------------------------------ calls that leave the engine
class LocalLambda:
    """lambda:Invoke -> lambdas/<stage>/handler.py in this process (imported inside the mock)."""

    def __init__(self, ops: list):
        self.handlers: dict[str, object] = {}
        self.calls: list[str] = []
        self.ops = ops

    def handler(self, function: str):
        stage = function.rsplit(":", 1)[-1].removeprefix("mycelium-")
        if stage not in self.handlers:
            module = load_handler(stage)
            module.STORE = RecordingStore(module.STORE, self.ops, stage)
            self.handlers[stage] = module.handler
        self.calls.append(stage)
        return self.handlers[stage]

    def invoke(self, FunctionName: str, Payload=b"{}", **_):  # noqa: N803 - boto's parameter names
        event = json.loads(Payload or b"{}")
        try:
            body, error = self.handler(FunctionName)(event, None), None
        except Exception as e:  # noqa: BLE001 - Lambda reports it as a function error
            body, error = {"errorType": type(e).__name__, "errorMessage": str(e)[:2000]}, "Unhandled"
        out = {"StatusCode": 200, "Payload": io.BytesIO(json.dumps(body).encode()), "ExecutedVersion": "$LATEST"}
        if error:
            out["FunctionError"] = error
        return out


def _camel(value):
    """{"Environment": [{"Name": ..}]} -> {"environment": [{"name": ..}]}."""
    if isinstance(value, dict):
        return {k[0].lower() + k[1:]: _camel(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_camel(v) for v in value]
    return value


class LocalBatch:
    """batch:SubmitJob -> the capture worker entry point, with the synthesized job definition's command."""

    def __init__(self, container: dict, ops: list):
        self.command, self.environment = container["Command"], {e["Name"]: e["Value"] for e in container["Environment"]}
        self.jobs: dict[str, dict] = {}
        self.ops = ops

    def submit_job(self, **request):
        from gpu_workers.capture.entry_point import main as worker
        from mycelium.core import store as store_module

        opened = store_module.open_store
        recording = lambda url=None: RecordingStore(opened(url), self.ops, "capture")  # noqa: E731

        # moto passes the state's Parameters through; boto would camelCase them: accept both.
        r = {k[0].lower() + k[1:]: v for k, v in request.items()}
        jobName, jobQueue, jobDefinition = r["jobName"], r["jobQueue"], r["jobDefinition"]  # noqa: N806
        parameters, arrayProperties = r.get("parameters", {}), _camel(r.get("arrayProperties"))  # noqa: N806
        containerOverrides = _camel(r.get("containerOverrides"))  # noqa: N806
        assert jobQueue == QUEUE_ARN and jobDefinition == JOBDEF_ARN
        argv = [parameters[a[len("Ref::"):]] if a.startswith("Ref::") else a for a in self.command]
        env = dict(self.environment)
        env.update({e["name"]: e["value"] for e in (containerOverrides or {}).get("environment", [])})
        size = (arrayProperties or {}).get("size")
        codes = []
        for index in range(size) if size else [None]:
            element = dict(env, **({"AWS_BATCH_JOB_ARRAY_INDEX": str(index)} if index is not None else {}))
            saved = {k: os.environ.get(k) for k in element}
            os.environ.update(element)
            store_module.open_store = recording
            try:
                codes.append(worker(argv))
            finally:
                store_module.open_store = opened
                for k, v in saved.items():
                    os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
        job_id = str(uuid.uuid4())
        status = "SUCCEEDED" if all(c == 0 for c in codes) else "FAILED"
        self.jobs[job_id] = {"jobId": job_id, "jobName": jobName, "jobQueue": jobQueue, "status": status,
                             "statusReason": f"exit codes {codes}", "argv": argv, "env": env, "array_size": size}
        # As Step Functions presents SubmitJob's response (its own casing)
        return {"JobId": job_id, "JobName": jobName, "JobArn": f"arn:aws:batch:{REGION}:{ACCOUNT}:job/{job_id}"}

    def describe_jobs(self, jobs):
        # Step Functions returns a .sync job's description in its own casing ("JobId", "Status"); moto's engine
        # reads boto's "status" and does not re-case the output, so the description carries both.
        out = []
        for j in jobs:
            job = {k: v for k, v in self.jobs[j].items() if k not in ("argv", "env", "array_size")}
            out.append({**job, **{k[0].upper() + k[1:]: v for k, v in job.items()}})
        return {"jobs": out}


@pytest.fixture
def engine(monkeypatch, templates):
    """moto with the state machine engine on, Lambda and Batch routed as the module docstring says."""
    from moto.stepfunctions.parser.asl.component.state.exec.state_task import lambda_eval_utils
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import state_task_service_batch

    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION,
                 "MYCELIUM_STORE": f"s3://{BUCKET}/runs"}.items():
        monkeypatch.setenv(k, v)
    container = only(templates["gpu_workers"], "AWS::Batch::JobDefinition", "CaptureJob")["ContainerProperties"]
    ops: list = []
    local_lambda, local_batch = LocalLambda(ops), LocalBatch(container, ops)
    original = lambda_eval_utils.boto_client_for
    monkeypatch.setattr(lambda_eval_utils, "boto_client_for",
                        lambda region, service, state_credentials=None: local_lambda if service == "lambda"
                        else original(region, service, state_credentials))
    monkeypatch.setattr(state_task_service_batch, "boto_client_for",
                        lambda region, service, state_credentials=None: local_batch)
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        boto3.client("s3").create_bucket(Bucket=BUCKET)
        sfn = boto3.client("stepfunctions")
        arn = sfn.create_state_machine(name="mycelium-pipeline", definition=json.dumps(definition(templates)),
                                       roleArn=f"arn:aws:iam::{ACCOUNT}:role/mycelium-pipeline")["stateMachineArn"]
        yield {"sfn": sfn, "arn": arn, "lambda": local_lambda, "batch": local_batch, "ops": ops,
               "store": open_store(f"s3://{BUCKET}/runs")}


def s3_event(key: str) -> dict:
    """The EventBridge event of an S3 upload, as the trigger rule forwards it."""
    return {"version": "0", "source": "aws.s3", "detail-type": "Object Created", "account": ACCOUNT, "region": REGION,
            "resources": [f"arn:aws:s3:::{BUCKET}"],
            "detail": {"version": "0", "bucket": {"name": BUCKET}, "object": {"key": key, "size": 1},
                       "reason": "PutObject"}}


def run_to_end(engine, run: str, timeout_s: float = 300) -> dict:
    sfn = engine["sfn"]
    arn = sfn.start_execution(stateMachineArn=engine["arn"], name=run,
                              input=json.dumps(s3_event(f"runs/{run}/manifest.json")))["executionArn"]
    deadline = time.monotonic() + timeout_s
    while (desc := sfn.describe_execution(executionArn=arn))["status"] == "RUNNING":
        assert time.monotonic() < deadline, f"execution of {run} still running after {timeout_s} s"
        time.sleep(0.2)
    if desc["status"] != "SUCCEEDED":  # say which state failed and why, in the assertion that follows
        events = sfn.get_execution_history(executionArn=arn, maxResults=1000)["events"]
        desc["failures"] = [{k: v for k, v in e.items() if k.endswith("FailedEventDetails")} for e in events
                            if e["type"].endswith("Failed")]
    return desc


@pytest.fixture(scope="module")
def tiny_teacher_dir(tmp_path_factory, tiny_tokenizer):
    from ..conftest import make_tiny_model

    path = tmp_path_factory.mktemp("tiny-teacher")
    make_tiny_model(tiny_tokenizer).save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path


def test_a_submitted_run_goes_through_every_stage(engine, tiny_teacher_dir, tmp_path):
    store, run = engine["store"], "sfn-run"
    data = write_jsonl(tmp_path / "three.jsonl", [json.loads(line) for line in SAMPLE.read_text().splitlines()[:3]])
    submit(store, RunKeys(run), data, ingest=IngestConfig(shard_size=1),
           capture=CaptureConfig(teacher=str(tiny_teacher_dir), n_computing_heads=2, calibration_problems=1,
                                 device="cpu", progress=False),
           analyze=AnalyzeConfig(progress=False), discover=DiscoverConfig(min_size=2, progress=False))
    store.put(f"{run}/chunks/p000000000000.npz", b"half an upload, never committed")  # must never be an item

    desc = run_to_end(engine, run)

    assert desc["status"] == "SUCCEEDED", desc.get("failures")
    output = json.loads(desc["output"])
    assert output["ingest"]["problems"] == 3 and output["ingest"]["shards"] == 3
    # Three shards: the array job ran, one element per shard, after the prepare job.
    jobs = list(engine["batch"].jobs.values())
    assert [j["env"]["MYCELIUM_CAPTURE_MODE"] for j in jobs] == ["prepare", "shard"]
    assert jobs[1]["array_size"] == 3 and jobs[0]["argv"][-2:] == ["--run", run]
    assert all(j["status"] == "SUCCEEDED" for j in jobs)
    # Every stage's outputs are in the moto bucket.
    keys = RunKeys(run)
    listed = set(store.list(f"{run}/"))
    pids = sorted(k.split("/")[-1][:-5] for k in listed if k.startswith(keys.commits("capture")))
    assert len(pids) == 3 and "p000000000000" not in pids
    for pid in pids:
        for key in (keys.commit("capture", pid), keys.trace(pid), keys.signals(pid), keys.steps(pid),
                    keys.commit("analyze", pid)):
            assert key in listed, key
    for i in range(3):
        assert store.get_json(keys("status", "capture", f"part-{i:05d}.json"))["state"] == "succeeded"
    assert store.get_json(keys("status", "capture", "prepare.json"))["state"] == "succeeded"
    assert {keys.stage_record(s) for s in ("ingest", "capture", "analyze", "aggregate", "discover")} <= listed
    assert {keys.calibration, keys("ib", "steps.npz"), keys("ib", "taxonomy.json")} <= listed
    status = store.get_json(keys("status", "run.json"))
    assert status["state"] == "succeeded" and status["outputs"]["discover"]["templates"] >= 1
    # The Distributed Map read the 3 capture commits (not the stray chunk), analysed 3, wrote its results to S3.
    assert engine["lambda"].calls.count("analyze") == 3
    assert not store.exists(keys.commit("analyze", "p000000000000"))
    # The map stages' lines of the run summary are tallied from their commits and ledger at the end.
    stages = status["outputs"]["stages"]
    assert stages["capture"]["n_out"] == stages["analyze"]["n_out"] == 3 and stages["analyze"]["failed"] == 0
    assert store.get_json(keys.summary)["stages"]["analyze"]["n_out"] == 3
    results = status["outputs"]["analyze"]["results"]
    assert results["Bucket"] == BUCKET and results["Key"].startswith("runs/_map-results/")
    written = json.loads(boto3.client("s3").get_object(Bucket=BUCKET, Key=results["Key"])["Body"].read())
    assert written["MapRunArn"] == status["outputs"]["analyze"]["map_run_arn"]  # moto writes the manifest only
    assert engine["lambda"].calls[0] == "ingest" and engine["lambda"].calls[-3:] == ["aggregate", "discover", "finish"]

    # `mycelium status` finds the execution by its manifest key and reports the map run's counts.
    st = run_status(engine["sfn"], store, engine["arn"], run)
    assert st["execution"]["status"] == "SUCCEEDED" and st["chunks"] == 3
    assert st["capture_jobs"] == {"succeeded": 4, "failed": 0}  # prepare + 3 shards
    (mr,) = st["map_runs"]
    assert mr["total"] == 3 and mr["succeeded"] == 3 and mr["failed"] == 0 and mr["pending"] == 0
    assert "succeeded 3" in format_status(st) and "ended succeeded" in format_status(st)


def test_a_failing_run_records_why(engine, tmp_path, capsys):
    store, run = engine["store"], "broken-run"
    data = write_jsonl(tmp_path / "p.jsonl", [json.loads(SAMPLE.read_text().splitlines()[0])])
    assert cli(["submit", "--data", str(data), "--run", run, "--bucket", BUCKET]) == 0
    store.put(f"{run}/input/p.jsonl", b"not what was submitted\n")  # the upload was replaced under the manifest

    desc = run_to_end(engine, run)

    assert desc["status"] == "FAILED" and desc["error"] == "MyceliumRunFailed" and "sha256 differs" in desc["cause"]
    capsys.readouterr()
    assert cli(["status", run, "--bucket", BUCKET, "--state-machine", engine["arn"]]) == 1
    assert "execution: FAILED" in capsys.readouterr().out
    status = store.get_json(f"{run}/status/run.json")
    assert status["state"] == "failed" and "sha256 differs" in status["cause"]
    assert engine["batch"].jobs == {}  # nothing was captured from bad input
    assert engine["lambda"].calls == ["ingest", "finish"]


def test_every_store_call_of_a_run_is_granted_to_its_role(engine, tiny_teacher_dir, tmp_path):
    """moto enforces no IAM: this test does. Each handler's and worker's calls against the stacks' grants."""
    store, run = engine["store"], "iam-run"
    data = write_jsonl(tmp_path / "two.jsonl", [json.loads(line) for line in SAMPLE.read_text().splitlines()[:2]])
    submit(store, RunKeys(run), data, ingest=IngestConfig(shard_size=1),
           capture=CaptureConfig(teacher=str(tiny_teacher_dir), n_computing_heads=2, calibration_problems=1,
                                 device="cpu", progress=False), discover=DiscoverConfig(min_size=2, progress=False))
    assert run_to_end(engine, run)["status"] == "SUCCEEDED"
    # a failing reduce reads and writes its ledger: discover on a run whose table is gone
    store.delete(f"{run}/commits/aggregate/run.json")
    with pytest.raises(Exception, match="mycelium aggregate"):
        engine["lambda"].handler("mycelium-discover")({"run": run}, None)

    ops = engine["ops"]
    assert {who for who, _, _ in ops} == {"ingest", "capture", "analyze", "aggregate", "discover", "finish"}
    assert not denied(ops, run), sorted(set(denied(ops, run)))[:20]
