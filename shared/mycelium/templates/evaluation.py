"""How good are templates, in and out of sample, beside trivial taxonomies?

The IB clusters steps with their op labels Y in view, so scoring its templates on the same label sets
(in sample) cannot tell whether X, the step embeddings, adds anything. Here the steps are split by problem
(80/20); each taxonomy is fitted on the training steps and its clusters become centroids in X (cosine, after
the training steps' PCA); every held-out step goes to its nearest centroid, and the score is how well that
predicts its label set: purity (the cluster's majority label set on training, correct on held-out) and
I(T;Y) (label set as Y) over H(Y). Taxonomies: the IB templates at the operating point; grouping by exact
label set (its centroids predict a held-out step's set from X alone); k-means on X with as many clusters as
the IB found; the label-set groups with the IB's surface tension (sets under ``min_size`` steps join the
nearest large one); the 15 nearest training steps' majority set (no clusters at all); one cluster (the
majority label set).

>>> import numpy as np
>>> score(np.array([0, 0, 1, 1]), ["a", "a", "b", "c"], {0: "a", 1: "b"})["purity"]
0.75
"""

from __future__ import annotations

import hashlib
from collections import Counter

import numpy as np

from ..core.config import DiscoverConfig
from ..core.infotheory import entropy, mutual_information
from .assign import centroids, unit
from .ib import anneal, pca_basis, smooth_labels
from .taxonomy import memberships, operating_point, surface_tension, cut


def held_out(problem_ids: list[str], share: float = 0.2) -> np.ndarray:
    """[N] True for the steps of the problems held out: a hash of the problem id, so a problem's steps stay together."""
    bucket = [int(hashlib.sha256(p.encode()).hexdigest()[:8], 16) / 16**8 for p in problem_ids]
    return np.array(bucket) < share


def _space(X: np.ndarray, dims: int):
    mean, basis = pca_basis(X.astype(np.float64), dims)
    return lambda Z: unit((Z - mean) @ basis)


def score(assign: np.ndarray, sets: list[str], majority: dict[int, str]) -> dict:
    """Purity of ``assign`` against each cluster's majority set, and I(T;Y) / H(Y) with Y the label set."""
    ids = {s: i for i, s in enumerate(sorted(set(sets)))}
    joint = np.zeros((int(assign.max(initial=0)) + 1, len(ids)))
    np.add.at(joint, (assign, [ids[s] for s in sets]), 1.0)
    h_y = float(entropy(joint.sum(0) / max(joint.sum(), 1)))
    mi = mutual_information(joint) if joint.sum() else 0.0
    hits = sum(majority.get(int(a)) == s for a, s in zip(assign, sets))
    return {"purity": hits / max(1, len(sets)), "i_ty_nats": mi, "h_y_nats": h_y,
            "i_ty_share": mi / h_y if h_y > 0 else 0.0, "clusters": int(len(set(assign.tolist())))}


def _majority(assign: np.ndarray, sets: list[str]) -> dict[int, str]:
    by = {}
    for a, s in zip(assign.tolist(), sets):
        by.setdefault(a, Counter())[s] += 1
    return {a: c.most_common(1)[0][0] for a, c in by.items()}


def _ib(X: np.ndarray, Y: np.ndarray, cfg: DiscoverConfig) -> np.ndarray:
    """Hard IB templates of the rows (at the config's operating point, after surface tension)."""
    an = anneal(smooth_labels(X, Y, cfg), cfg)
    gain, _ = operating_point(an, cfg)
    templates, _ = surface_tension(an, cut(an, gain), cfg.min_size)
    return memberships(an, templates).argmax(1)


def evaluate(X: np.ndarray, Y: np.ndarray, sets: list[str], problem_ids: list[str], cfg: DiscoverConfig,
             share: float = 0.2, seed: int = 0) -> dict:
    """Every taxonomy's scores in sample (training steps) and out of sample (held-out problems' steps)."""
    from scipy.cluster.vq import kmeans2

    test = held_out(problem_ids, share)
    train = ~test
    if train.sum() < 10 or test.sum() < 5:
        raise ValueError(f"too few steps to hold out ({int(train.sum())} train, {int(test.sum())} held out)")
    embed = _space(X[train], cfg.pca_dims)
    E_train, E_test = embed(X[train]), embed(X[test])
    sets_train = [s for s, t in zip(sets, train) if t]
    sets_test = [s for s, t in zip(sets, test) if t]
    ib = _ib(X[train], Y[train], cfg)
    set_ids = {s: i for i, s in enumerate(sorted(set(sets_train)))}
    by_set = np.array([set_ids[s] for s in sets_train])
    k = int(len(set(ib.tolist())))
    _, km = kmeans2(E_train, k, seed=seed, minit="++") if k > 1 else (None, np.zeros(len(E_train), int))
    fits = {"ib": ib, "label_set": by_set, "label_set_min_size": _tension(E_train, by_set, cfg.min_size),
            "kmeans": km, "one_cluster": np.zeros(len(E_train), int)}
    out = {"steps": {"train": int(train.sum()), "held_out": int(test.sum())}, "methods": {}}
    for name, assign in fits.items():
        assign = np.unique(assign, return_inverse=True)[1]  # clusters 0..k-1
        majority = _majority(assign, sets_train)
        held = centroids(E_train, assign, int(assign.max()) + 1) @ E_test.T  # [k, held]
        out["methods"][name] = {"in_sample": score(assign, sets_train, majority),
                                "out_of_sample": score(held.argmax(0), sets_test, majority)}
    # no clusters at all: each held-out step takes the majority label set of its k nearest training steps
    nearest = np.argsort(-(E_test @ E_train.T), axis=1)[:, :KNN]  # [held, k]
    votes = [Counter(sets_train[j] for j in row).most_common(1)[0][0] for row in nearest]
    ids = {s: i for i, s in enumerate(sorted(set(votes)))}
    out["methods"][f"{KNN}_nearest_steps"] = {
        "in_sample": None, "out_of_sample": score(np.array([ids[v] for v in votes]), sets_test,
                                                  {i: s for s, i in ids.items()})}
    return out


#: Neighbours of the no-cluster baseline.
KNN = 15


def _tension(E: np.ndarray, assign: np.ndarray, min_size: int) -> np.ndarray:
    """Groups with fewer than ``min_size`` members join the nearest large group (by centroid): the same
    surface tension the IB templates get, so the label-set baseline is not handicapped by singletons."""
    sizes = np.bincount(assign)
    large = np.flatnonzero(sizes >= min_size)
    if not len(large):
        return np.zeros_like(assign)
    C = centroids(E, assign, len(sizes))
    home = large[(C @ C[large].T).argmax(1)]  # [groups] the large group nearest each group
    home[large] = large
    return home[assign]
