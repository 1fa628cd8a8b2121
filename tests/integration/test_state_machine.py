"""The synthesized state machine, executed on moto's Step Functions engine.

The definition is the one ``cdk synth`` writes (``MyceliumOrchestration``'s
``DefinitionString``), with only CloudFormation references filled in. moto's
engine runs every state itself: the Distributed Map's S3 item reader and result
writer work on the moto bucket. Two calls leave the engine:

- Lambda invocations go in-process to ``lambdas/<stage>/handler.py`` (the
  function name says which stage), as Lambda would call them: an exception
  comes back as ``FunctionError`` with the error type and message.
- Batch ``submitJob.sync`` runs the real worker entry point (capture or train, by
  the job definition) with the synthesized job definition's command (``Ref::run``
  filled from the job's Parameters) and environment, once per array element with
  ``AWS_BATCH_JOB_ARRAY_INDEX`` set; the job's status is what the workers
  returned. The training worker's one process (no GPU here) runs in this
  process instead of a child, so it sees moto's bucket.

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
import tempfile
import time
import uuid
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from mycelium.core.config import AnalyzeConfig, CaptureConfig, DiscoverConfig, ImproveConfig, IngestConfig, MergeConfig
from mycelium.cli import main as cli
from mycelium.cloud.status import format_status, run_status
from mycelium.cloud.manifest import submit
from mycelium.core.keys import RunKeys
from mycelium.core.store import open_store

from ..conftest import SAMPLE, load_handler, unlabelled_train_rows, write_jsonl
from ..iam import RecordingStore, denied
from ..synth import only, state_machine_definition, synthesize

pytest.importorskip("aws_cdk")

BUCKET, REGION, ACCOUNT = "mycelium-test-runs", "us-east-1", "123456789012"
QUEUE_ARN = f"arn:aws:batch:{REGION}:{ACCOUNT}:job-queue/mycelium-capture"
JOBDEF_ARN = f"arn:aws:batch:{REGION}:{ACCOUNT}:job-definition/mycelium-capture:1"
TRAIN_QUEUE_ARN = f"arn:aws:batch:{REGION}:{ACCOUNT}:job-queue/mycelium-train"
TRAIN_JOBDEF_ARN = f"arn:aws:batch:{REGION}:{ACCOUNT}:job-definition/mycelium-train:1"


@pytest.fixture(scope="module")
def templates(tmp_path_factory):
    return synthesize(tmp_path_factory.mktemp("cdk.out"), REGION, BUCKET)


def definition(templates: dict) -> dict:
    return state_machine_definition(templates, {"CaptureQueue": QUEUE_ARN, "CaptureJob": JOBDEF_ARN,
                                                "TrainQueue": TRAIN_QUEUE_ARN, "TrainJob": TRAIN_JOBDEF_ARN},
                                    {"AWS::Partition": "aws", "AWS::Region": REGION, "AWS::AccountId": ACCOUNT})


# ------------------------------------------------------------------------------------ calls that leave the engine
class LocalLambda:
    """lambda:Invoke -> lambdas/<stage>/handler.py in this process (imported inside the mock)."""

    def __init__(self, ops: list):
        import threading

        self.handlers: dict[str, object] = {}
        self.calls: list[str] = []
        self.lock = threading.Lock()
        self.ops = ops

    def handler(self, function: str):
        stage = function.rsplit(":", 1)[-1].removeprefix("mycelium-")
        with self.lock:  # a map's first items arrive at once: one import (Lambda: one per container)
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


def _train_in_process(cmd, **_):
    """The training worker's child (``python -m mycelium.cli train ...``, one process) run here."""
    import contextlib
    import subprocess

    from mycelium.cli.main import main

    assert cmd[1:3] == ["-m", "mycelium.cli"], cmd
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(cmd[3:])
    return subprocess.CompletedProcess(cmd, code, out.getvalue(), err.getvalue())


class LocalBatch:
    """batch:SubmitJob -> the capture or train worker entry point, with the synthesized job definition's command."""

    def __init__(self, containers: dict[str, dict], ops: list):
        self.containers = {arn: (c["Command"], {e["Name"]: e["Value"] for e in c["Environment"]})
                           for arn, c in containers.items()}
        self.jobs: dict[str, dict] = {}
        self.ops = ops

    def submit_job(self, **request):
        import gpu_workers.train.entry_point as train_worker
        from gpu_workers.capture.entry_point import main as capture_worker
        from mycelium.core import store as store_module

        opened = store_module.open_store

        # moto passes the state's Parameters through; boto would camelCase them: accept both.
        r = {k[0].lower() + k[1:]: v for k, v in request.items()}
        jobName, jobQueue, jobDefinition = r["jobName"], r["jobQueue"], r["jobDefinition"]  # noqa: N806
        parameters, arrayProperties = r.get("parameters", {}), _camel(r.get("arrayProperties"))  # noqa: N806
        containerOverrides = _camel(r.get("containerOverrides"))  # noqa: N806
        assert (jobQueue, jobDefinition) in ((QUEUE_ARN, JOBDEF_ARN), (TRAIN_QUEUE_ARN, TRAIN_JOBDEF_ARN))
        who = "train" if jobDefinition == TRAIN_JOBDEF_ARN else "capture"
        worker = train_worker.main if who == "train" else capture_worker
        recording = lambda url=None: RecordingStore(opened(url), self.ops, who)  # noqa: E731
        command, environment = self.containers[jobDefinition]
        argv = [parameters[a[len("Ref::"):]] if a.startswith("Ref::") else a for a in command]
        env = dict(environment)
        env.update({e["name"]: e["value"] for e in (containerOverrides or {}).get("environment", [])})
        size = (arrayProperties or {}).get("size")
        codes = []
        for index in range(size) if size else [None]:
            element = dict(env, **({"AWS_BATCH_JOB_ARRAY_INDEX": str(index)} if index is not None else {}))
            saved = {k: os.environ.get(k) for k in element}
            os.environ.update(element)
            store_module.open_store = recording
            run_child = train_worker.subprocess.run
            train_worker.subprocess.run = _train_in_process
            try:
                codes.append(worker(argv))
            finally:
                store_module.open_store = opened
                train_worker.subprocess.run = run_child
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
    containers = {arn: only(templates["gpu_workers"], "AWS::Batch::JobDefinition", name)["ContainerProperties"]
                  for arn, name in ((JOBDEF_ARN, "CaptureJob"), (TRAIN_JOBDEF_ARN, "TrainJob"))}
    ops: list = []
    local_lambda, local_batch = LocalLambda(ops), LocalBatch(containers, ops)
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


VAL_SHARE = 0.5


def rows_by_split(n_train: int, n_val: int) -> list[dict]:
    """The first sample problems with ``n_train`` in merge's train split and ``n_val`` in its val split."""
    from mycelium.records.datasets import problem_id
    from mycelium.stages.merge import split_of

    want, out = {"train": n_train, "val": n_val}, []
    for row in (json.loads(line) for line in SAMPLE.read_text().splitlines()):
        split = split_of(problem_id(row["question"]), VAL_SHARE)
        if want[split]:
            out.append(row)
            want[split] -= 1
    return out


def submit_tiny(store, run: str, rows: list, teacher_dir, rounds: int = 0, **improve):
    """A run on the tiny teacher; the loop trains one-epoch students of width 32 on it (tiny_teacher_dir's)."""
    data = write_jsonl(Path(tempfile.mkdtemp()) / f"{run}.jsonl", rows)
    loop = dict(rounds=rounds, min_gain=0.0, backbone=str(teacher_dir), mop_up_teacher=str(teacher_dir), epochs=1,
                batch_size=8, hidden=32, adapter_layers=1, part_size=2, mop_up_max_new_tokens=16, mop_up_batch=2,
                progress=False)
    return submit(store, RunKeys(run), data, ingest=IngestConfig(shard_size=1),
                  capture=CaptureConfig(teacher=str(teacher_dir), n_computing_heads=2, calibration_problems=1,
                                        device="cpu", progress=False),
                  analyze=AnalyzeConfig(progress=False), discover=DiscoverConfig(min_size=2, progress=False),
                  merge=MergeConfig(val_share=VAL_SHARE), improve=ImproveConfig(**(loop | improve)))


def test_a_submitted_run_goes_through_every_stage(engine, tiny_teacher_dir, tmp_path):
    store, run = engine["store"], "sfn-run"
    submit_tiny(store, run, rows_by_split(2, 1), tiny_teacher_dir)
    store.put(f"{run}/chunks/p000000000000.npz", b"half an upload, never committed")  # must never be an item

    desc = run_to_end(engine, run)

    assert desc["status"] == "SUCCEEDED", desc.get("failures")
    output = json.loads(desc["output"])
    assert output["ingest"]["problems"] == 3 and output["ingest"]["shards"] == 3
    # Three shards: the array job ran, one element per shard, after the prepare job.
    jobs = list(engine["batch"].jobs.values())
    assert [j["env"].get("MYCELIUM_CAPTURE_MODE") for j in jobs] == ["prepare", "shard", None]
    assert jobs[1]["array_size"] == 3 and jobs[0]["argv"][-2:] == ["--run", run]
    assert all(j["status"] == "SUCCEEDED" for j in jobs)
    # then the second half: label (a map), merge, the training job (round 0), the solver on val (a map), the report
    assert jobs[2]["env"]["MYCELIUM_ROUND"] == "0" and jobs[2]["jobQueue"] == TRAIN_QUEUE_ARN
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
    calls = engine["lambda"].calls
    assert calls[0] == "ingest" and calls[calls.index("aggregate"):calls.index("aggregate") + 2] == ["aggregate", "discover"]
    assert calls[-5:] == ["merge", "improve", "solve", "improve", "finish"]  # merge, plan, val part, report, finish

    # `mycelium status` finds the execution by its manifest key and reports the map run's counts.
    st = run_status(engine["sfn"], store, engine["arn"], run)
    assert st["execution"]["status"] == "SUCCEEDED" and st["chunks"] == 3
    assert st["capture_jobs"] == {"succeeded": 4, "failed": 0}  # prepare + 3 shards
    analyzed, labelled, evaluated = st["map_runs"]  # in the order they ran
    assert analyzed["total"] == labelled["total"] == 3 and analyzed["succeeded"] == 3 and analyzed["failed"] == 0
    assert evaluated["total"] == 1 and evaluated["succeeded"] == 1  # one val problem: one part
    assert st["stages"]["label"]["out"] == 3 and st["improve"]["round"] == 0
    assert "succeeded 3" in format_status(st) and "ended succeeded" in format_status(st)
    assert "improvement round 0" in format_status(st)
    # round 0: the students were uploaded, measured on val beside the trivial baseline; rounds=0 stops there
    assert {f"{run}/models/{c}/model.safetensors" for c in ("C1", "C2", "C3", "C4", "C5", "C6")} <= listed_now(store, run)
    report = store.get_json(keys("rounds", "improve.json"))
    assert [r["round"] for r in report["rounds"]] == [0] and report["stopped"] == "0 round(s) done"
    assert report["rounds"][0]["val_n"] == 1 and report["rounds"][0]["teacher_calls"] == 3
    assert status["outputs"]["improve"]["continue"] is False


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


def listed_now(store, run: str) -> set[str]:
    return set(store.list(f"{run}/"))


def test_every_store_call_of_a_run_is_granted_to_its_role(engine, tiny_teacher_dir, tmp_path):
    """moto enforces no IAM: this test does. Each handler's and worker's calls against the stacks' grants."""
    store, run = engine["store"], "iam-run"
    submit_tiny(store, run, rows_by_split(1, 1), tiny_teacher_dir)
    desc = run_to_end(engine, run)
    assert desc["status"] == "SUCCEEDED", desc.get("failures")
    # a failing reduce reads and writes its ledger: discover on a run whose table is gone
    store.delete(f"{run}/commits/aggregate/run.json")
    with pytest.raises(Exception, match="mycelium aggregate"):
        engine["lambda"].handler("mycelium-discover")({"run": run}, None)

    ops = engine["ops"]
    assert {who for who, _, _ in ops} == {"ingest", "capture", "analyze", "aggregate", "discover", "label", "merge",
                                          "train", "improve", "solve", "finish"}
    assert not denied(ops, run), sorted(set(denied(ops, run)))[:20]


def test_two_improvement_rounds_label_ask_the_teacher_merge_train_and_measure(engine, tiny_teacher_dir):
    store, run = engine["store"], "loop-run"
    submit_tiny(store, run, rows_by_split(3, 1) + unlabelled_train_rows(2, VAL_SHARE), tiny_teacher_dir, rounds=2,
                mop_up_limit=1)

    desc = run_to_end(engine, run, timeout_s=600)

    assert desc["status"] == "SUCCEEDED", desc.get("failures")
    keys = RunKeys(run)
    report = store.get_json(keys("rounds", "improve.json"))
    rows = report["rounds"]
    assert [r["round"] for r in rows] == [0, 1, 2] and report["stopped"] == "2 round(s) done"
    # round 0 asked the teacher about each of the 5 training and 1 val problems (reference CoT); each round asked it
    # only about one problem nothing had a program for (--mop-up-limit 1), a different one each round
    assert [r["teacher_calls"] for r in rows] == [6, 1, 1] and report["teacher_calls_if_every_problem_every_round"] == 16
    asked = [{p["id"] for p in map(json.loads, store.get(f"{run}.mopup-r{k}/problems/part-00000.jsonl").decode()
                                   .splitlines())} for k in (1, 2)]
    assert len(asked[0]) == len(asked[1]) == 1 and asked[0] != asked[1]
    for k in (1, 2):
        mop = RunKeys(f"{run}.mopup-r{k}")
        assert store.get_json(mop.stage_record("capture"))["config"]["cot"] == "generate"
        assert store.get_json(mop.stage_record("label"))["config"]["templates_run"] == run
        (pid,) = asked[k - 1]
        assert store.exists(mop.commit("label", pid))  # captured, analysed and labelled (kept or with a reason)
        # the students labelled every training problem of the round; each has a label record and a commit
        for r in rows[k]["students"], :
            assert r["tried"] == 5 and r["failed"] == 0
        assert store.exists(keys.commit(f"merge-r{k}", "run"))
        assert {f"{run}/rounds/r{k}/models/{c}/model.safetensors" for c in ("C1", "C6")} <= listed_now(store, run)
        assert rows[k]["val_n"] == 1 and "gain" in rows[k]
    # the training job ran once per round, on that round's data
    trains = [j for j in engine["batch"].jobs.values() if j["jobQueue"] == TRAIN_QUEUE_ARN]
    assert [j["env"]["MYCELIUM_ROUND"] for j in trains] == ["0", "1", "2"]
    assert all(j["status"] == "SUCCEEDED" for j in engine["batch"].jobs.values())
    status = store.get_json(keys("status", "run.json"))
    assert status["state"] == "succeeded" and status["outputs"]["improve"]["stopped"] == "2 round(s) done"
    st = run_status(engine["sfn"], store, engine["arn"], run)
    assert st["improve"]["round"] == 2 and "improvement round 2" in format_status(st)
    assert {"student-r1", "student-r2", "merge-r1", "merge-r2"} <= set(st["stages"])
    # every store call of the loop's functions and jobs is granted to its role
    assert not denied(engine["ops"], run), sorted(set(denied(engine["ops"], run)))[:20]


def test_a_failing_training_job_records_why(engine, tiny_teacher_dir, tmp_path):
    store, run = engine["store"], "no-backbone-run"
    submit_tiny(store, run, rows_by_split(1, 1), tiny_teacher_dir, backbone=str(tmp_path / "no-such-model"))

    desc = run_to_end(engine, run)

    assert desc["status"] == "FAILED" and desc["error"] == "MyceliumRunFailed"
    status = store.get_json(f"{run}/status/run.json")
    assert status["state"] == "failed" and status["error"]
    (train,) = [j for j in engine["batch"].jobs.values() if j["jobQueue"] == TRAIN_QUEUE_ARN]
    assert train["status"] == "FAILED"
    worker = store.get_json(next(k for k in store.list(f"{run}/status/train/")))
    assert worker["state"] == "failed" and "no-such-model" in worker["error"]


def test_a_round_with_the_verifier_beams_the_parts_trains_it_and_reports_it(engine, tiny_teacher_dir, tmp_path):
    from fractions import Fraction as F

    from mycelium.programs.steps import Step, StepProgram, canonical
    from mycelium.students.reader_data import Labelled
    from mycelium.students.reader_train import TrainOptions, train
    from mycelium.teacher.model import load_teacher

    # the reader whose beams teach the verifier: one on the tiny backbone (the run's option names it)
    labelled = []
    for k in range(12):
        a, b = 3 + k, 2 + k % 4
        q = f"Ann has {a} apples and buys {b} more. How many apples does she have?"
        labelled.append(Labelled(f"r{k}", q, str(a + b), canonical(StepProgram(
            [Step("+", ("value", F(a)), ("value", F(b)))], F(a + b)), q), "val" if k < 3 else "train"))
    reader = tmp_path / "reader"
    train(labelled, load_teacher(str(tiny_teacher_dir)), reader, TrainOptions(
        epochs=1, batch_size=4, hidden=32, layers=[1, 3], min_constant_count=1, progress=False))
    store, run = engine["store"], "verifier-run"
    submit_tiny(store, run, rows_by_split(6, 2), tiny_teacher_dir, verifier=True, reader=str(reader), beam=4,
                verifier_epochs=1)

    desc = run_to_end(engine, run, timeout_s=600)

    assert desc["status"] == "SUCCEEDED", desc.get("failures")
    keys = RunKeys(run)
    listed = listed_now(store, run)
    # the solver Lambda's maps wrote the reader's beams of every part, train and val, labelled by execution
    beams = {split: [json.loads(line) for key in sorted(k for k in listed if f"/rounds/r0/beams/{split}/" in k)
                     for line in store.get(key).decode().splitlines()] for split in ("train", "val")}
    assert len(beams["train"]) == 6 and len(beams["val"]) == 2
    assert all(r["split"] == split for split in beams for r in beams[split])
    assert all(isinstance(c["correct"], bool) for split in beams for r in beams[split] for c in r["candidates"])
    # the training job trained the verifier on them (MYCELIUM_TRAIN=verifier) and uploaded it beside the students
    trains = [j for j in engine["batch"].jobs.values() if j["jobQueue"] == TRAIN_QUEUE_ARN]
    assert [j["env"].get("MYCELIUM_TRAIN") for j in trains] == [None, "verifier"]
    assert all(j["status"] == "SUCCEEDED" for j in trains)
    assert {f"{run}/models/verifier/{f}" for f in ("model.safetensors", "config.json", "metrics.json")} <= listed
    # the round's row: the verifier's val metrics beside the reader's beam order on the same beams
    row = store.get_json(keys("rounds", "improve.json"))["rounds"][0]
    v = row["verifier"]
    assert v["n"] == 2 and 0 <= v["top1_beam"] <= v["pass_at_beam"] and v["top1_verifier"] <= v["pass_at_beam"]
    assert "reader + verifier" in store.get(keys("rounds", "improve.md")).decode()
    calls = engine["lambda"].calls
    assert calls.count("solve") == 3 + 1 + 1  # 3 train parts and 1 val part of beams, then 1 val part solved
    assert not denied(engine["ops"], run), sorted(set(denied(engine["ops"], run)))[:20]
