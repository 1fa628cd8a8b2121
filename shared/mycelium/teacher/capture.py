"""Capture problems: their CoTs -> one teacher-forced forward pass (a batch) with the attention tap -> trace + chunk
per problem."""

from __future__ import annotations

import numpy as np

from ..core.config import CaptureConfig
from ..core.errors import CaptureError
from ..mathlang.answers import extract_answer, grade
from ..records.capture import Trace
from ..records.chunk import Chunk
from ..records.problems import Problem
from .model import Teacher
from .tap import HeadSet, forward_batch, resolve_hidden_layer
from .generation import build_tokens


def capture_problem(teacher: Teacher, problem: Problem, cfg: CaptureConfig, head_set: HeadSet,
                    parts: tuple[str, str], config_hash: str, generated=None) -> tuple[Trace, Chunk]:
    (out,) = capture_problems(teacher, [problem], cfg, head_set, parts, config_hash,
                              {problem.id: generated} if generated is not None else {})
    if isinstance(out, Exception):
        raise out
    return out


def capture_problems(teacher: Teacher, problems: list[Problem], cfg: CaptureConfig, head_set: HeadSet,
                     parts: tuple[str, str], config_hash: str,
                     generated: dict | None = None) -> list[tuple[Trace, Chunk] | CaptureError]:
    """Several problems in one teacher-forced pass: per problem its (trace, chunk), or the CaptureError that
    problem alone raised (its CoT could not be built, or it is longer than the context)."""
    generated = generated or {}
    out: list = [None] * len(problems)
    built = []
    for i, problem in enumerate(problems):
        try:
            tokens, facts = build_tokens(teacher, problem, cfg, parts, generated.get(problem.id))
            n = tokens.prompt_len + len(tokens.cot_ids)
            if n > teacher.context_len:
                raise CaptureError(problem.id, f"prompt + CoT is {n} tokens, over the teacher's context of "
                                               f"{teacher.context_len}")
            built.append((i, tokens, facts))
        except CaptureError as e:
            out[i] = e if e.problem_id == problem.id else CaptureError(problem.id, e.reason)
    if built:
        try:
            arrays = forward_batch(teacher, [tokens for _, tokens, _ in built], head_set, cfg)
        except CaptureError as e:  # a batch-wide failure (never a length: each was checked above)
            arrays = [CaptureError(problems[i].id, e.reason) for i, _, _ in built]
        for (i, tokens, facts), a in zip(built, arrays):
            out[i] = a if isinstance(a, CaptureError) else _records(teacher, problems[i], cfg, head_set, config_hash,
                                                                    tokens, facts, a)
    return out


def _records(teacher: Teacher, problem: Problem, cfg: CaptureConfig, head_set: HeadSet, config_hash: str,
             tokens, facts: dict, arrays: dict) -> tuple[Trace, Chunk]:
    answer = extract_answer(facts["cot_text"])
    correct, note = grade(problem.answer, answer)
    trace = Trace(
        problem_id=problem.id, question=problem.question, dataset=problem.source.dataset, subject=problem.subject,
        level=problem.level, model_id=teacher.model_id, cot_source=cfg.cot, prompt_text=tokens.prompt_text,
        prompt_len=tokens.prompt_len, problem_token_start=tokens.problem_start, problem_token_end=tokens.problem_end,
        problem_offsets=tokens.problem_offsets, cot_text=facts["cot_text"], cot_token_ids=tokens.cot_ids,
        cot_offsets=tokens.cot_offsets, truncated=facts["truncated"], retokenized_equal=facts["retokenized_equal"],
        answer_extracted=answer, correct=correct, grade_note=note,
    )
    meta = {
        "problem_id": problem.id, "model_id": teacher.model_id, "config_hash": config_hash,
        "dataset": problem.source.dataset, "prompt_len": tokens.prompt_len, "problem_token_start": tokens.problem_start,
        "n_problem_tokens": len(tokens.problem_offsets), "t_gen": len(tokens.cot_ids),
        "hidden_layer": resolve_hidden_layer(cfg, teacher.n_layers), "signals": cfg.signals.model_dump(),
        "signals_version": cfg.signals_version,
    }
    chunk = Chunk(meta=meta, head_set=np.array(head_set.pairs(), dtype=np.int16).reshape(-1, 2),
                  cot_token_ids=np.array(tokens.cot_ids, dtype=np.int32), **arrays)
    return trace, chunk
