"""Analysis of per-token signal traces, vectorized (numpy + scipy; no loops over tokens).

>>> import numpy as np
>>> heartbeats(np.array([0, .9, .9, .9, .9, .9, 0, .8, .8, 0]), threshold=0.5, min_run=5)
1
"""

from __future__ import annotations

import numpy as np
from scipy.signal import find_peaks, savgol_filter


def smooth(trace: np.ndarray, window: int = 5, polyorder: int = 2) -> np.ndarray:
    """Savitzky–Golay smoothing over the last axis; traces shorter than the window are returned as is."""
    trace = np.asarray(trace, dtype=np.float64)
    if trace.shape[-1] < window:
        return trace.copy()
    return savgol_filter(trace, window, polyorder, axis=-1, mode="interp")


def peaks(trace: np.ndarray, prominence: float, distance: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and prominences of peaks of a 1-D trace."""
    idx, props = find_peaks(np.asarray(trace, dtype=np.float64), prominence=prominence, distance=max(1, distance))
    return idx, props["prominences"]


def runs_above(trace: np.ndarray, threshold: float, min_run: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Runs where ``trace >= threshold`` for at least ``min_run`` tokens.

    trace: [..., T]. Returns (row, start, end) arrays of the qualifying runs, where
    ``row`` is the flat index over the leading axes.
    """
    x = np.asarray(trace)
    flat = x.reshape(-1, x.shape[-1]) >= threshold  # [rows, T]
    padded = np.pad(flat.astype(np.int8), ((0, 0), (1, 1)))
    edges = np.diff(padded, axis=1)  # +1 at a run start, -1 one past its end
    rows_s, starts = np.nonzero(edges == 1)
    _, ends = np.nonzero(edges == -1)  # row-major order pairs each start with its end
    keep = ends - starts >= min_run
    return rows_s[keep], starts[keep], ends[keep]


def heartbeats(trace: np.ndarray, threshold: float = 0.5, min_run: int = 5) -> int | np.ndarray:
    """Number of computation pulses: runs of IAF >= threshold lasting >= min_run tokens.

    trace: [T] -> int; [..., T] -> counts of shape [...].
    """
    x = np.asarray(trace)
    rows, _, _ = runs_above(x, threshold, min_run)
    counts = np.bincount(rows, minlength=int(np.prod(x.shape[:-1], dtype=int)) or 1)
    return int(counts[0]) if x.ndim == 1 else counts.reshape(x.shape[:-1])


def snap(boundaries: np.ndarray, allowed: np.ndarray, max_shift: int) -> np.ndarray:
    """Move each boundary to the nearest allowed index within ``max_shift``; keep it where none is.

    boundaries: [B] token indices; allowed: [T] bool (e.g. word starts) -> [B], same order
    (two boundaries may land on one index: use ``np.unique`` on the result).
    """
    b = np.asarray(boundaries, dtype=np.int64)
    cand = np.flatnonzero(allowed)
    if b.size == 0 or cand.size == 0:
        return b.copy()
    pos = np.clip(np.searchsorted(cand, b), 1, max(1, cand.size - 1))
    left, right = cand[pos - 1], cand[np.minimum(pos, cand.size - 1)]
    nearest = np.where(np.abs(b - left) <= np.abs(right - b), left, right)
    return np.where(np.abs(nearest - b) <= max_shift, nearest, b)
