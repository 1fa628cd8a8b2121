"""The Information Bottleneck on synthetic data with planted templates."""

import numpy as np
import pytest

from mycelium.core.config import DiscoverConfig
from mycelium.templates.taxonomy import memberships, cut, elbow_gain, surface_tension
from mycelium.templates.ib import anneal, critical_beta, smooth_labels

SETS = [[0], [1], [0, 2], [3, 4], [5], [6, 1]]


DISJOINT = [[0], [1], [2, 3], [4], [5, 6], [8], [9, 10]]


def planted(k=5, n=600, d=24, vocab=12, tiny=0, seed=0, sets=SETS, noise=0.0):
    """k classes: a blob in X each, with its own op-label set; ``tiny`` extra points of a class of its own.

    With ``noise``, that share of steps carries a random label set instead of its class's.
    """
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k + 1, d)) * 6
    label = np.concatenate([rng.integers(0, k, size=n), np.full(tiny, k)])
    X = centers[label] + rng.normal(size=(len(label), d))
    proto = np.zeros((k + 1, vocab))
    for c, s in enumerate(sets[:k] + [[vocab - 1]]):
        proto[c, s] = 1.0 / len(s)
    Y = proto[label]
    flip = rng.random(len(label)) < noise
    Y[flip] = proto[rng.integers(0, k, size=flip.sum())]
    return X, Y, label


@pytest.fixture(scope="module")
def five():
    X, Y, label = planted(5)
    cfg = DiscoverConfig(min_size=20)
    return anneal(smooth_labels(X, Y, cfg), cfg), label, cfg


def _purity(an, templates, label):
    hard = memberships(an, templates).argmax(1)
    return np.mean([np.bincount(label[hard == t]).max() / (hard == t).sum() for t in range(len(templates))])


def test_recovers_the_planted_classes_at_the_threshold(five):
    an, label, cfg = five
    templates, _ = surface_tension(an, cut(an, cfg.gain), cfg.min_size)
    assert len(templates) == 5
    assert _purity(an, templates, label) == 1.0  # each template is one planted class


@pytest.mark.parametrize("k", [4, 6])
def test_recovers_the_planted_classes_at_the_elbow(k):
    X, Y, label = planted(k, n=900, sets=DISJOINT, noise=0.05, seed=k)
    cfg = DiscoverConfig(min_size=20)
    an = anneal(smooth_labels(X, Y, cfg), cfg)
    templates, _ = surface_tension(an, cut(an, elbow_gain(an)), cfg.min_size)
    assert len(templates) == k
    assert _purity(an, templates, label) > 0.95


def test_information_invariants_along_the_anneal(five):
    an, _, _ = five
    ity = [h["ity"] for h in an.history]
    for h in an.history:
        assert -1e-12 <= h["ity"] <= min(an.h_y, h["ht"]) + 1e-9
        assert h["ity"] <= h["ixt"] + 1e-9  # data processing: I(T;Y) <= I(X;T)
    assert all(b >= a - 1e-6 for a, b in zip(ity, ity[1:])), "I(T;Y) fell along the anneal"
    np.testing.assert_allclose(an.qtx.sum(1), 1.0, atol=1e-9)
    assert np.all(an.qtx >= 0)


def test_the_first_split_happens_at_the_predicted_critical_beta(five):
    an, _, cfg = five
    first = an.splits[0].beta
    assert an.beta_c <= first <= an.beta_c * cfg.beta_growth ** 2


def test_splits_record_parent_children_and_gain(five):
    an, _, _ = five
    for s in an.splits:
        assert all(an.parent[c] == s.parent for c in s.children) and an.children[s.parent] == s.children
        assert s.delta_ity > 0 and s.delta_ixt > 0 and s.gain > 0
    assert [s.beta for s in an.splits] == sorted(s.beta for s in an.splits)


def test_surface_tension_removes_a_planted_tiny_cluster():
    X, Y, label = planted(4, n=500, tiny=12)
    cfg = DiscoverConfig(min_size=30)
    an = anneal(smooth_labels(X, Y, cfg), cfg)
    raw = cut(an, cfg.gain)
    assert len(raw) == 5  # the tiny class is found...
    templates, absorbed = surface_tension(an, raw, cfg.min_size)
    assert len(templates) == 4 and absorbed and absorbed[0]["size"] == 12  # ...and reabsorbed
    assert _purity(an, templates, np.where(label == 4, -1, label) % 5) > 0.95
    kept, none = surface_tension(an, raw, 5)
    assert len(kept) == 5 and none == []


def test_a_small_class_that_splits_off_first_does_not_fold_the_taxonomy():
    """The tiny class has labels of its own, so it is the first split; absorbing it must keep the rest."""
    X, Y, label = planted(4, n=500, tiny=25, sets=DISJOINT)
    cfg = DiscoverConfig(min_size=40)
    an = anneal(smooth_labels(X, Y, cfg), cfg)
    raw = cut(an, cfg.gain)
    templates, absorbed = surface_tension(an, raw, cfg.min_size)
    assert len(raw) == 5 and len(templates) == 4 and len(absorbed) == 1
    sizes = np.bincount(memberships(an, templates).argmax(1))
    assert sizes.min() >= 100  # four real templates remain, none folded into the root


def test_critical_beta_of_independent_labels_is_infinite():
    pyx = np.tile([0.2, 0.3, 0.5], (50, 1))
    assert critical_beta(pyx, np.full(50, 1 / 50)) == float("inf")


def test_smoothing_keeps_distributions_positive_and_normalised():
    X, Y, _ = planted(3, n=60)
    p = smooth_labels(X, Y, DiscoverConfig())
    assert np.all(p > 0) and np.allclose(p.sum(1), 1.0)
