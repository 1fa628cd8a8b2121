"""The vLLM generation path, against a stand-in ``vllm`` module (vLLM needs a GPU and is not a test dependency).

What is checked is our side of the contract: the prompts are the HF path's token ids, decoding is greedy with
the end-of-turn ids as stop tokens, the engine is freed, and capture uses the CoT instead of HF ``generate``.
"""

import sys
import types

import pytest

from mycelium.core.config import CaptureConfig, IngestConfig
from mycelium.core.store import LocalStore
from mycelium.records.datasets import read_dataset
from mycelium.stages.capture import CaptureStage
from mycelium.stages.ingest import IngestStage
from mycelium.stages.runner import run_stage
from mycelium.teacher import generation
from mycelium.teacher.generation import generate_with_vllm, use_vllm
from mycelium.teacher.tokens import prompt_tokens

from ..conftest import SAMPLE, make_tiny_model

COT = "Add 3 and 4 to get 7. The answer is 7."


@pytest.fixture
def fake_vllm(monkeypatch, tiny_tokenizer):
    calls = {}

    class LLM:
        def __init__(self, model, tokenizer, dtype, seed, gpu_memory_utilization):
            calls["init"] = dict(model=model, dtype=dtype, seed=seed)

        def generate(self, prompts, params, use_tqdm):
            calls["prompts"], calls["params"] = prompts, params
            ids = tiny_tokenizer(COT, add_special_tokens=False)["input_ids"] + [tiny_tokenizer.eos_token_id]
            done = types.SimpleNamespace(outputs=[types.SimpleNamespace(token_ids=ids)])
            return [done for _ in prompts]

        def __del__(self):
            calls["freed"] = True

    class SamplingParams:
        def __init__(self, **kw):
            self.__dict__.update(kw)

    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(LLM=LLM, SamplingParams=SamplingParams))
    return calls


@pytest.fixture
def teacher_dir(tmp_path, tiny_tokenizer):
    make_tiny_model(tiny_tokenizer).save_pretrained(tmp_path / "m")
    tiny_tokenizer.save_pretrained(tmp_path / "m")
    return tmp_path / "m"


def test_vllm_is_used_only_to_generate_on_a_gpu(monkeypatch, fake_vllm):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object() if name == "vllm" else None)
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    assert use_vllm(CaptureConfig(cot="generate"))
    assert not use_vllm(CaptureConfig(cot="reference"))
    assert not use_vllm(CaptureConfig(cot="generate", device="cpu"))
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert not use_vllm(CaptureConfig(cot="generate"))


def test_vllm_cots_feed_capture_instead_of_hf_generate(monkeypatch, fake_vllm, teacher_dir, tiny_teacher, tmp_path):
    problems = [p for p in read_dataset(SAMPLE, "auto")][:2]
    cfg = CaptureConfig(teacher=str(teacher_dir), cot="generate", max_new_tokens=64, progress=False)
    cots = generate_with_vllm(cfg, problems)

    parts = tiny_teacher.prompt_parts()
    assert fake_vllm["prompts"] == [{"prompt_token_ids": prompt_tokens(tiny_teacher, p.question, parts).prompt_ids}
                                    for p in problems]
    params = fake_vllm["params"]
    assert params.temperature == 0.0 and params.max_tokens == 64 and params.stop_token_ids == tiny_teacher.eos_ids()
    assert fake_vllm["freed"] and fake_vllm["init"]["seed"] == 0
    assert {c.text for c in cots.values()} == {COT} and not any(c.truncated for c in cots.values())

    def no_hf(*a, **k):
        raise AssertionError("HF generate was called although vLLM made the CoT")

    monkeypatch.setattr(generation, "generate_cots", no_hf)
    store = LocalStore(tmp_path / "s")
    run_stage(IngestStage(store, "v", IngestConfig(limit=2), SAMPLE), progress=False)
    stage = CaptureStage(store, "v", cfg.model_copy(update={"computing_heads": ((0, 0),)}), teacher=tiny_teacher,
                         generated=cots)
    stage.prepare()
    assert run_stage(stage, progress=False).n_out == 2
    trace = store.get_json(stage.keys.trace(problems[0].id))
    assert trace["cot_text"] == COT and trace["retokenized_equal"] is True and trace["truncated"] is False
