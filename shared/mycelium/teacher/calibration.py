"""Find a run's computing heads: the heads whose IAF switches most between reading the problem and not."""

from __future__ import annotations

import logging

import numpy as np

from ..analysis import signals
from ..core.config import CaptureConfig
from ..core.errors import CaptureError
from ..records.capture import Calibration
from ..records.problems import Problem
from .model import Teacher
from .tap import HeadSet, forward_signals
from .generation import build_tokens

log = logging.getLogger(__name__)


def calibrate(teacher: Teacher, problems: list[Problem], cfg: CaptureConfig, parts: tuple[str, str]) -> Calibration:
    """Find the computing heads: those whose IAF switches most between reading the problem and not."""
    means_only = HeadSet(teacher.n_layers)
    scores, used = [], []
    for problem in problems:
        try:
            tokens, _ = build_tokens(teacher, problem, cfg, parts)
            arrays = forward_signals(teacher, tokens, means_only, cfg)
        except CaptureError as e:
            log.warning("calibration skips %s: %s", problem.id, e)
            continue
        scores.append(signals.telegraph_score(arrays["iaf"].astype(np.float32)))  # [L, H]
        used.append(problem.id)
    if not scores:
        raise CaptureError("calibration", "no calibration problem could be captured")
    mean = np.mean(scores, axis=0)  # [L, H]
    k = min(cfg.n_computing_heads, mean.size)
    top = np.argsort(-mean, axis=None, kind="stable")[:k]
    heads = sorted((int(i) // mean.shape[1], int(i) % mean.shape[1]) for i in top)
    return Calibration(problem_ids=used, scores=np.round(mean, 6).tolist(), computing_heads=heads)
