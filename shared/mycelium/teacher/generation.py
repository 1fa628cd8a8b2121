"""Chain-of-thought generation: Hugging Face ``generate`` in batches, or vLLM for a whole shard on a GPU.

Capture needs the CoT first and attention second (one teacher-forced pass with
eager attention). With vLLM the whole shard's CoTs are generated in one batched
call, the engine is freed, and only then is the eager Hugging Face teacher
loaded, so the two never share the GPU. Greedy decoding with the chat prompt
token for token as the HF path builds it (``teacher.tokens.prompt_tokens``); the text
is decoded with the teacher's tokenizer, and capture re-tokenizes it as it does
for HF output. Without vLLM, capture generates with HF ``generate``, ``generate_batch`` problems at a time.
"""

from __future__ import annotations

import gc
import importlib.util
import logging
from dataclasses import dataclass

from ..core.config import CaptureConfig
from ..core.errors import CaptureError
from ..records.problems import Problem
from .model import Teacher
from .tokens import Tokens, prompt_tokens, tokenize

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GeneratedCot:
    text: str
    ids: list[int]  # generated token ids, without the end-of-turn token
    truncated: bool


def generate_cots(teacher: Teacher, prompts: list[list[int]], max_new_tokens: int) -> list[GeneratedCot]:
    """Greedy CoTs from chat prompts (token ids), in one batch: left-padded, masked, one ``generate`` call.

    A batch of one is exactly a single greedy generation; in a larger batch a near tie between two
    tokens can break the other way (other kernel shapes), which is why the batch size is in the config.
    """
    import torch

    eos = teacher.eos_ids()
    pad = teacher.tokenizer.pad_token_id if teacher.tokenizer.pad_token_id is not None else eos[0]
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=teacher.device)  # [batch, width]
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=teacher.device)
    with torch.no_grad():
        out = teacher.model.generate(
            ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
            temperature=None, top_p=None, top_k=None, eos_token_id=eos, pad_token_id=pad,
        )  # [batch, width + new]
    cots = []
    for row in out[:, width:].tolist():
        ends = [i for i, tok in enumerate(row) if tok in eos]
        new = row[: ends[0]] if ends else row  # what follows the end of turn is padding
        text = teacher.tokenizer.decode(new, skip_special_tokens=True)
        cots.append(GeneratedCot(text=text, ids=new, truncated=not ends and len(new) >= max_new_tokens))
    return cots


def use_vllm(cfg: CaptureConfig) -> bool:
    """True when the run generates its CoT, vLLM is importable, and CUDA is there."""
    if cfg.cot != "generate" or cfg.device == "cpu" or importlib.util.find_spec("vllm") is None:
        return False
    import torch

    return torch.cuda.is_available()


def generate_with_vllm(cfg: CaptureConfig, problems: list[Problem]) -> dict[str, GeneratedCot]:
    """Greedy CoTs for ``problems`` (problem id -> CoT), in one batched vLLM call."""
    from transformers import AutoTokenizer
    from vllm import LLM, SamplingParams

    from .model import Teacher, model_dir

    path = model_dir(cfg.teacher)
    shell = Teacher(model=None, tokenizer=AutoTokenizer.from_pretrained(path, local_files_only=True),
                    model_id=cfg.teacher)  # tokenizer only: prompt_parts and eos_ids need no weights
    parts, eos = shell.prompt_parts(), shell.eos_ids()
    prompts = [{"prompt_token_ids": prompt_tokens(shell, p.question, parts).prompt_ids} for p in problems]
    dtype = "auto" if cfg.dtype == "auto" else cfg.dtype
    llm = LLM(model=str(path), tokenizer=str(path), dtype=dtype, seed=0, gpu_memory_utilization=0.85)
    try:
        params = SamplingParams(temperature=0.0, max_tokens=cfg.max_new_tokens, stop_token_ids=eos)
        outputs = llm.generate(prompts, params, use_tqdm=cfg.progress)
    finally:
        del llm  # free the GPU for the eager teacher
        gc.collect()
        _empty_cuda_cache()
    cots = {}
    for problem, out in zip(problems, outputs, strict=True):
        ids = list(out.outputs[0].token_ids)
        hit_eos = bool(ids) and ids[-1] in eos
        if hit_eos:
            ids = ids[:-1]
        text = shell.tokenizer.decode(ids, skip_special_tokens=True)
        cots[problem.id] = GeneratedCot(text=text, ids=ids, truncated=not hit_eos and len(ids) >= cfg.max_new_tokens)
    log.info("vLLM generated %d chains of thought", len(cots))
    return cots


def _empty_cuda_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def build_tokens(teacher: Teacher, problem: Problem, cfg: CaptureConfig, parts: tuple[str, str],
                 generated=None) -> tuple[Tokens, dict]:
    """Prompt + CoT tokens (generated or reference) and CoT facts for the trace.

    ``generated`` is a CoT made beforehand (a batch of them, or vLLM's); else HF generates this one.
    """
    tokens = prompt_tokens(teacher, problem.question, parts)
    facts: dict = {"truncated": False, "retokenized_equal": None}
    if cfg.cot == "reference":
        if not problem.solution:
            raise CaptureError(problem.id, "--cot reference, but the problem has no reference solution")
        cot_text = problem.solution
    else:
        if generated is None:
            (generated,) = generate_cots(teacher, [tokens.prompt_ids], cfg.max_new_tokens)
        cot_text, gen_ids, truncated = generated.text, generated.ids, generated.truncated
        facts["truncated"] = truncated
    tokens.cot_ids, tokens.cot_offsets = tokenize(teacher.tokenizer, cot_text)
    if cfg.cot == "generate":
        facts["retokenized_equal"] = tokens.cot_ids == gen_ids
    if not tokens.cot_ids:
        raise CaptureError(problem.id, "empty chain of thought")
    facts["cot_text"] = cot_text
    return tokens, facts
