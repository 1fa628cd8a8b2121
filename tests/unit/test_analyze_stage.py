"""The analyze and aggregate stages read only what is committed, current and intact, and say why not."""

import shutil

import pytest

from mycelium.core.config import AggregateConfig, AnalyzeConfig, CaptureConfig, IngestConfig
from mycelium.core.errors import IntegrityError
from mycelium.core.keys import RunKeys
from mycelium.core.store import LocalStore, sha256
from mycelium.records.capture import Trace
from mycelium.records.chunk import decode_chunk, encode_chunk
from mycelium.stages.aggregate import AggregateStage
from mycelium.stages.analyze import AnalyzeStage, check_pair
from mycelium.stages.capture import run_capture

from ..conftest import SAMPLE, analyze_run, reduce_run

KEYS = RunKeys("a")


@pytest.fixture(scope="module")
def captured(tmp_path_factory, tiny_teacher):
    store = LocalStore(tmp_path_factory.mktemp("stage") / "store")
    run_capture(SAMPLE, "a", store, CaptureConfig(n_computing_heads=2, calibration_problems=1, progress=False),
                IngestConfig(limit=5), teacher=tiny_teacher)
    return store


@pytest.fixture
def store(captured, tmp_path):
    copy = LocalStore(tmp_path / "copy")
    shutil.copytree(captured.root, copy.root)
    return copy


def pids(store):
    return sorted(k.split("/")[-1][:-5] for k in store.list(KEYS.commits("capture")))


def recommit(store, stage: str, pid: str, key: str, data: bytes) -> None:
    """Rewrite an output *and* its commit's sha256, as a bug upstream would: only content checks can tell."""
    store.put(key, data)
    commit = store.get_json(KEYS.commit(stage, pid))
    commit["outputs"][key] = sha256(data)
    store.put_json(KEYS.commit(stage, pid), commit)


def test_an_uncommitted_chunk_is_not_an_item(store):
    ghost = "p000000000000"
    store.put(KEYS.chunk(ghost), store.get(KEYS.chunk(pids(store)[0])))  # written, never committed
    store.put(KEYS.trace(ghost), store.get(KEYS.trace(pids(store)[0])))
    stage = AnalyzeStage(store, "a", AnalyzeConfig(progress=False))
    assert ghost not in stage.items() and sorted(stage.items()) == pids(store)


def test_a_chunk_that_changed_after_its_commit_is_rejected_with_the_problem_id(store):
    victim = pids(store)[0]
    chunk = decode_chunk(store.get(KEYS.chunk(victim)))
    chunk.hidden = chunk.hidden * 0
    store.put(KEYS.chunk(victim), encode_chunk(chunk))  # the commit's sha256 no longer matches
    summary = analyze_run(store, "a")
    assert (summary.n_out, summary.failed) == (4, 1)
    reason = store.get_json(KEYS.failure("analyze", victim))["reason"]
    assert reason.startswith(f"IntegrityError: {victim}: a/chunks/{victim}.npz changed since capture committed it")


@pytest.mark.parametrize("what", ["problem id", "config hash", "cot tokens"])
def test_a_chunk_that_does_not_match_its_trace_is_rejected(store, what):
    victim, other = pids(store)[:2]
    chunk = decode_chunk(store.get(KEYS.chunk(victim)))
    trace = Trace.model_validate_json(store.get(KEYS.trace(victim)))
    if what == "problem id":  # the other problem's trace under this problem's name
        recommit(store, "capture", victim, KEYS.trace(victim), store.get(KEYS.trace(other)))
        expect = f"trace is of {other}, chunk of {victim}"
    elif what == "config hash":
        chunk.meta["config_hash"] = "000000000000"
        recommit(store, "capture", victim, KEYS.chunk(victim), encode_chunk(chunk))
        expect = "chunk made with capture config 000000000000"
    else:
        chunk.cot_token_ids = chunk.cot_token_ids[::-1].copy()
        recommit(store, "capture", victim, KEYS.chunk(victim), encode_chunk(chunk))
        expect = "chunk's CoT tokens"
    summary = analyze_run(store, "a")
    assert (summary.n_out, summary.failed) == (4, 1)
    assert expect in store.get_json(KEYS.failure("analyze", victim))["reason"]
    assert trace.problem_id == victim


def test_check_pair_accepts_a_true_pair(store):
    pid = pids(store)[0]
    trace = Trace.model_validate_json(store.get(KEYS.trace(pid)))
    chunk = decode_chunk(store.get(KEYS.chunk(pid)))
    check_pair(pid, chunk.meta["config_hash"], trace, chunk)
    with pytest.raises(IntegrityError, match=pid):
        check_pair(pid, "another-hash", trace, chunk)


def test_stale_analyze_outputs_are_excluded_from_the_aggregate_and_counted(store):
    first = analyze_run(store, "a", AnalyzeConfig(progress=False))
    assert first.n_out == 5
    victim = pids(store)[0]
    store.put(KEYS.chunk(victim), b"garbage")  # under the next config this chunk fails
    second = analyze_run(store, "a", AnalyzeConfig(peak_prominence=2.0, progress=False))
    assert (second.n_out, second.failed) == (4, 1)
    summary = reduce_run(AggregateStage, store, "a", AggregateConfig())
    (reason,) = summary.skipped.keys() - {"no op labels", "duplicate"}
    assert reason.startswith("stale analyze output (made with analyze config ") and summary.skipped[reason] == 1
    index = [line for line in store.get("a/ib/index.jsonl").decode().splitlines()]
    assert index and not any(victim in line for line in index)  # its old-config steps are not in the table
    report = store.get_json("a/analyze/report.json")
    assert report["problems"] == 4 and sum(report["excluded"]["skipped"].values()) == 1


def test_a_bad_steps_line_is_counted_by_file_and_line(store):
    analyze_run(store, "a")
    victim = pids(store)[1]
    key = KEYS.steps(victim)
    lines = store.get(key).decode().splitlines()
    lines.insert(1, '{"problem_id": "half a record')
    recommit(store, "analyze", victim, key, ("\n".join(lines) + "\n").encode())
    summary = reduce_run(AggregateStage, store, "a", AggregateConfig())
    assert summary.failed == 1 and summary.n_out > 0
    failure = store.get_json(KEYS.failure("aggregate", f"{key}:2"))
    assert failure["reason"].startswith(f"{key}:2: not a step record")
    # the next aggregate redoes everything: the entry goes once the line is mended
    recommit(store, "analyze", victim, key, ("\n".join(lines[:1] + lines[2:]) + "\n").encode())
    assert reduce_run(AggregateStage, store, "a", AggregateConfig()).failed == 0
    assert not list(store.list(KEYS.failures("aggregate")))


def test_a_corrupt_signals_json_is_named_in_the_report_and_redone_once_uncommitted(store):
    analyze_run(store, "a")
    victim = pids(store)[2]
    store.put(KEYS.signals(victim), b'{"problem_id": ')
    summary = analyze_run(store, "a")
    assert summary.skipped == {"already done": 5} and summary.counters["corrupt_outputs"] == 1
    report = store.get_json("a/analyze/report.json")
    assert report["problems"] == 4 and list(report["excluded"]["corrupt_outputs"]) == [victim]
    assert "changed since analyze committed it" in report["excluded"]["corrupt_outputs"][victim]
    stage = AnalyzeStage(store, "a", AnalyzeConfig(progress=False))
    assert f"delete a/commits/analyze/{victim}.json" in stage.report_text()
    store.delete(KEYS.commit("analyze", victim))  # as the report says: the item is redone
    again = analyze_run(store, "a")
    assert again.n_out == 1 and store.get_json("a/analyze/report.json")["problems"] == 5


def test_a_corrupt_analyze_commit_marker_is_a_ledger_entry_and_aggregate_skips_it(store):
    analyze_run(store, "a")
    victim = pids(store)[3]
    store.put(KEYS.commit("analyze", victim), b"{truncated")
    summary = analyze_run(store, "a")
    assert (summary.failed, summary.skipped) == (1, {"already done": 4})
    assert "corrupt commit marker" in store.get_json(KEYS.failure("analyze", victim))["reason"]
    agg = reduce_run(AggregateStage, store, "a", AggregateConfig())
    assert agg.skipped["corrupt analyze commit marker"] == 1  # counted, not read, nothing written by the reader
    assert not list(store.list(KEYS.failures("aggregate")))
