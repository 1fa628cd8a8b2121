"""Shared fixtures: seeds, a tiny tokenizer and a tiny random teacher (no weights, no hub)."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "shared" / "mycelium" / "data" / "sample_problems.jsonl"
SHARED_DATA = ROOT.parent / "shared" / "data"

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(autouse=True)
def _seed():
    random.seed(0)
    np.random.seed(0)
    try:
        import torch

        torch.manual_seed(0)
    except ImportError:
        pass


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    # Tests never write to the user's store; the teacher cache is shared (it is slow to build).
    monkeypatch.setenv("MYCELIUM_STORE", str(tmp_path_factory.mktemp("default-store")))


def shared_data(*parts: str) -> Path:
    """A file of ../shared/data, or skip the test cleanly when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.is_file():
        pytest.skip(f"{path} not present")
    return path


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = []
    for line in SAMPLE.read_text().splitlines():
        row = json.loads(line)
        corpus += [row["question"], row["answer"]]
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", bos_token="<|endoftext|>",
                                   pad_token="<|endoftext|>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def make_tiny_model(tokenizer, attn: str = "eager", layers: int = 3, heads: int = 4):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=2, max_position_embeddings=512,
                      bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                      pad_token_id=tokenizer.pad_token_id, attn_implementation=attn)
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="session")
def tiny_teacher(tiny_tokenizer):
    from mycelium.teacher.model import from_model

    return from_model(make_tiny_model(tiny_tokenizer), tiny_tokenizer, "tiny-llama-test")


@pytest.fixture
def sample_path() -> Path:
    return SAMPLE


def load_handler(stage: str):
    """Import lambdas/<stage>/handler.py afresh, as Lambda would (its module-level clients are made now)."""
    import importlib.util
    import sys

    name = f"lambda_handler_{stage}"
    spec = importlib.util.spec_from_file_location(name, ROOT / "lambdas" / stage / "handler.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # pydantic resolves the handler's annotations through it
    spec.loader.exec_module(module)
    return module


def write_jsonl(path: Path, rows: list) -> Path:
    with open(path, "wb") as f:
        for r in rows:
            f.write(r if isinstance(r, bytes) else (json.dumps(r) if not isinstance(r, str) else r).encode())
            f.write(b"\n")
    return path


@pytest.fixture
def embedded_teacher():
    from mycelium.teacher.model import load_teacher

    if os.environ.get("MYCELIUM_SKIP_E2E"):
        pytest.skip("MYCELIUM_SKIP_E2E set")
    return load_teacher("embedded", device="cpu")


def analyze_run(store, run: str, cfg=None, workers: int = 1):
    """Run the analyze stage locally as `mycelium analyze` does; its StageSummary back."""
    from mycelium.core.config import AnalyzeConfig
    from mycelium.stages.analyze import AnalyzeStage
    from mycelium.stages.runner import run_stage

    cfg = cfg or AnalyzeConfig(progress=False)
    return run_stage(AnalyzeStage(store, run, cfg), workers=cfg.workers or workers, progress=False)


def reduce_run(stage_cls, store, run: str, cfg=None):
    """Run a reduce stage (aggregate, discover) locally; its StageSummary back."""
    from mycelium.stages.runner import run_stage

    return run_stage(stage_cls(store, run, cfg or stage_cls.config_type()), progress=False)


def unlabelled_train_rows(n: int, val_share: float) -> list[dict]:
    """Train-split problems (merge's split) whose reference solution has no calculation: the teacher's label is
    rejected, so an improvement round has something to ask the mop-up teacher about."""
    from mycelium.records.datasets import problem_id
    from mycelium.stages.merge import split_of

    out = []
    for i in range(200):
        q = f"Ada has {i + 3} red pens and no other pens. How many red pens does Ada have?"
        if split_of(problem_id(q), val_share) == "train":
            out.append({"question": q, "answer": f"Ada has only red pens, so the count is the one given.\n#### {i + 3}"})
        if len(out) == n:
            return out
    raise AssertionError(f"fewer than {n} such rows")
