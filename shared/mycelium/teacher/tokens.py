"""Exact token geometry of prompt + CoT: the problem's tokens are tokenized on their own, so their offsets are exact."""

from __future__ import annotations

from dataclasses import dataclass, field

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


def tokenize(tokenizer, text: str, untrusted: bool = True) -> tuple[list[int], list[tuple[int, int]]]:
    # Dataset and model text must not become control tokens: "<|im_end|>" in a problem is text.
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, split_special_tokens=untrusted)
    return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]


def prompt_tokens(teacher: Teacher, question: str, parts: tuple[str, str]) -> Tokens:
    """Tokenize chat-template prefix, problem and suffix separately so problem offsets are exact."""
    prefix, suffix = parts
    pre_ids, _ = tokenize(teacher.tokenizer, prefix, untrusted=False)
    q_ids, q_offsets = tokenize(teacher.tokenizer, question)
    suf_ids, _ = tokenize(teacher.tokenizer, suffix, untrusted=False)
    bos = teacher.tokenizer.bos_token_id
    if getattr(teacher.tokenizer, "add_bos_token", False) and bos is not None and (not pre_ids or pre_ids[0] != bos):
        pre_ids = [bos] + pre_ids
    return Tokens(
        prompt_ids=pre_ids + q_ids + suf_ids,
        problem_start=len(pre_ids),
        problem_offsets=q_offsets,
        prompt_text=prefix + question + suffix,
    )
