"""The capture GPU worker entry point always writes a final status object."""

import pytest

from gpu_workers.capture.entry_point import main as worker_main
from mycelium.capture_stage import run_capture
from mycelium.config import CaptureConfig, IngestConfig
from mycelium.store import LocalStore

from ..conftest import SAMPLE

pytestmark = pytest.mark.e2e


def test_worker_captures_a_shard_and_reports_success(tmp_path, embedded_teacher):
    store = LocalStore(tmp_path)
    cfg = CaptureConfig(n_computing_heads=2, calibration_problems=1, progress=False)
    run_capture(SAMPLE, "w", store, cfg, IngestConfig(limit=2), teacher=embedded_teacher)
    victim = next(k for k in store.list("w/chunks/") if k.endswith(".json"))
    store.local_path(victim).unlink()  # as if this problem had not been captured yet
    assert worker_main(["--store", str(tmp_path), "--run", "w", "--shard", "w/problems/part-00000.jsonl"]) == 0
    status = store.get_json("w/status/capture/part-00000.json")
    assert status["state"] == "succeeded"
    assert status["summary"]["n_out"] == 1 and status["summary"]["skipped"] == {"already captured": 1}
    assert store.exists(victim)


def test_worker_failure_writes_the_traceback(tmp_path):
    assert worker_main(["--store", str(tmp_path), "--run", "nope", "--shard", "nope/problems/part-00000.jsonl"]) == 1
    status = LocalStore(tmp_path).get_json("nope/status/capture/part-00000.json")
    assert status["state"] == "failed" and "no such key" in status["error"] and "Traceback" in status["traceback"]
