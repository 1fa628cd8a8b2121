"""The capture GPU worker entry point: prepare, then a shard; it always writes a final status object."""

import pytest

from gpu_workers.capture.entry_point import main as worker_main
from mycelium.core.config import CaptureConfig, IngestConfig
from mycelium.cloud.run import start_run
from mycelium.cloud.manifest import submit
from mycelium.core.keys import RunKeys
from mycelium.core.store import LocalStore

from ..conftest import SAMPLE, write_jsonl

pytestmark = pytest.mark.e2e


def test_worker_prepares_then_captures_a_shard(tmp_path, embedded_teacher, monkeypatch):
    store, keys = LocalStore(tmp_path / "store"), RunKeys("w")
    data = write_jsonl(tmp_path / "two.jsonl", SAMPLE.read_text().splitlines()[:2])
    submit(store, keys, data, ingest=IngestConfig(shard_size=1),
           capture=CaptureConfig(n_computing_heads=2, calibration_problems=1, progress=False))
    _, shards, _ = start_run(store, keys)
    assert len(shards) == 2
    argv = ["--store", str(tmp_path / "store"), "--run", "w"]

    monkeypatch.setenv("MYCELIUM_CAPTURE_MODE", "prepare")
    assert worker_main(argv) == 0
    prepared = store.get_json("w/status/capture/prepare.json")
    assert prepared["state"] == "succeeded" and prepared["shards"] == 2 and len(prepared["computing_heads"]) == 2
    assert store.exists("w/capture/calibration.json") and store.exists("w/stages/capture.json")

    monkeypatch.setenv("MYCELIUM_CAPTURE_MODE", "shard")
    monkeypatch.setenv("AWS_BATCH_JOB_ARRAY_INDEX", "1")  # the second element of the array job
    assert worker_main(argv) == 0
    status = store.get_json("w/status/capture/part-00001.json")
    assert status["state"] == "succeeded" and status["summary"]["n_out"] == 1
    assert not store.exists("w/status/capture/part-00000.json")
    assert worker_main(argv) == 0  # a retried element skips what it already captured
    assert store.get_json("w/status/capture/part-00001.json")["summary"]["skipped"] == {"already done": 1}


def test_worker_failure_writes_the_traceback(tmp_path):
    assert worker_main(["--store", str(tmp_path), "--run", "nope", "--shard", "nope/problems/part-00000.jsonl"]) == 1
    status = LocalStore(tmp_path).get_json("nope/status/capture/part-00000.json")
    assert status["state"] == "failed" and "has no capture stage" in status["error"] and "Traceback" in status["traceback"]
