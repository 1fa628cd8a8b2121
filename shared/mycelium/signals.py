"""Signal definitions, once. Each works on numpy arrays and on torch tensors.

Capture calls these on torch tensors where the full attention rows exist (on the
accelerator); later stages call them on numpy arrays read from chunks. torch is
never imported here, so Lambda stages need only numpy.

Conventions: an attention "row" is the distribution of one query over keys,
``rows[..., t, key]``. Generation-phase rows only: the queries are CoT tokens.
All logs are natural: JSD is in nats, with maximum ln 2.

>>> import numpy as np
>>> p = np.array([0.5, 0.5, 0.0, 0.0]); q = np.array([0.0, 0.0, 0.5, 0.5])
>>> float(jsd(p, q)).__round__(6) == round(float(np.log(2)), 6)
True
"""

from __future__ import annotations

from typing import Any

import numpy as np

Array = Any  # numpy.ndarray or torch.Tensor

_EPS = 1e-12


def _is_torch(x: Array) -> bool:
    return type(x).__module__.startswith("torch")


def _xp(x: Array):
    if _is_torch(x):
        import torch

        return torch
    return np


def _to_float(x: Array, like: Array) -> Array:
    """Cast a bool/int array to ``like``'s float dtype."""
    return x.to(like.dtype) if _is_torch(x) else x.astype(like.dtype)


def _xlogx_ratio(p: Array, q: Array) -> Array:
    """Elementwise p * log(p / q) with 0 log 0 = 0 (q > 0 wherever p > 0)."""
    xp = _xp(p)
    safe_p = xp.where(p > 0, p, xp.ones_like(p))
    safe_q = xp.where(p > 0, q, xp.ones_like(q))
    return xp.where(p > 0, p * xp.log(safe_p / safe_q), xp.zeros_like(p))


def renormalize(rows: Array, keep: Array) -> Array:
    """Zero the keys where ``keep`` is False and renormalise each row to sum 1.

    rows: [..., key]; keep: [key] bool. Attention sinks (first token, chat
    template) are excluded this way before every other signal.
    """
    kept = rows * _to_float(keep, rows)
    total = kept.sum(-1, keepdims=True) if not _is_torch(rows) else kept.sum(-1, keepdim=True)
    xp = _xp(rows)
    return kept / xp.where(total > _EPS, total, xp.ones_like(total))


def iaf(rows: Array, problem: Array) -> Array:
    """Input attention fraction: share of a (renormalised) row on problem keys.

    rows: [..., t, key]; problem: [key] bool  ->  [..., t]
    """
    return (rows * _to_float(problem, rows)).sum(-1)


def kl(p: Array, q: Array) -> Array:
    """KL(p || q) over the last axis, in nats."""
    return _xlogx_ratio(p, q).sum(-1)


def jsd(p: Array, q: Array) -> Array:
    """Jensen–Shannon divergence over the last axis, in nats (0 .. ln 2).

    The divergence itself: scipy's ``jensenshannon`` returns its square root.
    """
    m = 0.5 * (p + q)
    return 0.5 * kl(p, m) + 0.5 * kl(q, m)


def consecutive_jsd(rows: Array) -> Array:
    """JSD between each row and the one before it.

    rows: [..., t+1, key] (row 0 is the reference for the first) -> [..., t].
    Causal rows already carry the zero that pads row t-1 at key t.
    """
    return jsd(rows[..., 1:, :], rows[..., :-1, :])


def entropy(rows: Array) -> Array:
    """Shannon entropy of each row, in nats. rows: [..., key] -> [...]"""
    xp = _xp(rows)
    safe = xp.where(rows > 0, rows, xp.ones_like(rows))
    return -(xp.where(rows > 0, rows * xp.log(safe), xp.zeros_like(rows))).sum(-1)


def connectivity(rows: Array, threshold: float) -> Array:
    """Number of keys whose weight exceeds ``threshold``. rows: [..., key] -> [...]"""
    return _to_float(rows > threshold, rows).sum(-1)


def received_attention(rows: Array) -> Array:
    """Attention each key receives, summed over queries. rows: [..., t, key] -> [..., key]"""
    return rows.sum(-2)


def telegraph_score(iaf_trace: Array) -> Array:
    """How strongly an IAF trace switches between reading the problem and not.

    iaf_trace: [..., t] -> [...]: the standard deviation over t. A computing head's
    IAF is a telegraph wave (high variance); a head that always or never reads the
    problem is flat. Used to pick computing heads at calibration.
    """
    if _is_torch(iaf_trace):
        return iaf_trace.std(-1, correction=0)
    return iaf_trace.std(-1)
