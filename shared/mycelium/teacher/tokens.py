"""Exact token geometry of prompt + CoT: the problem's tokens are tokenized on their own, so their offsets are exact."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..core.config import CaptureConfig
from ..core.errors import CaptureError
from ..records.problems import Problem
from .model import Teacher


@dataclass
class Tokens:
    """Exact token geometry of prompt + CoT. Offsets are into each piece's own text."""

    prompt_ids: list[int]
    problem_start: int  # first problem token position in the prompt
    problem_offsets: list[tuple[int, int]]  # into problem.question
    prompt_text: str
    cot_ids: list[int] = field(default_factory=list)
    cot_offsets: list[tuple[int, int]] = field(default_factory=list)

    @property
    def prompt_len(self) -> int:
        return len(self.prompt_ids)

    @property
    def problem_end(self) -> int:
        return self.problem_start + len(self.problem_offsets)


def _tokenize(tokenizer, text: str, untrusted: bool = True) -> tuple[list[int], list[tuple[int, int]]]:
    # Dataset and model text must not become control tokens: "<|im_end|>" in a problem is text.
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, split_special_tokens=untrusted)
    return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]


def prompt_tokens(teacher: Teacher, question: str, parts: tuple[str, str]) -> Tokens:
    """Tokenize chat-template prefix, problem and suffix separately so problem offsets are exact."""
    prefix, suffix = parts
    pre_ids, _ = _tokenize(teacher.tokenizer, prefix, untrusted=False)
    q_ids, q_offsets = _tokenize(teacher.tokenizer, question)
    suf_ids, _ = _tokenize(teacher.tokenizer, suffix, untrusted=False)
    bos = teacher.tokenizer.bos_token_id
    if getattr(teacher.tokenizer, "add_bos_token", False) and bos is not None and (not pre_ids or pre_ids[0] != bos):
        pre_ids = [bos] + pre_ids
    return Tokens(
        prompt_ids=pre_ids + q_ids + suf_ids,
        problem_start=len(pre_ids),
        problem_offsets=q_offsets,
        prompt_text=prefix + question + suffix,
    )


def build_tokens(teacher: Teacher, problem: Problem, cfg: CaptureConfig, parts: tuple[str, str],
                 generated=None) -> tuple[Tokens, dict]:
    """Prompt + CoT tokens (generated or reference) and CoT facts for the trace.

    ``generated`` is a CoT made beforehand (``generation.GeneratedCot``, e.g. by vLLM); else HF generates it.
    """
    tokens = prompt_tokens(teacher, problem.question, parts)
    facts: dict = {"truncated": False, "retokenized_equal": None}
    if cfg.cot == "reference":
        if not problem.solution:
            raise CaptureError(problem.id, "--cot reference, but the problem has no reference solution")
        cot_text = problem.solution
    else:
        if generated is not None:
            cot_text, gen_ids, truncated = generated.text, generated.ids, generated.truncated
        else:
            from .generation import generate_cot

            cot_text, gen_ids, truncated = generate_cot(teacher, tokens, cfg.max_new_tokens)
        facts["truncated"] = truncated
    tokens.cot_ids, tokens.cot_offsets = _tokenize(teacher.tokenizer, cot_text)
    if cfg.cot == "generate":
        facts["retokenized_equal"] = tokens.cot_ids == gen_ids
    if not tokens.cot_ids:
        raise CaptureError(problem.id, "empty chain of thought")
    facts["cot_text"] = cot_text
    return tokens, facts
