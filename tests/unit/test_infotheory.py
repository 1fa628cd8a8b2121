"""KL, JS, entropy and mutual information, defined once, against direct definitions."""

import math

import numpy as np
import pytest

from mycelium.core.infotheory import entropy, js, kl, mutual_information, pairwise_kl
from mycelium.templates.ib import split_gain


def direct_mi(joint):
    joint = joint / joint.sum()
    pa, pb = joint.sum(1), joint.sum(0)
    return sum(joint[i, j] * math.log(joint[i, j] / (pa[i] * pb[j]))
               for i in range(joint.shape[0]) for j in range(joint.shape[1]) if joint[i, j] > 0)


def test_mutual_information_matches_the_definition_and_its_bounds():
    rng = np.random.default_rng(0)
    joint = rng.random((5, 4)) * (rng.random((5, 4)) > 0.3)
    assert mutual_information(joint) == pytest.approx(direct_mi(joint), rel=1e-12)
    assert mutual_information(np.outer([0.2, 0.8], [0.5, 0.5])) == pytest.approx(0.0, abs=1e-15)
    assert mutual_information(np.eye(3)) == pytest.approx(math.log(3))
    # it is the KL of the joint from the product of its marginals
    p = joint / joint.sum()
    assert mutual_information(joint) == pytest.approx(float(kl(p.ravel(), np.outer(p.sum(1), p.sum(0)).ravel())))


def test_pairwise_kl_is_kl_for_every_pair():
    rng = np.random.default_rng(1)
    p, q = rng.dirichlet(np.ones(6), size=4), rng.dirichlet(np.ones(6), size=3)
    expect = np.array([[float(kl(a, b)) for b in q] for a in p])
    np.testing.assert_allclose(pairwise_kl(p, q), expect, rtol=1e-12)


def test_js_is_symmetric_bounded_and_zero_on_equal_rows():
    rng = np.random.default_rng(2)
    p, q = rng.dirichlet(np.ones(5)), rng.dirichlet(np.ones(5))
    assert js(p, q) == pytest.approx(float(js(q, p)))
    assert 0 < js(p, q) < math.log(2) and js(p, p) == pytest.approx(0.0, abs=1e-15)
    assert entropy(np.full(4, 0.25)) == pytest.approx(math.log(4))


def test_a_split_gain_is_the_parent_mass_times_the_information_within_it():
    """ΔI(T;Y) = a·KL(y1‖yp) + b·KL(y2‖yp); ΔI(X;T) = Σ p(x)[q1 log q1/a + q2 log q2/b − qp log qp/c]."""
    rng = np.random.default_rng(3)
    n = 40
    pyx = rng.dirichlet(np.ones(5), size=n)
    px = np.full(n, 1 / n)
    q1, q2 = rng.random(n) * 0.6, rng.random(n) * 0.4
    a, b, c = px @ q1, px @ q2, px @ (q1 + q2)
    y1, y2, yp = (q1 * px) @ pyx / a, (q2 * px) @ pyx / b, ((q1 + q2) * px) @ pyx / c
    d_ity = a * float(kl(y1, yp)) + b * float(kl(y2, yp))
    h = lambda q, m: float(np.sum(px * q * np.log(q / m)))  # noqa: E731
    d_ixt = h(q1, a) + h(q2, b) - h(q1 + q2, c)
    assert split_gain(q1, q2, px, pyx) == pytest.approx((d_ity, d_ixt), rel=1e-10)
