"""Step boundaries: where the JSD trace peaks, where the CoT's own arithmetic says steps begin, and how
well one set matches another.

>>> import numpy as np
>>> boundary_match(np.array([3, 9]), np.array([4, 20]), tolerance=2)
(1, 1, 1)
"""

from __future__ import annotations

import numpy as np

from ..core.config import AnalyzeConfig
from ..mathlang.expressions import Found
from .text import sentence_starts
from .timeseries import peaks, smooth, snap


def reference_boundaries(cot: str, offsets: np.ndarray, found: list[Found]) -> np.ndarray:
    """Step boundaries implied by the CoT's own arithmetic: the first token of each sentence
    (or line) that holds a computation, except the CoT's first token."""
    if not found:
        return np.array([], np.int64)
    sent_starts = sentence_starts(cot)  # a CoT may start with spaces
    ref_chars = sent_starts[np.searchsorted(sent_starts, [f.start for f in found], side="right") - 1]
    ref = np.unique(np.searchsorted(offsets[:, 1], ref_chars, side="right"))
    return ref[(ref > 0) & (ref < len(offsets))]


def find_boundaries(jsd: np.ndarray, allowed: np.ndarray, cfg: AnalyzeConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Step boundaries from a JSD trace: Savitzky–Golay smoothing, peaks, snapped to allowed tokens.

    jsd: [T]; allowed: [T] bool (word starts). Returns (boundaries, their prominences, smoothed trace).
    """
    T = len(jsd)
    smoothed = smooth(jsd, cfg.savgol_window, cfg.savgol_polyorder)  # [T]
    spread = float(smoothed.std())
    # A flat trace smooths to float noise (~1e-18), which must not read as peaks.
    if spread <= 1e-9 * max(1.0, float(np.abs(smoothed).max(initial=0.0))):
        return np.array([], np.int64), np.array([]), smoothed
    idx, prom = peaks(smoothed, cfg.peak_prominence * spread, cfg.peak_distance)
    snapped = snap(idx, allowed, cfg.snap_tokens)  # [peaks]
    inside = (snapped > 0) & (snapped < T)
    bounds, which = np.unique(snapped[inside], return_inverse=True)
    prom_by_bound = np.zeros(len(bounds))
    np.maximum.at(prom_by_bound, which, prom[inside])  # two peaks snapped together keep the larger
    return bounds, prom_by_bound, smoothed


def boundary_match(pred: np.ndarray, ref: np.ndarray, tolerance: int = 2) -> tuple[int, int, int]:
    """(tp, fp, fn) of predicted against reference boundaries, one-to-one within ``tolerance`` tokens.

    Greedy by distance: the closest pairs are matched first.
    """
    pred, ref = np.unique(np.asarray(pred, dtype=np.int64)), np.unique(np.asarray(ref, dtype=np.int64))
    if pred.size == 0 or ref.size == 0:
        return 0, int(pred.size), int(ref.size)
    dist = np.abs(pred[:, None] - ref[None, :])  # [P, R]
    pi, ri = np.nonzero(dist <= tolerance)
    order = np.argsort(dist[pi, ri], kind="stable")
    used_p, used_r, tp = set(), set(), 0
    for a, b in zip(pi[order], ri[order]):  # over candidate pairs (few), not tokens
        if a not in used_p and b not in used_r:
            used_p.add(a)
            used_r.add(b)
            tp += 1
    return tp, int(pred.size) - tp, int(ref.size) - tp


def prf(tp: int, fp: int, fn: int) -> dict[str, float]:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0}
