"""Step boundaries: where the JSD trace peaks, where the text's layout breaks, where the CoT starts writing
each calculation (the reference), and how well one set matches another.

The reference is not layout: it is the first token of each calculation's own text (the arithmetic the CoT
writes, or its calculator annotation), so "every line start", which reads no attention, cannot match it
by construction. The segmentations compared against it (:func:`segment`): JSD peaks, line starts, sentence
starts, and line starts ranked by JSD (does attention pick which lines start a step?).

>>> import numpy as np
>>> boundary_match(np.array([3, 5]), np.array([1, 4]), tolerance=2)  # a maximum matching: both pair up
(2, 0, 0)
"""

from __future__ import annotations

import numpy as np

from ..core.config import AnalyzeConfig
from ..mathlang.expressions import Found, calculation_start
from .text import line_spans, sentence_starts
from .timeseries import peaks, smooth, snap


def _tokens_at(offsets: np.ndarray, chars) -> np.ndarray:
    """The token that holds each character offset (the first token ending after it)."""
    return np.searchsorted(offsets[:, 1], np.asarray(chars, dtype=np.int64), side="right")


def _inside(tokens: np.ndarray, T: int) -> np.ndarray:
    """Unique boundaries strictly inside the CoT: token 0 starts it and is never a boundary."""
    tokens = np.unique(np.asarray(tokens, dtype=np.int64))
    return tokens[(tokens > 0) & (tokens < T)]


def calculation_starts(cot: str, offsets: np.ndarray, found: list[Found]) -> np.ndarray:
    """The reference: the first token of each calculation's own text. offsets: [T, 2] -> [B] token indices."""
    return _inside(_tokens_at(offsets, [calculation_start(cot, f) for f in found]), len(offsets))


def layout_starts(cot: str, offsets: np.ndarray, unit: str) -> np.ndarray:
    """The first token of every line (``"line"``) or sentence (``"sentence"``) of the CoT. -> [B]"""
    chars = [s for s, _ in line_spans(cot)] if unit == "line" else sentence_starts(cot)
    return _inside(_tokens_at(offsets, chars), len(offsets))


def ranked(candidates: np.ndarray, score: np.ndarray, k: int, window: int) -> np.ndarray:
    """The ``k`` candidates with the highest ``score`` within ``window`` tokens of them. score: [T] -> [<= k]"""
    if k <= 0 or not len(candidates):
        return np.array([], np.int64)
    padded = np.pad(score, window, mode="edge")
    local = np.stack([padded[c: c + 2 * window + 1].max() for c in candidates])  # over candidates (a few lines)
    return np.sort(candidates[np.argsort(-local, kind="stable")[:k]])


METHODS = ("jsd", "lines", "sentences", "jsd_lines")


def segment(method: str, jsd_bounds: np.ndarray, smoothed: np.ndarray, cot: str, offsets: np.ndarray,
            window: int) -> np.ndarray:
    """Step boundaries by ``method``: JSD peaks; every line or sentence start; or as many line starts as JSD
    has peaks, the ones where the smoothed JSD is highest (attention choosing among the layout's breaks)."""
    if method == "jsd":
        return jsd_bounds
    if method == "lines":
        return layout_starts(cot, offsets, "line")
    if method == "sentences":
        return layout_starts(cot, offsets, "sentence")
    if method == "jsd_lines":
        return ranked(layout_starts(cot, offsets, "line"), smoothed, len(jsd_bounds), window)
    raise ValueError(f"segmentation {method!r}: one of {METHODS}")


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
    """(tp, fp, fn) of predicted against reference boundaries under a maximum one-to-one matching within
    ``tolerance`` tokens.

    Every reference's window [r - tol, r + tol] has the same width, so taking references left to right and
    giving each the leftmost unmatched prediction in its window is a maximum matching (the exchange argument
    of interval scheduling); a greedy match by distance is not (pred [3, 5] vs ref [1, 4] would give 1).
    """
    pred, ref = np.unique(np.asarray(pred, dtype=np.int64)), np.unique(np.asarray(ref, dtype=np.int64))
    tp, i = 0, 0
    for r in ref:  # over reference boundaries (a handful per problem), not tokens
        while i < pred.size and pred[i] < r - tolerance:
            i += 1
        if i < pred.size and pred[i] <= r + tolerance:
            tp += 1
            i += 1
    return tp, int(pred.size) - tp, int(ref.size) - tp


def prf(tp: int, fp: int, fn: int) -> dict[str, float]:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0}
