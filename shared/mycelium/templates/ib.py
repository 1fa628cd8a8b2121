"""The Information Bottleneck by deterministic annealing (X = steps, Y = op labels).

For steps x with label distributions p(y|x) (smoothed over neighbours in the
embedding space so KL stays finite), find soft assignments q(t|x) minimising
I(X;T) - beta * I(T;Y) by iterating the self-consistent equations

    q(t)   = sum_x p(x) q(t|x)
    q(y|t) = sum_x p(x) q(t|x) p(y|x) / q(t)
    q(t|x) ∝ q(t) exp(-beta * KL(p(y|x) || q(y|t)))

while beta rises geometrically. At each beta every cluster is duplicated with a
small perturbation; a split is kept only where the copies' q(y|t) separate
(Jensen–Shannon above a threshold), else the copies merge back. Every kept
split is recorded with its beta, parent, children, gain in I(T;Y) and cost in
I(X;T). The first critical beta is predicted from the data: 1/rho^2, rho the
second singular value of p(x,y)/sqrt(p(x)p(y)) (the maximal correlation).

The time is in the iterations (``templates.equations``: blocks of rows in cache,
threads). With the defaults the anneal is the one every run so far made, to the
bit; ``distinct_rows`` (the equations over the distinct rows of p(y|x)) and
``dtype="float32"`` make an equivalent one, the same taxonomy on the runs measured,
in a fraction of the time (``benchmarks/ib.py``).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from ..core.config import DiscoverConfig
from ..core.infotheory import entropy, js, mutual_information
from .equations import DistinctRows, Equations, State, default_workers, iterate

log = logging.getLogger(__name__)


# ---- inputs ------------------------------------------------------------------------------------


def pca_basis(X: np.ndarray, dims: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean [d], basis [d, k]) of the top ``k = min(dims, d, N)`` principal components of the rows of X."""
    mean = X.mean(0)
    Xc = X - mean
    w, v = np.linalg.eigh(Xc.T @ Xc)  # [d, d]
    return mean, v[:, ::-1][:, : min(dims, X.shape[1], X.shape[0])]


def pca(X: np.ndarray, dims: int) -> np.ndarray:
    """Project rows of X onto their top principal components. [N, d] -> [N, min(dims, d, N)]"""
    mean, basis = pca_basis(X, dims)
    return (X - mean) @ basis


#: Memory the neighbour search's blocks may hold at once (each thread's similarities and their ranking).
NEIGHBOUR_BYTES = 2 << 30


def neighbours(X: np.ndarray, k: int, dims: int, block: int = 1024, workers: int = 1) -> np.ndarray:
    """[N, k] indices of each row's k nearest other rows (cosine, after PCA), computed in blocks of rows
    (memory [block, N] per thread; up to ``workers`` threads, each block the same computation whichever
    thread runs it, so the same neighbours in the same order)."""
    n = X.shape[0]
    k = min(k, n - 1)
    if k <= 0:
        return np.zeros((n, 0), dtype=np.int64)
    Z = pca(X.astype(np.float64), dims).astype(np.float32)
    Z /= np.linalg.norm(Z, axis=1, keepdims=True) + 1e-12
    out = np.empty((n, k), dtype=np.int64)
    workers = max(1, min(workers, int(NEIGHBOUR_BYTES // (12 * block * n))))  # a block: 4 + 8 bytes a pair

    def run(s: int) -> None:
        sims = Z[s:s + block] @ Z.T  # [b, N]
        sims[np.arange(sims.shape[0]), np.arange(s, s + sims.shape[0])] = -np.inf
        out[s:s + block] = np.argpartition(np.negative(sims, out=sims), k - 1, axis=1)[:, :k]

    starts = range(0, n, block)
    if workers > 1 and len(starts) > 1:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(run, starts))
    else:
        for s in starts:
            run(s)
    return out


def smooth_labels(X: np.ndarray, Y: np.ndarray, cfg: DiscoverConfig) -> np.ndarray:
    """p(y|x): each step's labels mixed with its neighbours' and a small uniform floor. [N, V]"""
    Y = Y.astype(np.float64)
    nb = neighbours(X, cfg.neighbours, cfg.pca_dims, workers=cfg.workers or default_workers())
    mixed = Y if nb.shape[1] == 0 else (1 - cfg.smoothing) * Y + cfg.smoothing * Y[nb].mean(1)
    p = (1 - cfg.label_floor) * mixed + cfg.label_floor / Y.shape[1]
    return p / p.sum(1, keepdims=True)


def critical_beta(pyx: np.ndarray, px: np.ndarray) -> float:
    """First critical beta of the trivial (one-cluster) solution: 1 / rho^2 (maximal correlation)."""
    py = px @ pyx  # [V]
    Q = np.sqrt(px)[:, None] * pyx / np.sqrt(py)[None, :]  # [N, V]
    ev = np.sort(np.linalg.eigvalsh(Q.T @ Q))[::-1]  # ev[0] = 1
    rho2 = float(ev[1]) if len(ev) > 1 else 0.0
    return 1.0 / rho2 if rho2 > 1e-12 else float("inf")


# ---- informations ------------------------------------------------------------------------------


def informations(st: State, px: np.ndarray) -> tuple[float, float]:
    """(I(X;T), I(T;Y)) in nats: the mutual information of p(x)q(t|x) and of q(t)q(y|t)."""
    qt, qyt = np.asarray(st.qt, np.float64), np.asarray(st.qyt, np.float64)
    return mutual_information(px[:, None] * st.qtx), mutual_information(qt[:, None] * qyt)


def split_gain(q1: np.ndarray, q2: np.ndarray, px: np.ndarray, pyx: np.ndarray) -> tuple[float, float]:
    """(ΔI(T;Y), ΔI(X;T)) of a parent split into children with memberships q1, q2 [N].

    Each is the parent's mass times an information within the parent: between the child and Y,
    and between the child and X.
    """
    q = np.stack([q1, q2], 1) * px[:, None]  # [N, 2] joint of x and child, within the parent
    mass = float(q.sum())
    d_ity = mass * mutual_information(q.T @ pyx)  # [2, V] joint of child and y
    d_ixt = mass * mutual_information(q)
    return d_ity, d_ixt


# ---- the anneal ----------------------------------------------------------------------------------


@dataclass
class Split:
    beta: float
    parent: int
    children: tuple[int, int]
    delta_ity: float  # gain in I(T;Y), nats
    delta_ixt: float  # cost in I(X;T), nats
    js: float
    n_clusters: int  # clusters after this split

    @property
    def gain(self) -> float:
        """Relevance gained per unit of compression spent: ΔI(T;Y) / ΔI(X;T) (≈ 1/beta at the split)."""
        return self.delta_ity / self.delta_ixt if self.delta_ixt > 0 else 0.0

    def to_json(self) -> dict:
        return {"beta": self.beta, "parent": self.parent, "children": list(self.children), "gain": self.gain,
                "delta_ity": self.delta_ity, "delta_ixt": self.delta_ixt, "js": self.js, "n_clusters": self.n_clusters}


@dataclass
class Anneal:
    qtx: np.ndarray  # [N, K] final soft assignments
    leaves: list[int]  # node id of each column of qtx
    parent: dict[int, int]  # node -> parent (root 0 has none)
    children: dict[int, tuple[int, int]]
    splits: list[Split]
    history: list[dict] = field(default_factory=list)  # beta, K, I(X;T), I(T;Y), iterations
    beta_c: float = float("inf")
    h_y: float = 0.0
    pyx: np.ndarray | None = None
    px: np.ndarray | None = None

    _memberships: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def membership(self, node: int) -> np.ndarray:
        """q(node|x): the summed columns of the node's leaves (computed once per node; read-only). [N]"""
        if node not in self._memberships:
            cols = [i for i, leaf in enumerate(self.leaves) if self._descends(leaf, node)]
            q = self.qtx[:, cols].sum(1)
            q.flags.writeable = False
            self._memberships[node] = q
        return self._memberships[node]

    def _descends(self, leaf: int, node: int) -> bool:
        while leaf != node and leaf in self.parent:
            leaf = self.parent[leaf]
        return leaf == node


def anneal(pyx: np.ndarray, cfg: DiscoverConfig, progress=None) -> Anneal:
    """Deterministic annealing from one cluster; returns the final soft partition and the split tree.

    With ``cfg.distinct_rows`` the equations run over the distinct rows of p(y|x) (``DistinctRows``), except
    each trial's first update, which runs over every step: its perturbation is drawn per step, as without.
    """
    rng = np.random.default_rng(cfg.seed)
    n, v = pyx.shape
    px = np.full(n, 1.0 / n)
    py = px @ pyx
    beta_c = critical_beta(pyx, px)
    beta = cfg.beta_start_fraction * (beta_c if np.isfinite(beta_c) else 1.0)
    workers = cfg.workers or default_workers()
    rows = DistinctRows.of(pyx, px) if cfg.distinct_rows else None
    steps = Equations(pyx, px, cfg.dtype, workers)
    eq = Equations(rows.pyx, rows.px, cfg.dtype, workers) if rows else steps
    wpyx, wpx = (rows.pyx, rows.px) if rows else (pyx, px)  # what the rows of q(t|x) are, and their mass
    leaves, parent, children, splits, history = [0], {}, {}, [], []
    next_id = 1
    try:
        st, _ = iterate(np.ones((len(wpx), 1)), beta, eq, cfg.tol, cfg.max_iter)
        beta_stop = min(cfg.beta_max, 2.0 / cfg.min_gain)
        while beta <= beta_stop and len(leaves) < cfg.max_clusters:
            k = st.qtx.shape[1]
            eta = rng.choice([-1.0, 1.0], size=(n, k))
            q = st.qtx[rows.inverse] if rows else st.qtx  # [N, K]
            dup = np.concatenate([q * (0.5 + cfg.perturbation * eta), q * (0.5 - cfg.perturbation * eta)], axis=1)
            trial = _trial(dup, beta, eq, steps, rows, cfg)
            cols, new_leaves, kept = [], [], []
            for j in range(k):  # over clusters (few), not steps
                d = js(trial.qyt[j].astype(np.float64), trial.qyt[k + j].astype(np.float64))
                if d > cfg.split_js and len(leaves) + len(kept) < cfg.max_clusters:
                    c1, c2 = next_id, next_id + 1
                    next_id += 2
                    parent[c1] = parent[c2] = leaves[j]
                    children[leaves[j]] = (c1, c2)
                    kept.append((leaves[j], c1, c2, d))
                    cols += [trial.qtx[:, j], trial.qtx[:, k + j]]
                    new_leaves += [c1, c2]
                else:  # the copies did not separate: merge them back
                    cols.append(trial.qtx[:, j] + trial.qtx[:, k + j])
                    new_leaves.append(leaves[j])
            st, iters = iterate(np.stack(cols, 1), beta, eq, cfg.tol, cfg.max_iter)
            leaves = new_leaves
            for node, c1, c2, d in kept:
                q1, q2 = st.qtx[:, leaves.index(c1)], st.qtx[:, leaves.index(c2)]
                d_ity, d_ixt = split_gain(q1, q2, wpx, wpyx)
                splits.append(Split(beta, node, (c1, c2), d_ity, d_ixt, d, len(leaves)))
            ixt, ity = informations(st, wpx)  # the same over steps or rows: a row's steps share q(t|x)
            ht = float(entropy(np.asarray(st.qt, np.float64)))
            history.append({"beta": beta, "clusters": len(leaves), "ixt": ixt, "ity": ity, "ht": ht, "iterations": iters})
            if progress:
                progress(beta, len(leaves), ity)
            beta *= cfg.beta_growth
    finally:
        steps.close()
        eq.close()
    h_y = float(entropy(py))
    qtx = np.asarray(st.qtx[rows.inverse] if rows else st.qtx, dtype=np.float64)  # [N, K] whatever the dtype
    return Anneal(qtx, leaves, parent, children, splits, history, beta_c, h_y, pyx, px)


def _trial(dup: np.ndarray, beta: float, eq: Equations, steps: Equations, rows: DistinctRows | None,
           cfg: DiscoverConfig) -> State:
    """The copies ``dup`` [N, 2K] iterated at ``beta``. Over distinct rows: the first update over every step
    (the steps of a row were perturbed apart), then from its result at one step of each row."""
    if rows is None:
        return iterate(dup, beta, eq, cfg.tol, cfg.max_iter)[0]
    dup = np.asarray(dup, dtype=steps.dtype)
    new, weighted = np.empty_like(dup), steps.weigh(dup, np.empty_like(dup))
    delta = steps.update(steps.stats(dup, weighted), beta, new, weighted)
    start = new[rows.first]
    if delta < cfg.tol:
        return eq.stats(start, eq.weigh(start, np.empty_like(start)))
    return iterate(start, beta, eq, cfg.tol, cfg.max_iter - 1)[0]
