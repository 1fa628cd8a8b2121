"""The Information Bottleneck's self-consistent equations at fixed beta, iterated (``templates.ib`` anneals).

    q(t)   = sum_x p(x) q(t|x)
    q(y|t) = sum_x p(x) q(t|x) p(y|x) / q(t)
    q(t|x) ∝ q(t) exp(-beta * KL(p(y|x) || q(y|t)))

Where the time goes: an iteration is a few passes over q(t|x) [N, K] (K up to twice ``max_clusters``
in a trial), and an anneal makes thousands. So KL(p(y|x) ‖ q(y|t)) for every x and t is one matrix product
(sum_y p log p, a constant of each x, computed once, minus p(y|x) @ log q(y|t).T), and the rest of the
update runs over blocks of rows that stay in cache, in threads. In float64 this computes every number the
whole-array update computed, in the same order, so the anneal is the same to the bit.

Two options make a different (equivalent) anneal: ``float32`` halves the memory traffic, and
:class:`DistinctRows` iterates over the distinct rows of p(y|x), each with its steps' summed p(x): the
equations see a step only through p(y|x), so after one update steps with the same p(y|x) have the same
q(t|x), and merging them changes only the rounding of the sums over x (neighbour-smoothed labels repeat:
42k synthetic steps have 13k distinct rows, GSM8K's 24k steps 758).

>>> import numpy as np
>>> rows = DistinctRows.of(np.array([[0.5, 0.5], [0.9, 0.1], [0.5, 0.5]]), np.full(3, 1 / 3))
>>> rows.pyx.tolist(), rows.inverse.tolist(), rows.px.round(3).tolist()
([[0.5, 0.5], [0.9, 0.1]], [0, 1, 0], [0.667, 0.333])
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ..core.infotheory import TINY, kl


@dataclass
class State:
    qtx: np.ndarray  # [N, K] rows sum to 1
    qt: np.ndarray  # [K]
    qyt: np.ndarray  # [K, V]


#: Bytes of one block of rows of q(t|x) updated at a time: the block's KL, softmax and change stay in cache
#: instead of streaming [N, K] through memory once per operation.
BLOCK_BYTES = 1 << 18


def default_workers() -> int:
    """Threads for the row blocks: OMP_NUM_THREADS where set (as BLAS reads it), else the CPUs."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    n = int(env) if env.isdigit() and int(env) > 0 else cpus
    return max(1, min(n, 16))


def _row_blocks(n: int, rows: int, workers: int) -> list[range]:
    """The starts of blocks of ``rows`` rows, in ``workers`` contiguous runs."""
    starts = range(0, n, rows)
    per = max(1, -(-len(starts) // workers))
    return [starts[i:i + per] for i in range(0, len(starts), per)]


class Equations:
    """The IB equations over fixed p(y|x) and p(x), with what every iteration reuses computed once.

    KL(p(y|x) ‖ q(y|t)) for every x and t is one matrix product: sum_y p log p (a constant of each x, kept
    here) minus p(y|x) @ log q(y|t).T. The rest of an update is row by row, so it runs in blocks of rows
    (in ``workers`` threads), and it also weighs the new q(t|x) by p(x) for the next q(y|t). In float64
    every number is the one the unblocked update computed (the same operations in the same order, the
    matrix products over all rows at once), so the anneal is the same to the bit for any ``workers``;
    ``float32`` halves the memory traffic but is a different anneal.
    """

    def __init__(self, pyx: np.ndarray, px: np.ndarray, dtype: str = "float64", workers: int = 1):
        self.dtype = np.dtype(dtype)
        self.pyx = np.ascontiguousarray(pyx, dtype=self.dtype)  # [N, V]
        self.px = np.ascontiguousarray(px, dtype=self.dtype)  # [N]
        self.neg_h = entropy_terms(pyx).astype(self.dtype)  # [N] sum_y p log p
        self.tiny = TINY if self.dtype == np.float64 else float(np.finfo(self.dtype).tiny)
        self.workers = workers
        self._pool = ThreadPoolExecutor(workers) if workers > 1 else None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()

    def weigh(self, qtx: np.ndarray, out: np.ndarray) -> np.ndarray:
        """q(t|x) p(x) into ``out``. [N, K]"""
        return np.multiply(qtx, self.px[:, None], out=out)

    def stats(self, qtx: np.ndarray, weighted: np.ndarray) -> State:
        """q(t) and q(y|t) of q(t|x); ``weighted`` is ``weigh(qtx)``."""
        qt = self.px @ qtx  # [K]
        return State(qtx, qt, weighted.T @ self.pyx / np.maximum(qt, self.tiny)[:, None])

    def update(self, st: State, beta: float, out: np.ndarray, weighted: np.ndarray) -> float:
        """q(t|x) ∝ q(t) exp(-beta KL(p(y|x) ‖ q(y|t))) into ``out`` and its ``weigh`` into ``weighted``
        (which ``st`` no longer needs); returns the largest change of any q(t|x)."""
        n, k = out.shape
        log_qy = np.log(np.maximum(st.qyt, self.tiny)).T  # [V, K]
        log_qt = np.log(np.maximum(st.qt, self.tiny))  # [K]
        np.matmul(self.pyx, log_qy, out=out)  # [N, K] sum_y p(y|x) log q(y|t); all rows in one product
        rows = max(16, BLOCK_BYTES // (k * self.dtype.itemsize))

        def run(starts: range) -> float:
            delta, change = 0.0, np.empty((rows, k), self.dtype)
            for s in starts:
                b = slice(s, s + rows)
                logits = out[b]
                np.subtract(self.neg_h[b, None], logits, out=logits)  # KL(p(y|x) ‖ q(y|t))
                np.multiply(logits, beta, out=logits)
                np.subtract(log_qt, logits, out=logits)
                logits -= logits.max(1, keepdims=True)
                new = np.exp(logits, out=logits)
                new /= new.sum(1, keepdims=True)
                np.multiply(new, self.px[b, None], out=weighted[b])
                d = np.subtract(new, st.qtx[b], out=change[: len(new)])
                delta = max(delta, float(np.abs(d, out=d).max()))
            return delta

        runs = _row_blocks(n, rows, self.workers)
        return max(self._pool.map(run, runs) if self._pool and len(runs) > 1 else map(run, runs))


def entropy_terms(p: np.ndarray) -> np.ndarray:
    """sum_y p log p of each row (the negative entropy): KL's constant part. [N, V] -> [N]"""
    return kl(p, np.ones_like(p))


def iterate(qtx: np.ndarray, beta: float, eq: Equations, tol: float, max_iter: int) -> tuple[State, int]:
    """Iterate the IB equations at fixed beta until q(t|x) moves less than ``tol``."""
    qtx = np.array(qtx, dtype=eq.dtype, order="C")  # a copy: it and ``new`` alternate
    new, weighted = np.empty_like(qtx), eq.weigh(qtx, np.empty_like(qtx))
    it = 0
    for it in range(1, max_iter + 1):
        delta = eq.update(eq.stats(qtx, weighted), beta, new, weighted)
        qtx, new = new, qtx
        if delta < tol:
            break
    return eq.stats(qtx, weighted), it


@dataclass
class DistinctRows:
    """The distinct rows of p(y|x), each weighted by the summed p(x) of its steps."""

    pyx: np.ndarray  # [U, V]
    px: np.ndarray  # [U]
    first: np.ndarray  # [U] a step of each row
    inverse: np.ndarray  # [N] the row of each step

    @classmethod
    def of(cls, pyx: np.ndarray, px: np.ndarray) -> "DistinctRows":
        rows, first, inverse = np.unique(pyx, axis=0, return_index=True, return_inverse=True)
        inverse = inverse.reshape(-1)
        return cls(rows, np.bincount(inverse, weights=px, minlength=len(rows)), first, inverse)
