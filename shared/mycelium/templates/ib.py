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
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from ..core.config import DiscoverConfig
from ..core.infotheory import TINY, entropy, js, mutual_information, pairwise_kl

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


def neighbours(X: np.ndarray, k: int, dims: int, block: int = 1024) -> np.ndarray:
    """[N, k] indices of each row's k nearest other rows (cosine, after PCA), computed in blocks."""
    n = X.shape[0]
    k = min(k, n - 1)
    if k <= 0:
        return np.zeros((n, 0), dtype=np.int64)
    Z = pca(X.astype(np.float64), dims).astype(np.float32)
    Z /= np.linalg.norm(Z, axis=1, keepdims=True) + 1e-12
    out = np.empty((n, k), dtype=np.int64)
    for s in range(0, n, block):  # blocks of rows, so memory is [block, N]
        sims = Z[s:s + block] @ Z.T  # [b, N]
        sims[np.arange(sims.shape[0]), np.arange(s, s + sims.shape[0])] = -np.inf
        out[s:s + block] = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    return out


def smooth_labels(X: np.ndarray, Y: np.ndarray, cfg: DiscoverConfig) -> np.ndarray:
    """p(y|x): each step's labels mixed with its neighbours' and a small uniform floor. [N, V]"""
    Y = Y.astype(np.float64)
    nb = neighbours(X, cfg.neighbours, cfg.pca_dims)
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


# ---- the self-consistent equations ---------------------------------------------------------------


@dataclass
class State:
    qtx: np.ndarray  # [N, K] rows sum to 1
    qt: np.ndarray  # [K]
    qyt: np.ndarray  # [K, V]


def _stats(qtx: np.ndarray, px: np.ndarray, pyx: np.ndarray) -> State:
    qt = px @ qtx  # [K]
    qyt = (qtx * px[:, None]).T @ pyx / np.maximum(qt, TINY)[:, None]  # [K, V]
    return State(qtx, qt, qyt)


def iterate(qtx: np.ndarray, beta: float, pyx: np.ndarray, px: np.ndarray, tol: float, max_iter: int
            ) -> tuple[State, int]:
    """Iterate the IB equations at fixed beta until q(t|x) moves less than ``tol``."""
    it = 0
    for it in range(1, max_iter + 1):
        st = _stats(qtx, px, pyx)
        kl = pairwise_kl(pyx, st.qyt)  # [N, K] KL(p(y|x) || q(y|t))
        logits = np.log(np.maximum(st.qt, TINY))[None, :] - beta * kl  # [N, K]
        logits -= logits.max(1, keepdims=True)
        new = np.exp(logits)
        new /= new.sum(1, keepdims=True)
        delta = float(np.abs(new - qtx).max())
        qtx = new
        if delta < tol:
            break
    return _stats(qtx, px, pyx), it


def informations(st: State, px: np.ndarray) -> tuple[float, float]:
    """(I(X;T), I(T;Y)) in nats: the mutual information of p(x)q(t|x) and of q(t)q(y|t)."""
    return mutual_information(px[:, None] * st.qtx), mutual_information(st.qt[:, None] * st.qyt)


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

    def membership(self, node: int) -> np.ndarray:
        """q(node|x): the summed columns of the node's leaves. [N]"""
        cols = [i for i, leaf in enumerate(self.leaves) if self._descends(leaf, node)]
        return self.qtx[:, cols].sum(1)

    def _descends(self, leaf: int, node: int) -> bool:
        while leaf != node and leaf in self.parent:
            leaf = self.parent[leaf]
        return leaf == node


def anneal(pyx: np.ndarray, cfg: DiscoverConfig, progress=None) -> Anneal:
    """Deterministic annealing from one cluster; returns the final soft partition and the split tree."""
    rng = np.random.default_rng(cfg.seed)
    n, v = pyx.shape
    px = np.full(n, 1.0 / n)
    py = px @ pyx
    beta_c = critical_beta(pyx, px)
    beta = cfg.beta_start_fraction * (beta_c if np.isfinite(beta_c) else 1.0)
    qtx = np.ones((n, 1))
    leaves, parent, children, splits, history = [0], {}, {}, [], []
    next_id = 1
    st, _ = iterate(qtx, beta, pyx, px, cfg.tol, cfg.max_iter)
    beta_stop = min(cfg.beta_max, 2.0 / cfg.min_gain)
    while beta <= beta_stop and len(leaves) < cfg.max_clusters:
        k = st.qtx.shape[1]
        eta = rng.choice([-1.0, 1.0], size=(n, k))
        dup = np.concatenate([st.qtx * (0.5 + cfg.perturbation * eta), st.qtx * (0.5 - cfg.perturbation * eta)], axis=1)
        trial, _ = iterate(dup, beta, pyx, px, cfg.tol, cfg.max_iter)
        cols, new_leaves, kept = [], [], []
        for j in range(k):  # over clusters (few), not steps
            d = js(trial.qyt[j], trial.qyt[k + j])
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
        st, iters = iterate(np.stack(cols, 1), beta, pyx, px, cfg.tol, cfg.max_iter)
        leaves = new_leaves
        for node, c1, c2, d in kept:
            q1, q2 = st.qtx[:, leaves.index(c1)], st.qtx[:, leaves.index(c2)]
            d_ity, d_ixt = split_gain(q1, q2, px, pyx)
            splits.append(Split(beta, node, (c1, c2), d_ity, d_ixt, d, len(leaves)))
        ixt, ity = informations(st, px)
        ht = float(entropy(st.qt))
        history.append({"beta": beta, "clusters": len(leaves), "ixt": ixt, "ity": ity, "ht": ht, "iterations": iters})
        if progress:
            progress(beta, len(leaves), ity)
        beta *= cfg.beta_growth
    h_y = float(entropy(py))
    return Anneal(st.qtx, leaves, parent, children, splits, history, beta_c, h_y, pyx, px)

