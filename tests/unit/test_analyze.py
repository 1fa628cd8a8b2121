"""Per-chunk analysis on chunks captured from the tiny teacher, the pool stage, and `show`."""

import io
from fractions import Fraction

import numpy as np
import pytest

from mycelium.analysis.analyze import analyze
from mycelium.core.config import AnalyzeConfig, CaptureConfig, IngestConfig
from mycelium.core.errors import ConfigError, MyceliumError
from mycelium.core.keys import RunKeys
from mycelium.core.store import LocalStore
from mycelium.records.analysis import SignalsRecord, StepRecord
from mycelium.records.capture import Trace
from mycelium.records.chunk import decode_chunk
from mycelium.stages.capture import run_capture
from mycelium.viz.show import show

from ..conftest import SAMPLE, analyze_run

ACFG = AnalyzeConfig(workers=2, progress=False)


@pytest.fixture(scope="module")
def captured(tmp_path_factory, tiny_teacher):
    store = LocalStore(tmp_path_factory.mktemp("analyze") / "store")
    cfg = CaptureConfig(n_computing_heads=3, calibration_problems=2, progress=False)
    run_capture(SAMPLE, "a", store, cfg, IngestConfig(limit=6), teacher=tiny_teacher)
    return store


def _load(store, pid):
    keys = RunKeys("a")
    return Trace.model_validate(store.get_json(keys.trace(pid))), decode_chunk(store.get(keys.chunk(pid)))


def _pids(store):
    return [k.split("/")[-1][:-5] for k in store.list("a/traces/")]


def test_steps_tile_the_cot_and_carry_labels_grounding_and_embeddings(captured):
    for pid in _pids(captured):
        trace, chunk = _load(captured, pid)
        rec, steps = analyze(trace, chunk, AnalyzeConfig())
        assert steps[0].token_start == 0 and steps[-1].token_end == trace.t_gen
        assert all(a.token_end == b.token_start for a, b in zip(steps, steps[1:]))
        assert [s.token_start for s in steps[1:]] == rec.boundaries
        for s in steps:
            assert s.text == trace.cot_text[s.char_start:s.char_end]
            assert s.embedding.to_array().shape == (32,) and np.isfinite(s.embedding.to_array()).all()
            for m in s.mapped_spans:
                assert trace.question[m.start:m.end] == m.text
        exprs = [e for s in steps for e in s.expressions]
        assert exprs and all(e.ok and e.value_matches_result for e in exprs)  # the sample's annotations are right
        assert rec.n_expressions == len(exprs) and rec.reference_boundaries
        for e in exprs:
            for op in e.operands:
                if op.source in ("text", "word"):
                    assert trace.question[op.span[0]:op.span[1]] == op.span_text
        assert rec.heartbeats == len(rec.heartbeat_runs) and len(rec.received_attention) == len(trace.problem_offsets)


def test_operands_point_only_at_earlier_results(captured):
    sources = {}
    for pid in _pids(captured):
        trace, chunk = _load(captured, pid)
        _, steps = analyze(trace, chunk, AnalyzeConfig())
        values = {}  # CoT-wide expression index -> (step, the values it computed)
        e = 0
        for s in steps:
            for expr in s.expressions:
                for op in expr.operands:
                    sources.setdefault(op.source, []).append(op)
                    if op.source in ("step", "chain"):  # an earlier expression's result, never a later one's
                        assert op.expression < e and Fraction(op.text) in values[op.expression][1]
                        k = values[op.expression][0]
                        assert (op.source == "step" and op.step == k < s.index) or (op.source == "chain" and k == s.index)
                    if op.source == "text":
                        assert Fraction(op.span_text.replace(",", "")) == Fraction(op.text)
                    assert op.ambiguous == (op.problem_attention is not None)
                values[e] = (s.index, {Fraction(v) for v in (expr.value, expr.result_text) if v})
                e += 1
    assert {"text"} < set(sources) and {"step", "chain"} & set(sources)


def test_an_ambiguous_operand_is_decided_by_the_computing_heads_and_kept_ambiguous():
    from mycelium.analysis.grounding import Grounding, ground_operand
    from mycelium.analysis.numwords import mentions

    question = "Ann has 12 apples and buys 3 more."
    cot = "12 + 3 = 15. Then 15 - 3 = 12, and 12 * 2 = 24."
    trace = Trace(problem_id="p000000000000", question=question, dataset="plain", model_id="m", cot_source="reference",
                  prompt_text=question, prompt_len=9, problem_token_start=0, problem_token_end=9,
                  problem_offsets=[(i, i + 1) for i in range(9)], cot_text=cot, cot_token_ids=list(range(len(cot))),
                  cot_offsets=[(i, i + 1) for i in range(len(cot))])
    offsets = np.array(trace.cot_offsets)
    at = (cot.rindex("12 *"), cot.rindex("12 *") + 2)  # the last "12", written in step 2
    reads = np.zeros(len(cot))
    g = Grounding(trace, mentions(question), reads, offsets, 0.5, results=[(Fraction(15), 0, 0), (Fraction(12), 1, 1)])
    att = np.ones(9)
    # "12" is both in the problem and the result of step 1: the heads read the CoT there -> the earlier result
    op = ground_operand("12", at, 2, att, g)
    assert (op.source, op.step, op.expression, op.ambiguous, op.problem_attention) == ("step", 1, 1, True, 0.0)
    reads[at[0]:at[1]] = 0.9  # ... they read the problem there -> the problem's "12"
    op = ground_operand("12", at, 2, att, g)
    assert (op.source, op.span_text, op.ambiguous, op.problem_attention) == ("text", "12", True, 0.9)
    # in step 1 the value of step 1's own expression is a chain within the step, never "step 1"
    op = ground_operand("15", (13, 15), 1, att, g)
    assert (op.source, op.step, op.expression, op.ambiguous) == ("step", 0, 0, False)
    g.results.append((Fraction(7), 2, 2))
    op = ground_operand("7", (0, 1), 2, att, g)
    assert (op.source, op.step, op.expression) == ("chain", None, 2)
    assert ground_operand("1000", (0, 1), 2, att, g).source == "constant"


def test_bad_jsd_layers_are_a_config_error(captured):
    trace, chunk = _load(captured, _pids(captured)[0])
    with pytest.raises(ConfigError, match="jsd_layers"):
        analyze(trace, chunk, AnalyzeConfig(jsd_layers=(0, 7)))


def test_stage_runs_in_a_pool_resumes_and_records_failures(captured, tmp_path):
    import shutil

    store = LocalStore(tmp_path / "copy")
    shutil.copytree(captured.root, store.root)
    victim = _pids(store)[0]
    store.put(f"a/chunks/{victim}.npz", b"not a chunk")  # corrupt one chunk after it was committed
    st = analyze_run(store, "a", ACFG)
    assert (st.n_in, st.n_out, st.failed) == (6, 5, 1)
    fail = store.get_json(f"a/failures/analyze/{victim}.json")
    assert f"a/chunks/{victim}.npz changed since capture committed it" in fail["reason"]
    report = store.get_json("a/analyze/report.json")
    assert report["problems"] == 5 and 0 <= report["boundaries"]["f1"] <= 1
    for key in store.list("a/steps/"):
        for line in store.get(key).decode().splitlines():
            StepRecord.model_validate_json(line)
    for key in store.list("a/signals/"):
        SignalsRecord.model_validate(store.get_json(key))
    before = {k: store.get(k) for k in store.list("a/signals/")}
    again = analyze_run(store, "a", ACFG)
    assert (again.n_out, again.skipped, again.failed) == (0, {"already done": 5}, 1)
    assert {k: store.get(k) for k in store.list("a/signals/")} == before


def test_show_writes_html_and_png_and_prints_spans(captured, tmp_path):
    pid = _pids(captured)[1]
    analyze_run(captured, "a")
    out = io.StringIO()
    html_key, png_key = show(captured, "a", pid, out=out, colour=False)
    text = out.getvalue()
    assert f"problem {pid}" in text and "step 0" in text and "reads:" in text
    assert "<table>" in captured.get(html_key).decode()
    assert captured.get(png_key)[:8] == b"\x89PNG\r\n\x1a\n"


def test_show_before_analyze_says_what_to_run(captured, tmp_path):
    import shutil

    store = LocalStore(tmp_path / "fresh")
    shutil.copytree(captured.root, store.root)
    shutil.rmtree(store.root / "a" / "commits" / "analyze", ignore_errors=True)  # captured, not analysed
    with pytest.raises(MyceliumError, match="is not analysed .*mycelium analyze --run a"):
        show(store, "a", _pids(store)[2], out=io.StringIO())


def test_a_cot_whose_attention_is_an_even_spread_has_no_heartbeat(captured):
    """Through the whole analysis: the computing heads' IAF set to chance gives 0 heartbeats above chance,
    while counting on raw IAF finds the t = 0 artefact."""
    from mycelium.analysis import signals

    trace, chunk = _load(captured, _pids(captured)[0])
    chance = signals.chance_iaf(len(trace.problem_offsets), signals.visible_prompt_keys(chunk.meta), trace.t_gen)
    chunk.iaf = np.broadcast_to(chance, chunk.iaf.shape).astype(np.float16)
    rec, _ = analyze(trace, chunk, AnalyzeConfig())
    assert rec.heartbeats == 0 and max(rec.iaf_over_chance) < 0.01 and rec.iaf[0] == pytest.approx(1.0)
    raw, _ = analyze(trace, chunk, AnalyzeConfig(heartbeat_signal="iaf"))
    assert raw.heartbeats >= 1 and raw.heartbeat_runs[0][0] == 0
