"""Out-of-sample template quality on planted data: X that predicts Y, and X that does not."""

import numpy as np
import pytest

from mycelium.core.config import DiscoverConfig
from mycelium.templates.evaluation import evaluate, held_out

from .test_ib import planted


def _sets(Y):
    return ["+".join(str(j) for j in np.flatnonzero(y)) for y in Y]


def test_held_out_steps_are_split_by_problem():
    ids = [f"p{i % 50:012x}" for i in range(500)]  # 10 steps per problem
    test = held_out(ids)
    for pid in set(ids):
        assert len({t for i, t in zip(ids, test) if i == pid}) == 1
    assert 0.1 < test.mean() < 0.3


def test_where_x_predicts_y_the_ib_templates_hold_out_of_sample():
    X, Y, label = planted(5, n=800)
    ids = [f"p{i:012x}" for i in range(len(X))]
    out = evaluate(X, Y, _sets(Y), ids, DiscoverConfig(min_size=20))
    ib, one, km = (out["methods"][m]["out_of_sample"] for m in ("ib", "one_cluster", "kmeans"))
    assert ib["purity"] > 0.95 and ib["i_ty_share"] > 0.9
    assert one["purity"] < 0.35 and one["i_ty_nats"] == pytest.approx(0.0, abs=1e-12)
    assert km["purity"] > 0.9  # the blobs are in X: k-means finds them too
    assert out["methods"]["label_set"]["in_sample"]["purity"] == 1.0
    assert out["methods"]["label_set_min_size"]["out_of_sample"]["purity"] > 0.9
    assert out["methods"]["15_nearest_steps"]["out_of_sample"]["purity"] > 0.9
    assert out["methods"]["15_nearest_steps"]["in_sample"] is None


def test_where_x_is_noise_nothing_beats_the_majority_set_out_of_sample():
    X, Y, _ = planted(5, n=800)
    rng = np.random.default_rng(1)
    X = rng.normal(size=X.shape)  # embeddings that carry nothing about the labels
    ids = [f"p{i:012x}" for i in range(len(X))]
    out = evaluate(X, Y, _sets(Y), ids, DiscoverConfig(min_size=20))
    majority = out["methods"]["one_cluster"]["out_of_sample"]["purity"]
    for name in ("ib", "kmeans", "label_set", "label_set_min_size", "15_nearest_steps"):
        assert out["methods"][name]["out_of_sample"]["purity"] < majority + 0.1, name
    assert out["methods"]["label_set"]["in_sample"]["purity"] == 1.0  # in sample it looks perfect
