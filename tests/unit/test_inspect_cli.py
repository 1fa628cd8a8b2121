"""`mycelium inspect` and the CLI's error handling."""

import io

import pytest

from mycelium.stages.capture import run_capture
from mycelium.cli import main
from mycelium.core.config import CaptureConfig, IngestConfig
from mycelium.core.errors import MyceliumError
from mycelium.viz.inspect import inspect
from mycelium.core.store import LocalStore

from ..conftest import SAMPLE


@pytest.fixture
def tiny_run(tmp_path, tiny_teacher):
    store = LocalStore(tmp_path / "store")
    cfg = CaptureConfig(n_computing_heads=2, calibration_problems=1, progress=False)
    run_capture(SAMPLE, "ins", store, cfg, IngestConfig(limit=2), teacher=tiny_teacher)
    return store


def test_inspect_prints_token_boundaries_and_writes_png(tiny_run):
    pid = next(k for k in tiny_run.list("ins/traces/")).split("/")[-1][:-5]
    out = io.StringIO()
    key = inspect(tiny_run, "ins", pid, out=out, colour=False)
    text = out.getvalue()
    assert f"problem {pid}" in text and "CoT tokens:" in text and "|" in text
    trace = tiny_run.get_json(f"ins/traces/{pid}.json")
    cot_line = text.split("CoT tokens:\n")[1].split("\nanswer extracted")[0]
    assert cot_line.replace("|", "") == trace["cot_text"]  # boundaries only, no characters lost
    assert tiny_run.get(key)[:8] == b"\x89PNG\r\n\x1a\n"


def test_inspect_unknown_problem_is_a_clear_error(tiny_run):
    with pytest.raises(MyceliumError, match="has no captured problem 'p000000000000'"):
        inspect(tiny_run, "ins", "p000000000000", out=io.StringIO())


def test_cli_reports_errors_with_exit_code_2(tmp_path, capsys):
    assert main(["capture", "--data", str(tmp_path / "missing.jsonl"), "--run", "x", "--store", str(tmp_path)]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["capture", "--data", str(SAMPLE), "--run", "../bad", "--store", str(tmp_path)]) == 2
    assert "run name" in capsys.readouterr().err
