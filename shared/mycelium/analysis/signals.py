"""The attention signals, defined once. Each works on numpy arrays and on torch tensors.

Capture calls these on torch tensors where the full attention rows exist (on the
accelerator); later stages call them on numpy arrays read from chunks. torch is
never imported here, so Lambda stages need only numpy.

Conventions: an attention "row" is the distribution of one query over keys,
``rows[..., t, key]``. Generation-phase rows only: the queries are CoT tokens.
All logs are natural: JSD is in nats, with maximum ln 2.

The divergences and the entropy of a row are :mod:`mycelium.core.infotheory`'s.

>>> import numpy as np
>>> rows = np.array([[0.5, 0.5, 0.0], [0.0, 0.5, 0.5]])  # [t, key]
>>> [round(float(x), 4) for x in iaf(rows, np.array([True, False, False]))]
[0.5, 0.0]
"""

from __future__ import annotations

from typing import Any

import math

from ..core.infotheory import array_module, entropy

Array = Any  # numpy.ndarray or torch.Tensor

_EPS = 1e-12
LN2 = math.log(2.0)


def _is_torch(x: Array) -> bool:
    return type(x).__module__.startswith("torch")


def _to_float(x: Array, like: Array) -> Array:
    """Cast a bool/int array to ``like``'s float dtype."""
    return x.to(like.dtype) if _is_torch(x) else x.astype(like.dtype)


def renormalize(rows: Array, keep: Array) -> Array:
    """Zero the keys where ``keep`` is False and renormalise each row to sum 1.

    rows: [..., key]; keep: [key] bool. Attention sinks (first token, chat
    template) are excluded this way before every other signal.
    """
    kept = rows * _to_float(keep, rows)
    total = kept.sum(-1, keepdims=True) if not _is_torch(rows) else kept.sum(-1, keepdim=True)
    xp = array_module(rows)
    return kept / xp.where(total > _EPS, total, xp.ones_like(total))


def iaf(rows: Array, problem: Array) -> Array:
    """Input attention fraction: share of a (renormalised) row on problem keys.

    rows: [..., t, key]; problem: [key] bool  ->  [..., t]
    """
    return (rows * _to_float(problem, rows)).sum(-1)


def consecutive_jsd(rows: Array, row_entropy: Array | None = None) -> Array:
    """JSD between each row and the one before it.

    rows: [..., t+1, key] (row 0 is the reference for the first) -> [..., t].
    Causal rows already carry the zero that pads row t-1 at key t. Computed as
    JSD(p, q) = H((p + q) / 2) - (H(p) + H(q)) / 2, so with the rows' entropies
    (``row_entropy`` [..., t+1], which capture keeps anyway) it costs one more
    entropy, not two KLs; clipped to [0, ln 2] against rounding.
    """
    h = entropy(rows) if row_entropy is None else row_entropy  # [..., t+1]
    jsd = entropy(0.5 * (rows[..., 1:, :] + rows[..., :-1, :])) - 0.5 * (h[..., 1:] + h[..., :-1])
    return jsd.clip(0.0, LN2)


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


def chance_iaf(n_problem: int, n_visible_prompt: int, t_gen: int):
    """[T] the IAF of a row that spreads its attention evenly over the keys it may see.

    Row t sees ``n_visible_prompt`` prompt keys (``n_problem`` of them problem tokens) and the t CoT
    tokens before it, sinks excluded: chance(t) = P / (V0 + t). At t = 0 it is 1 when the template is
    masked: the row that writes the first CoT token can read nothing but the problem.
    """
    import numpy as np

    return n_problem / (n_visible_prompt + np.arange(t_gen, dtype=np.float64))


def iaf_over_chance(iaf, chance, min_room: float = 0.25):
    """IAF above chance, scaled to [.., 1]: (IAF - c) / (1 - c); 0 where 1 - c < ``min_room``.

    iaf: [..., T]; chance: [T]. 1 means every bit of attention the row could spend elsewhere went to the
    problem; 0 means no more than an even spread would give. IAF itself is a share of attention and starts
    at 1 by construction, so a heartbeat counted on it begins at token 0 in every problem. The first rows
    can spend almost nothing elsewhere: dividing by that little room turns noise into pulses (the spread
    across problems is 6x the late one at t = 1), so a row needs ``min_room`` of choice to give evidence.
    """
    import numpy as np

    room = 1.0 - chance
    ok = room >= max(min_room, 1e-9)
    return np.where(ok, (np.asarray(iaf, dtype=np.float64) - chance) / np.where(ok, room, 1.0), 0.0)


def visible_prompt_keys(meta: dict) -> int:
    """Prompt keys a generation-phase row sees once the sinks are excluded (from a chunk's meta)."""
    sig = meta.get("signals", {})
    if sig.get("exclude_template_tokens", True):
        return int(meta["n_problem_tokens"])
    return int(meta["prompt_len"]) - (1 if sig.get("exclude_first_token", True) else 0)
