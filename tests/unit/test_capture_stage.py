"""The streaming capture stage on the tiny teacher: outputs, resume, failures, summary."""

import json

import pytest
import torch

from mycelium.core.config import CaptureConfig, IngestConfig
from mycelium.core.errors import ConfigError
from mycelium.core.keys import RunKeys
from mycelium.core.lineage import Commit, current_lineage
from mycelium.core.store import LocalStore
from mycelium.records.capture import Trace
from mycelium.records.chunk import decode_chunk
from mycelium.stages.capture import CaptureStage, run_capture

from ..conftest import SAMPLE, write_jsonl

CFG = CaptureConfig(n_computing_heads=3, calibration_problems=2, progress=False)


@pytest.fixture
def mixed_data(tmp_path):
    rows = [json.loads(l) for l in SAMPLE.read_text().splitlines()[:4]]
    rows.insert(1, b"{broken json")
    rows.append({"question": "A plain row with no worked solution?", "answer": "3"})
    rows.append(rows[0])  # duplicate problem
    return write_jsonl(tmp_path / "mixed.jsonl", rows)


def test_outputs_summary_failures_and_resume(tmp_path, tiny_teacher, mixed_data):
    store = LocalStore(tmp_path / "store")
    keys = RunKeys("r1")
    res = run_capture(mixed_data, "r1", store, CFG, IngestConfig(), teacher=tiny_teacher)
    ing, cap = res.summary.stages["ingest"], res.summary.stages["capture"]
    assert (ing.n_in, ing.n_out, ing.failed, ing.skipped) == (7, 5, 1, {"duplicate problem": 1})
    assert (cap.n_in, cap.n_out, cap.failed) == (5, 4, 1)
    assert len(res.calibration.computing_heads) == 3

    from mycelium.records.datasets import problem_id

    plain = problem_id("A plain row with no worked solution?")
    fails = list(store.list("r1/failures/"))
    assert fails == [f"r1/failures/capture/{plain}.json", "r1/failures/ingest/mixed.jsonl-L2.json"]
    ingest_fail = store.get_json("r1/failures/ingest/mixed.jsonl-L2.json")
    assert "mixed.jsonl:2: invalid JSON" in ingest_fail["reason"]
    cap_fail = store.get_json(fails[0])
    assert cap_fail["item"] == plain
    assert "no reference solution" in cap_fail["reason"] and cap_fail["traceback"]

    commits = list(store.list(keys.commits("capture")))
    assert len(commits) == 4
    lineage = current_lineage(store, keys, "capture")
    assert set(lineage) == {"ingest", "capture"} and lineage["capture"] == CFG.hash()
    for key in commits:
        c = Commit.model_validate(store.get_json(key))
        assert c.lineage == lineage and set(c.outputs) == {keys.chunk(c.item), keys.trace(c.item)}
        data = store.get(keys.chunk(c.item))
        assert c.counters["chunk_bytes"] == len(data)
        chunk = decode_chunk(data, keys.chunk(c.item))
        trace = Trace.model_validate(store.get_json(keys.trace(c.item)))
        assert chunk.iaf.shape == (3, 4, trace.t_gen) and chunk.meta["config_hash"] == CFG.hash()
        assert [tuple(p) for p in chunk.head_set[-3:]] == [tuple(p) for p in res.calibration.computing_heads]
    summary = store.get_json(keys.summary)
    assert summary["stages"]["capture"]["n_out"] == 4

    # rerun: nothing recomputed, the done problems are skipped, the failure is retried and fails again
    before = {k: store.get(k) for k in commits}
    res2 = run_capture(mixed_data, "r1", store, CFG, IngestConfig(), teacher=tiny_teacher)
    cap2 = res2.summary.stages["capture"]
    assert (cap2.n_out, cap2.skipped, cap2.failed) == (0, {"already done": 4}, 1)
    assert {k: store.get(k) for k in commits} == before


def test_limit_takes_the_first_good_problems(tmp_path, tiny_teacher, mixed_data):
    store = LocalStore(tmp_path / "s")
    res = run_capture(mixed_data, "r", store, CFG, IngestConfig(limit=2), teacher=tiny_teacher)
    assert res.summary.stages["capture"].n_out == 2


def test_rerun_with_another_config_is_refused(tmp_path, tiny_teacher, mixed_data):
    store = LocalStore(tmp_path / "s")
    run_capture(mixed_data, "r", store, CFG, IngestConfig(limit=1), teacher=tiny_teacher)
    other = CFG.model_copy(update={"hidden_layer": 0})
    with pytest.raises(ConfigError, match="Use a new --run name"):
        run_capture(mixed_data, "r", store, other, IngestConfig(limit=1), teacher=tiny_teacher)


def test_each_chunk_is_committed_before_the_next_problem_is_captured(tmp_path, tiny_teacher, monkeypatch):
    """Streaming: the stage never holds more than one problem's arrays."""
    store = LocalStore(tmp_path / "s")
    seen_done = []
    process = CaptureStage.process

    def spy(self, pid):
        seen_done.append(sum(1 for _ in store.list(self.keys.commits("capture"))))
        return process(self, pid)

    monkeypatch.setattr(CaptureStage, "process", spy)
    run_capture(SAMPLE, "stream", store, CFG, IngestConfig(limit=4), teacher=tiny_teacher)
    assert seen_done == [0, 1, 2, 3]


def test_bad_computing_heads_are_a_config_error(tmp_path, tiny_teacher, mixed_data):
    cfg = CFG.model_copy(update={"computing_heads": ((7, 0),)})
    with pytest.raises(ConfigError, match="out of range"):
        run_capture(mixed_data, "r", LocalStore(tmp_path / "s"), cfg, IngestConfig(), teacher=tiny_teacher)


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="max_new_tokens"):
        CaptureConfig(max_new_tokens=0)
    with pytest.raises(ValueError, match="cot"):
        CaptureConfig(cot="sample")
    assert CaptureConfig().hash() == CaptureConfig(device="cuda", progress=False).hash()
    assert CaptureConfig().hash() != CaptureConfig(cot="generate").hash()


def test_a_run_is_pinned_to_its_input_file(tmp_path, tiny_teacher, mixed_data):
    store = LocalStore(tmp_path / "s")
    run_capture(mixed_data, "r", store, CFG, IngestConfig(limit=1), teacher=tiny_teacher)
    before = {k: store.get(k) for k in store.list("r/")}
    other = write_jsonl(tmp_path / "other.jsonl", [json.loads(SAMPLE.read_text().splitlines()[9])])
    with pytest.raises(ConfigError, match="data_sha256.*Use a new --run name"):
        run_capture(other, "r", store, CFG, IngestConfig(limit=1), teacher=tiny_teacher)
    assert {k: store.get(k) for k in store.list("r/")} == before  # refused before anything was written
    # a larger --limit on the same file resumes the same run
    res = run_capture(mixed_data, "r", store, CFG, IngestConfig(limit=3), teacher=tiny_teacher)
    assert res.summary.stages["capture"].skipped == {"already done": 1}


def test_a_broken_teacher_stops_the_run_instead_of_failing_every_problem(tmp_path, tiny_tokenizer, mixed_data):
    from mycelium.core.errors import AttentionUnavailableError
    from mycelium.teacher.model import from_model

    from ..conftest import make_tiny_model

    model = make_tiny_model(tiny_tokenizer)
    teacher = from_model(model, tiny_tokenizer, "broken")
    model.config._attn_implementation = "sdpa"
    cfg = CFG.model_copy(update={"computing_heads": ((0, 0),)})
    store = LocalStore(tmp_path / "s")
    with pytest.raises(AttentionUnavailableError):
        run_capture(mixed_data, "r", store, cfg, IngestConfig(), teacher=teacher)
    assert list(store.list("r/failures/capture/")) == []
    assert store.get_json("r/summary.json")["stages"]["capture"]["n_out"] == 0


def test_out_of_range_hidden_layer_fails_before_any_problem(tmp_path, tiny_teacher, mixed_data):
    with pytest.raises(ConfigError, match="hidden_layer 9 out of range"):
        run_capture(mixed_data, "r", LocalStore(tmp_path / "s"), CFG.model_copy(update={"hidden_layer": 9}),
                    IngestConfig(), teacher=tiny_teacher)


def test_a_problem_that_later_succeeds_loses_its_failure_record(tmp_path, tiny_teacher):
    from mycelium.records.datasets import read_dataset

    store, keys = LocalStore(tmp_path / "s"), RunKeys("f")
    problem = next(read_dataset(SAMPLE))
    store.put_json(keys.failure("capture", problem.id), {"reason": "earlier crash"})
    run_capture(SAMPLE, "f", store, CFG, IngestConfig(limit=1), teacher=tiny_teacher)
    assert not store.exists(keys.failure("capture", problem.id)) and store.exists(keys.commit("capture", problem.id))


def test_a_run_keeps_the_precision_it_was_pinned_with(tmp_path, tiny_teacher, tiny_tokenizer):
    """dtype 'auto' follows the device: a worker that loads the teacher otherwise is refused, not mixed in."""
    from mycelium.teacher.model import from_model

    from ..conftest import make_tiny_model

    store = LocalStore(tmp_path / "s")
    res = run_capture(SAMPLE, "p", store, CFG, IngestConfig(limit=1), teacher=tiny_teacher)
    assert res.calibration.dtype == "torch.float32" and res.calibration.n_layers == 3
    half = from_model(make_tiny_model(tiny_tokenizer).to(torch.bfloat16), tiny_tokenizer, "tiny-llama-test")
    with pytest.raises(ConfigError, match="pinned with the teacher in torch.float32; this machine loads it in torch.bfloat16"):
        run_capture(SAMPLE, "p", store, CFG, IngestConfig(limit=2), teacher=half)


def test_a_rerun_of_a_run_recorded_with_other_ingest_inputs_leaves_nothing_stale(tmp_path, tiny_teacher):
    """Runs made while ingest named an (empty) inputs digest: rerunning capture must leave every chunk current for
    analyze (capture takes ingest's lineage after ingest ran, and ingest, which reads no committed output, names no
    inputs)."""
    import json

    from mycelium.stages.analyze import AnalyzeStage
    from mycelium.stages.base import tally_from_store

    from ..conftest import analyze_run

    store = LocalStore(tmp_path / "s")
    run_capture(SAMPLE, "old", store, CFG, IngestConfig(limit=2), teacher=tiny_teacher)
    record = store.get_json("old/stages/ingest.json")
    assert record["inputs"] is None  # ingest read no committed output
    store.put("old/stages/ingest.json", json.dumps({**record, "inputs": "e3b0c44298fc"}).encode())  # the old way
    for key in store.list("old/commits/capture/"):
        c = store.get_json(key)
        c["lineage"]["ingest"] += "+e3b0c44298fc"
        store.put(key, json.dumps(c).encode())
    run_capture(SAMPLE, "old", store, CFG, IngestConfig(limit=2), teacher=tiny_teacher)
    summary = analyze_run(store, "old")
    assert summary.n_out == 2 and not summary.skipped
    assert tally_from_store(AnalyzeStage.current(store, "old")).n_out == 2


def test_batched_capture_writes_what_one_problem_at_a_time_writes(tmp_path, tiny_teacher):
    """batch_size is how, not what: same lineage, and every chunk decodes to the one-problem chunk's signals."""
    import numpy as np

    one, many = LocalStore(tmp_path / "one"), LocalStore(tmp_path / "many")
    cfg1 = CFG.model_copy(update={"batch_size": 1})
    cfg4 = CFG.model_copy(update={"batch_size": 4})
    assert cfg1.hash() == cfg4.hash()
    run_capture(SAMPLE, "r", one, cfg1, IngestConfig(limit=7), teacher=tiny_teacher)
    res = run_capture(SAMPLE, "r", many, cfg4, IngestConfig(limit=7), teacher=tiny_teacher)
    assert res.summary.stages["capture"].n_out == 7
    keys = sorted(many.list("r/chunks/"))
    assert keys == sorted(one.list("r/chunks/")) and len(keys) == 7
    for key in keys:
        a, b = decode_chunk(one.get(key), key), decode_chunk(many.get(key), key)
        assert a.format_version == b.format_version == 2
        for name, arr in a.arrays().items():
            # v2 is 8-bit: a value on a rounding edge may land one level away
            np.testing.assert_allclose(getattr(b, name), arr, atol=0.01, err_msg=f"{key} {name}")
        assert one.get_json(key.replace("chunks", "traces").replace(".npz", ".json")) == \
            many.get_json(key.replace("chunks", "traces").replace(".npz", ".json"))
    assert one.get_json("r/commits/capture/" + keys[0].split("/")[-1].replace(".npz", ".json"))["lineage"] == \
        many.get_json("r/commits/capture/" + keys[0].split("/")[-1].replace(".npz", ".json"))["lineage"]


def test_a_v1_run_goes_on_in_v1_and_its_chunks_analyse_like_v2(tmp_path, tiny_teacher):
    """A run captured before v2 keeps its format (nothing recaptured, its lineage unchanged) and analyses; the
    analysis of the same problems from v2 chunks finds the same steps."""
    from ..conftest import analyze_run

    store = LocalStore(tmp_path / "s")
    old = CFG.model_copy(update={"chunk_format_version": 1})
    run_capture(SAMPLE, "v1", store, old, IngestConfig(limit=3), teacher=tiny_teacher)
    before = {k: store.get(k) for k in store.list("v1/chunks/")}
    run_capture(SAMPLE, "v1", store, CFG, IngestConfig(limit=5), teacher=tiny_teacher)  # the default config
    assert store.get_json("v1/stages/capture.json")["config"]["chunk_format_version"] == 1
    chunks = list(store.list("v1/chunks/"))
    assert len(chunks) == 5 and all(store.get(k) == v for k, v in before.items())
    assert {decode_chunk(store.get(k), k).format_version for k in chunks} == {1}
    run_capture(SAMPLE, "v2", store, CFG, IngestConfig(limit=5), teacher=tiny_teacher)
    assert {decode_chunk(store.get(k), k).format_version for k in store.list("v2/chunks/")} == {2}
    for run in ("v1", "v2"):
        summary = analyze_run(store, run)
        assert (summary.n_out, summary.failed) == (5, 0)
    for key in store.list("v1/signals/"):
        a, b = store.get_json(key), store.get_json(key.replace("v1/", "v2/", 1))
        assert a["t_gen"] == b["t_gen"] and a["n_expressions"] == b["n_expressions"]
        assert abs(a["heartbeats"] - b["heartbeats"]) <= 1
        assert max(abs(x - y) for x, y in zip(a["jsd"], b["jsd"])) <= 0.002  # ln 2 / 510 plus fp16


def test_asking_for_another_chunk_format_on_a_pinned_run_is_refused(tmp_path, tiny_teacher):
    store = LocalStore(tmp_path / "s")
    run_capture(SAMPLE, "r", store, CFG, IngestConfig(limit=1), teacher=tiny_teacher)
    with pytest.raises(ConfigError, match="pinned to another config"):
        run_capture(SAMPLE, "r", store, CFG.model_copy(update={"chunk_format_version": 1}), IngestConfig(limit=1),
                    teacher=tiny_teacher)
