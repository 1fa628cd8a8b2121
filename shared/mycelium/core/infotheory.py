"""Information measures, defined once. Natural logs (nats); numpy arrays or torch tensors alike.

Every KL, Jensen–Shannon, entropy and mutual information in Mycelium is one of these:
the attention signals (JSD between consecutive rows, row entropy) on the accelerator at
capture, and the Information Bottleneck's self-consistent equations and split gains.

>>> import numpy as np
>>> p, q = np.array([0.5, 0.5, 0.0, 0.0]), np.array([0.0, 0.0, 0.5, 0.5])
>>> bool(np.isclose(js(p, q), np.log(2)))
True
>>> float(mutual_information(np.array([[0.5, 0.0], [0.0, 0.5]]))) == float(np.log(2))
True
"""

from __future__ import annotations

from typing import Any

import numpy as np

Array = Any  # numpy.ndarray or torch.Tensor
TINY = 1e-300  # clamps a probability before its log where a zero would make a finite quantity infinite


def array_module(x: Array):
    """numpy, or torch for a torch tensor (imported only then)."""
    if type(x).__module__.startswith("torch"):
        import torch

        return torch
    return np


def xlogx_ratio(p: Array, q: Array) -> Array:
    """Elementwise p · log(p / q), with 0 · log 0 = 0 (q must be > 0 wherever p > 0)."""
    xp = array_module(p)
    safe_p = xp.where(p > 0, p, xp.ones_like(p))
    safe_q = xp.where(p > 0, q, xp.ones_like(q))
    return xp.where(p > 0, p * xp.log(safe_p / safe_q), xp.zeros_like(p))


def kl(p: Array, q: Array) -> Array:
    """KL(p ‖ q) over the last axis. p, q: [..., n] -> [...]"""
    return xlogx_ratio(p, q).sum(-1)


def js(p: Array, q: Array) -> Array:
    """Jensen–Shannon divergence over the last axis, 0 .. ln 2. p, q: [..., n] -> [...]

    The divergence itself: scipy's ``jensenshannon`` returns its square root.
    """
    m = 0.5 * (p + q)
    return 0.5 * kl(p, m) + 0.5 * kl(q, m)


def entropy(p: Array) -> Array:
    """Shannon entropy over the last axis, with 0 · log 0 = 0. p: [..., n] -> [...]"""
    if type(p).__module__.startswith("torch"):
        import torch

        return -torch.special.xlogy(p, p).sum(-1)
    from scipy.special import xlogy

    return -xlogy(p, p).sum(-1)


def pairwise_kl(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """KL(p_i ‖ q_j) for every pair of rows, as one matrix product. p: [N, V], q: [K, V] -> [N, K]

    ``q`` is clamped at TINY, so a label q never saw costs a large but finite amount.
    """
    return kl(p, np.ones_like(p))[:, None] - p @ np.log(np.maximum(q, TINY)).T


def mutual_information(joint: np.ndarray) -> float:
    """I(A;B) of the joint distribution p(a, b) ∝ ``joint`` (a non-negative matrix [A, B], normalised here).

    A cluster's share of an information: ``mass * mutual_information(part)`` where ``part`` is the
    joint restricted to the cluster (this is how a split's gains are computed in ``templates.ib``).
    """
    joint = np.asarray(joint, dtype=np.float64)
    joint = joint / max(float(joint.sum()), TINY)
    pa, pb = joint.sum(1, keepdims=True), joint.sum(0, keepdims=True)
    return max(0.0, float(xlogx_ratio(joint, np.maximum(pa * pb, TINY)).sum()))
