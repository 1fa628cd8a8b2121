"""Capture writes chunks to S3 (moto): same keys, same bytes semantics as a local store."""

import boto3
import pytest
from moto import mock_aws

from mycelium.core.keys import RunKeys
from mycelium.core.lineage import Commit
from mycelium.stages.capture import run_capture
from mycelium.records.chunk import decode_chunk
from mycelium.core.config import CaptureConfig, IngestConfig
from mycelium.core.errors import MissingKeyError
from mycelium.core.store import S3Store, open_store

from ..conftest import SAMPLE


@pytest.fixture
def bucket(monkeypatch):
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    with mock_aws():
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="mycelium-test")
        yield "mycelium-test"


def test_s3_store_roundtrip_and_listing(bucket):
    s = open_store(f"s3://{bucket}/pre/fix")
    assert isinstance(s, S3Store)
    s.put("r/chunks/b.npz", b"b")
    s.put_json("r/chunks/a.json", {"x": 1})
    assert s.get_json("r/chunks/a.json") == {"x": 1} and s.exists("r/chunks/b.npz")
    assert not s.exists("r/chunks/c.npz")
    assert list(s.list("r/chunks/")) == ["r/chunks/a.json", "r/chunks/b.npz"]
    with pytest.raises(MissingKeyError):
        s.get("r/none")
    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=bucket)["Contents"]]
    assert all(k.startswith("pre/fix/r/") for k in keys)
    s.delete("r/chunks/b.npz")
    assert not s.exists("r/chunks/b.npz")


def test_s3_and_local_list_the_same_keys(bucket, tmp_path):
    from mycelium.core.store import LocalStore

    stores = [open_store(f"s3://{bucket}/p"), LocalStore(tmp_path)]
    for st in stores:
        for k in ["run/p1/x.json", "run/p1x.json", "run/p2.json", "run2/a.json"]:
            st.put(k, b"")
    for prefix in ["run/p1", "run", "run/", "run2/", "zzz"]:
        assert list(stores[0].list(prefix)) == list(stores[1].list(prefix)), prefix


def test_capture_to_s3(bucket, tiny_teacher):
    store = open_store(f"s3://{bucket}/runs")
    cfg = CaptureConfig(n_computing_heads=2, calibration_problems=2, progress=False)
    res = run_capture(SAMPLE, "s3run", store, cfg, IngestConfig(limit=3), teacher=tiny_teacher)
    assert res.summary.stages["capture"].n_out == 3
    keys = RunKeys("s3run")
    commits = list(store.list(keys.commits("capture")))
    assert len(commits) == 3
    for key in commits:
        c = Commit.model_validate(store.get_json(key))
        chunk = decode_chunk(store.get(keys.chunk(c.item)), keys.chunk(c.item))
        assert chunk.problem_id == c.item and store.exists(keys.trace(c.item))
    assert store.get_json("s3run/summary.json")["stages"]["ingest"]["n_out"] == 3
    assert store.exists("s3run/capture/calibration.json") and store.exists("s3run/problems/part-00000.jsonl")
    # resume against S3 too
    res2 = run_capture(SAMPLE, "s3run", store, cfg, IngestConfig(limit=3), teacher=tiny_teacher)
    assert res2.summary.stages["capture"].skipped == {"already done": 3}
