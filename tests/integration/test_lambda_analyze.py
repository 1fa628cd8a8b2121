"""lambdas/analyze/handler.py on moto S3 with a real event JSON fixture."""

import json
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from mycelium.records.analysis import SignalsRecord, StepRecord
from mycelium.stages.capture import run_capture
from mycelium.core.config import (AggregateConfig, AnalyzeConfig, CaptureConfig, DiscoverConfig, IngestConfig,
                                  LabelConfig, MergeConfig)
from mycelium.stages.label import LabelStage
from mycelium.stages.merge import MergeStage
from mycelium.stages.aggregate import AggregateStage
from mycelium.stages.analyze import AnalyzeStage
from mycelium.stages.discover import DiscoverStage
from mycelium.core.store import open_store

from ..conftest import SAMPLE, load_handler

EVENT = Path(__file__).resolve().parents[1] / "fixtures" / "events" / "analyze.json"


@pytest.fixture
def s3_run(monkeypatch, tiny_teacher):
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": "us-east-1", "MYCELIUM_STORE": "s3://mycelium-test/runs"}.items():
        monkeypatch.setenv(k, v)
    with mock_aws():
        boto3.client("s3").create_bucket(Bucket="mycelium-test")
        store = open_store("s3://mycelium-test/runs")
        run_capture(SAMPLE, "lambda-run", store, CaptureConfig(n_computing_heads=2, calibration_problems=1, progress=False),
                    IngestConfig(limit=2), teacher=tiny_teacher)
        # A cloud run records every stage's config when it starts (mycelium.cloud.run.start_run); as it would:
        for stage in (AnalyzeStage(store, "lambda-run", AnalyzeConfig(progress=False)),
                      AggregateStage(store, "lambda-run", AggregateConfig()),
                      DiscoverStage(store, "lambda-run", DiscoverConfig(progress=False)),
                      LabelStage(store, "lambda-run", LabelConfig(progress=False)),
                      MergeStage(store, "lambda-run", MergeConfig())):
            stage.begin()
        yield store, load_handler("analyze")


def test_handler_analyzes_one_chunk_into_s3(s3_run):
    store, handler = s3_run
    pid = next(store.list("lambda-run/traces/")).split("/")[-1][:-5]
    event = json.loads(EVENT.read_text().replace("PID", pid))  # the bucket key, as the Distributed Map passes it
    out = handler.handler(event, None)
    assert out["item"] == pid and out["status"] == "done" and out["steps"] >= 1
    assert len(json.dumps(out)) < 2048  # small: big results stay in S3
    rec = SignalsRecord.model_validate(store.get_json(f"lambda-run/signals/{pid}.json"))
    steps = [StepRecord.model_validate_json(l) for l in store.get(f"lambda-run/steps/{pid}.jsonl").decode().splitlines()]
    assert rec.n_steps == len(steps) == out["steps"]
    assert store.exists(f"lambda-run/commits/analyze/{pid}.json")
    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket="mycelium-test", Prefix="runs/lambda-run/")["Contents"]]
    assert f"runs/lambda-run/signals/{pid}.json" in keys and f"runs/lambda-run/steps/{pid}.jsonl" in keys


def test_handler_rejects_a_malformed_event(s3_run):
    from pydantic import ValidationError

    _, handler = s3_run
    with pytest.raises(ValidationError, match="item_key"):
        handler.handler({"run": "lambda-run", "item_key": "../../etc/passwd"}, None)
    with pytest.raises(ValidationError, match="is not under run 'lambda-run'"):  # another run's item
        handler.handler({"run": "lambda-run", "item_key": "runs/other/commits/capture/p0123456789ab.json"}, None)
    with pytest.raises(ValidationError, match="item_key"):  # a chunk is never an item: only its commit is
        handler.handler({"run": "lambda-run", "item_key": "runs/lambda-run/chunks/p0123456789ab.npz"}, None)


def test_map_then_reduce_handlers_build_the_taxonomy_then_label_and_merge(s3_run):
    """analyze (map) -> aggregate -> discover -> label (map) -> merge, each handler with its role's grants."""
    from ..iam import RecordingStore, denied

    store, analyze = s3_run
    ops: list = []
    handlers = {}
    for stage in ("analyze", "aggregate", "discover", "label", "merge"):
        module = analyze if stage == "analyze" else load_handler(stage)
        module.STORE = RecordingStore(module.STORE, ops, stage)
        handlers[stage] = module.handler
    for key in store.list("lambda-run/commits/capture/"):
        handlers["analyze"]({"run": "lambda-run", "item_key": "runs/" + key}, None)
    fixtures = EVENT.parent
    agg = handlers["aggregate"](json.loads((fixtures / "aggregate.json").read_text()), None)
    assert agg["steps"] >= 1 and store.exists("lambda-run/ib/steps.npz")
    out = handlers["discover"](json.loads((fixtures / "discover.json").read_text()), None)
    assert out["templates"] >= 1 and store.exists(out["taxonomy_key"]) and store.exists("lambda-run/ib/templates.npz")
    assert store.get_json("lambda-run/ib/taxonomy.json")["n_templates"] == out["templates"]
    labelled = [handlers["label"]({"run": "lambda-run", "item_key": "runs/" + key}, None)
                for key in store.list("lambda-run/commits/analyze/")]
    assert len(labelled) == 2 and all(r["status"] == "done" for r in labelled)
    merged = handlers["merge"]({"run": "lambda-run"}, None)
    assert merged["problems"] == 2 and store.exists(merged["stats_key"])
    assert merged["examples"] == 6 * sum(r["kept"] for r in labelled)
    assert not denied(ops, "lambda-run"), sorted(set(denied(ops, "lambda-run")))[:20]


def test_the_lambda_path_writes_and_clears_the_same_ledger(s3_run):
    from mycelium.stages.base import ItemFailed

    store, handler = s3_run
    pid = next(store.list("lambda-run/commits/capture/")).split("/")[-1][:-5]
    event = {"run": "lambda-run", "item_key": f"runs/lambda-run/commits/capture/{pid}.json"}
    good = store.get(f"lambda-run/chunks/{pid}.npz")
    store.put(f"lambda-run/chunks/{pid}.npz", b"truncated upload")
    with pytest.raises(ItemFailed, match=f"analyze {pid}: IntegrityError"):  # the Distributed Map counts it failed
        handler.handler(event, None)
    assert "changed since capture committed it" in store.get_json(f"lambda-run/failures/analyze/{pid}.json")["reason"]
    store.put(f"lambda-run/chunks/{pid}.npz", good)
    assert handler.handler(event, None)["status"] == "done"
    assert not store.exists(f"lambda-run/failures/analyze/{pid}.json")  # cleared on success, as locally
    assert handler.handler(event, None) == {"item": pid, "status": "skipped", "reason": "already done"}
