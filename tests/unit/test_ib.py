"""The Information Bottleneck on synthetic data with planted templates."""

import numpy as np
import pytest

from mycelium.core.config import DiscoverConfig
from mycelium.core.infotheory import TINY, entropy, kl, pairwise_kl
from mycelium.templates import equations, ib
from mycelium.templates.equations import DistinctRows, Equations, entropy_terms, iterate
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


# ---- the equations, blocked and threaded, against their definition --------------------------------------------


def _naive_update(pyx, px, qtx, beta):
    """One IB update straight from the definitions, a loop over (x, t) pairs."""
    qt = px @ qtx
    qyt = (qtx * px[:, None]).T @ pyx / qt[:, None]
    kl_xt = np.array([[float(kl(p, q)) for q in qyt] for p in pyx])  # [N, K]
    new = qt[None, :] * np.exp(-beta * kl_xt)
    return new / new.sum(1, keepdims=True), kl_xt


def _whole_array_update(pyx, px, qtx, beta):
    """The update as one expression over whole arrays (the anneal before it ran in blocks)."""
    qt = px @ qtx
    qyt = (qtx * px[:, None]).T @ pyx / np.maximum(qt, TINY)[:, None]
    logits = np.log(np.maximum(qt, TINY))[None, :] - beta * pairwise_kl(pyx, qyt)
    logits -= logits.max(1, keepdims=True)
    new = np.exp(logits)
    return new / new.sum(1, keepdims=True)


def _problem(n, k, v=7, seed=0):
    rng = np.random.default_rng(seed)
    pyx = rng.dirichlet(np.full(v, 0.4), size=n) * 0.98 + 0.02 / v
    return pyx, np.full(n, 1.0 / n), rng.dirichlet(np.full(k, 0.3), size=n)


def test_the_vectorised_kl_is_the_kl_of_every_pair():
    pyx, px, qtx = _problem(40, 6)
    qyt = (qtx * px[:, None]).T @ pyx / (px @ qtx)[:, None]
    naive = np.array([[float(kl(p, q)) for q in qyt] for p in pyx])
    vectorised = entropy_terms(pyx)[:, None] - pyx @ np.log(qyt).T  # what Equations.update computes
    np.testing.assert_allclose(vectorised, naive, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(entropy_terms(pyx), -entropy(pyx), rtol=1e-13)


def test_an_update_is_the_definition():
    pyx, px, qtx = _problem(40, 6)
    eq = Equations(pyx, px)
    out, w = np.empty_like(qtx), eq.weigh(qtx, np.empty_like(qtx))
    delta = eq.update(eq.stats(qtx, w), 2.5, out, w)
    expect, _ = _naive_update(pyx, px, qtx, 2.5)
    np.testing.assert_allclose(out, expect, rtol=1e-9, atol=1e-15)
    assert delta == pytest.approx(np.abs(expect - qtx).max(), rel=1e-9)
    np.testing.assert_array_equal(w, out * px[:, None])  # weighed for the next q(y|t)


@pytest.mark.parametrize("n, k", [(1000, 236), (700, 37), (50, 1)])
@pytest.mark.parametrize("block_bytes, workers", [(1 << 12, 1), (1 << 12, 3), (1 << 18, 2), (1 << 30, 1)])
def test_blocks_and_threads_compute_the_whole_array_update_to_the_bit(monkeypatch, n, k, block_bytes, workers):
    """Blocks of rows and threads change no bit of any iteration (so the anneal and the runs' taxonomies
    stay what they were). 236 columns: a width where BLAS rounds a block of rows differently from all rows."""
    monkeypatch.setattr(equations, "BLOCK_BYTES", block_bytes)
    pyx, px, qtx = _problem(n, k, v=12)
    eq = Equations(pyx, px, workers=workers)
    try:
        q, its = qtx, 0
        for beta in (0.7, 3.0, 9.0):
            expect = q
            for _ in range(4):
                expect = _whole_array_update(pyx, px, expect, beta)
            st, its = iterate(q, beta, eq, tol=0.0, max_iter=4)
            assert its == 4
            np.testing.assert_array_equal(st.qtx, expect)
            q = st.qtx
    finally:
        eq.close()


@pytest.mark.parametrize("noise", [0.0, 0.1])
@pytest.mark.parametrize("fast", [{"dtype": "float32"}, {"workers": 2}, {"distinct_rows": True},
                                  {"distinct_rows": True, "dtype": "float32"}])
def test_the_fast_settings_find_the_same_splits_as_the_exact_anneal(fast, noise):
    """On a planted problem the fast settings find the same split tree (betas, parents, children) and the same
    templates, each step in the same one. Threads: the same anneal to the bit; distinct rows: to rounding
    (the same iterations); float32: informations within 1e-4 nats."""
    X, Y, _ = planted(5, noise=noise, sets=DISJOINT)
    cfg = DiscoverConfig(min_size=20)
    pyx = smooth_labels(X, Y, cfg)
    exact, an = anneal(pyx, cfg), anneal(pyx, cfg.model_copy(update=fast))
    assert len(an.splits) >= 4
    assert [(s.beta, s.parent, s.children, s.n_clusters) for s in an.splits] == \
           [(s.beta, s.parent, s.children, s.n_clusters) for s in exact.splits]
    ours, theirs = (surface_tension(a, cut(a, cfg.gain), cfg.min_size)[0] for a in (exact, an))
    assert ours == theirs and len(ours) == 5
    np.testing.assert_array_equal(memberships(an, theirs).argmax(1), memberships(exact, ours).argmax(1))
    assert an.qtx.shape == exact.qtx.shape and an.qtx.dtype == np.float64
    for a, b in zip(exact.history, an.history):
        assert abs(a["ity"] - b["ity"]) < 1e-4 and abs(a["ixt"] - b["ixt"]) < 1e-4
    if "dtype" not in fast:
        assert [h["iterations"] for h in an.history] == [h["iterations"] for h in exact.history]
        np.testing.assert_allclose(an.qtx, exact.qtx, rtol=0, atol=1e-10)
    if fast == {"workers": 2}:
        np.testing.assert_array_equal(an.qtx, exact.qtx)
        assert [s.to_json() for s in an.splits] == [s.to_json() for s in exact.splits] and an.history == exact.history


def test_distinct_rows_are_the_steps_rows_with_their_summed_mass():
    pyx = np.array([[0.5, 0.5], [0.9, 0.1], [0.5, 0.5], [0.9, 0.1], [0.2, 0.8]])
    px = np.array([0.1, 0.2, 0.3, 0.25, 0.15])
    rows = DistinctRows.of(pyx, px)
    assert len(rows.pyx) == 3
    np.testing.assert_array_equal(rows.pyx[rows.inverse], pyx)
    np.testing.assert_array_equal(pyx[rows.first], rows.pyx)
    assert {tuple(r): round(m, 12) for r, m in zip(rows.pyx.tolist(), rows.px)} == \
           {(0.5, 0.5): 0.4, (0.9, 0.1): 0.45, (0.2, 0.8): 0.15}


def test_an_update_over_distinct_rows_is_the_update_over_steps():
    """Steps with the same p(y|x) and q(t|x): the rows' q(t), q(y|t) and next q(t|x) are the steps'."""
    pyx, _, _ = _problem(30, 4)
    pyx = pyx[np.random.default_rng(3).integers(0, 30, size=400)]  # 400 steps, at most 30 distinct rows
    px = np.random.default_rng(4).dirichlet(np.ones(400))
    rows = DistinctRows.of(pyx, px)
    q_rows = np.random.default_rng(5).dirichlet(np.ones(6), size=len(rows.pyx))
    q_steps = q_rows[rows.inverse]
    steps, eq = Equations(pyx, px), Equations(rows.pyx, rows.px)
    a = steps.stats(q_steps, steps.weigh(q_steps, np.empty_like(q_steps)))
    w = eq.weigh(q_rows, np.empty_like(q_rows))
    b = eq.stats(q_rows, w)
    np.testing.assert_allclose(b.qt, a.qt, rtol=1e-12)
    np.testing.assert_allclose(b.qyt, a.qyt, rtol=1e-12)
    out_steps, out_rows = np.empty_like(q_steps), np.empty_like(q_rows)
    steps.update(a, 4.0, out_steps, steps.weigh(q_steps, np.empty_like(q_steps)))
    eq.update(b, 4.0, out_rows, w)
    np.testing.assert_allclose(out_rows[rows.inverse], out_steps, rtol=1e-10, atol=1e-15)


def test_neighbours_in_threads_are_the_neighbours(monkeypatch):
    X, _, label = planted(4, n=300)
    one = ib.neighbours(X, 5, 8, block=64)
    np.testing.assert_array_equal(ib.neighbours(X, 5, 8, block=64, workers=3), one)
    assert (label[one] == label[:, None]).mean() > 0.99  # the neighbours are of the step's own blob
    assert not (one == np.arange(300)[:, None]).any()


def test_memberships_are_computed_once_and_read_only(five):
    an, _, _ = five
    root = an.membership(0)
    np.testing.assert_allclose(root, 1.0)
    assert an.membership(0) is root and not root.flags.writeable
    for node, (c1, c2) in an.children.items():
        np.testing.assert_allclose(an.membership(c1) + an.membership(c2), an.membership(node), atol=1e-12)
