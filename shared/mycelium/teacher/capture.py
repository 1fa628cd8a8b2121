"""Capture one problem: its CoT -> one teacher-forced forward pass with the attention tap -> trace + chunk."""

from __future__ import annotations

import numpy as np

from ..core.config import CaptureConfig
from ..core.errors import CaptureError
from ..mathlang.answers import extract_answer, grade
from ..records.capture import Trace
from ..records.chunk import Chunk
from ..records.problems import Problem
from .model import Teacher
from .tap import HeadSet, forward_signals, resolve_hidden_layer
from .generation import build_tokens


def capture_problem(teacher: Teacher, problem: Problem, cfg: CaptureConfig, head_set: HeadSet,
                    parts: tuple[str, str], config_hash: str, generated=None) -> tuple[Trace, Chunk]:
    tokens, facts = build_tokens(teacher, problem, cfg, parts, generated)
    try:
        arrays = forward_signals(teacher, tokens, head_set, cfg)
    except CaptureError as e:
        raise CaptureError(problem.id, e.reason) from e
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
