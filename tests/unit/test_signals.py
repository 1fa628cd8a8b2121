"""Signals on synthetic rows with known answers, identical on numpy and torch."""

import math

import numpy as np
import pytest
import torch

from mycelium.analysis import signals
from mycelium.core.infotheory import entropy, js

LN2 = math.log(2)


@pytest.mark.parametrize("xp", ["numpy", "torch"])
def test_jsd_identical_is_zero_and_disjoint_is_ln2(xp):
    conv = (lambda a: torch.tensor(a, dtype=torch.float64)) if xp == "torch" else np.asarray
    p = conv([0.25, 0.25, 0.5, 0.0, 0.0])
    q = conv([0.0, 0.0, 0.0, 0.5, 0.5])
    assert float(js(p, p)) == pytest.approx(0.0, abs=1e-12)
    assert float(js(p, q)) == pytest.approx(LN2, abs=1e-12)


def test_jsd_is_the_divergence_not_scipys_square_root():
    from scipy.spatial.distance import jensenshannon

    rng = np.random.default_rng(1)
    p, q = rng.dirichlet(np.ones(7)), rng.dirichlet(np.ones(7))
    assert js(p, q) == pytest.approx(jensenshannon(p, q) ** 2, rel=1e-9)
    assert js(p, q) != pytest.approx(jensenshannon(p, q), rel=1e-3)


def test_numpy_and_torch_agree_on_every_signal():
    rng = np.random.default_rng(2)
    rows = rng.dirichlet(np.ones(12), size=(3, 6))  # [head, t+1, key]
    keep = np.ones(12, dtype=bool)
    keep[0] = False
    problem = np.zeros(12, dtype=bool)
    problem[2:6] = True
    t_rows, t_keep, t_problem = torch.tensor(rows), torch.tensor(keep), torch.tensor(problem)
    r_np, r_t = signals.renormalize(rows, keep), signals.renormalize(t_rows, t_keep)
    pairs = [
        (r_np, r_t),
        (signals.iaf(r_np, problem), signals.iaf(r_t, t_problem)),
        (signals.consecutive_jsd(r_np), signals.consecutive_jsd(r_t)),
        (entropy(r_np), entropy(r_t)),
        (signals.connectivity(r_np, 0.1), signals.connectivity(r_t, 0.1)),
        (signals.received_attention(r_np), signals.received_attention(r_t)),
        (signals.telegraph_score(signals.iaf(r_np, problem)), signals.telegraph_score(signals.iaf(r_t, t_problem))),
    ]
    for a, b in pairs:
        np.testing.assert_allclose(a, b.numpy(), rtol=1e-12, atol=1e-12)


def test_renormalize_removes_sinks():
    row = np.array([[0.7, 0.1, 0.1, 0.1]])  # a sink holding 70 %
    keep = np.array([False, True, True, True])
    out = signals.renormalize(row, keep)
    np.testing.assert_allclose(out, [[0.0, 1 / 3, 1 / 3, 1 / 3]])
    assert signals.renormalize(np.array([[1.0, 0, 0, 0]]), keep).sum() == 0.0  # all on sinks: zeros, not NaN


def test_iaf_counts_only_problem_keys():
    rows = np.array([[0.0, 0.2, 0.3, 0.5], [0.0, 1.0, 0.0, 0.0]])
    problem = np.array([False, True, True, False])
    np.testing.assert_allclose(signals.iaf(rows, problem), [0.5, 1.0])


def test_entropy_and_connectivity_known_values():
    uniform = np.full(8, 1 / 8)
    assert entropy(uniform) == pytest.approx(math.log(8))
    assert entropy(np.array([1.0, 0, 0])) == pytest.approx(0.0)
    assert signals.connectivity(np.array([0.5, 0.3, 0.15, 0.05]), 0.1) == 3


def test_consecutive_jsd_marks_block_switches():
    # 3 blocks of rows attending to disjoint key sets: JSD is ln 2 exactly at the 2 switches.
    rows = np.zeros((9, 6))
    rows[0:3, 0:2] = 0.5
    rows[3:6, 2:4] = 0.5
    rows[6:9, 4:6] = 0.5
    trace = signals.consecutive_jsd(rows)
    assert trace.shape == (8,)
    np.testing.assert_allclose(trace[[2, 5]], LN2)
    np.testing.assert_allclose(np.delete(trace, [2, 5]), 0.0, atol=1e-12)


def test_received_attention_sums_over_queries():
    rows = np.array([[[0.5, 0.5], [1.0, 0.0]]])  # [head, t, key]
    np.testing.assert_allclose(signals.received_attention(rows), [[1.5, 0.5]])


def test_telegraph_score_prefers_switching_heads():
    t = np.arange(40)
    telegraph = ((t // 5) % 2).astype(float)  # reads the problem every other 5 tokens
    flat = np.full(40, 0.5)
    scores = signals.telegraph_score(np.stack([telegraph, flat]))
    assert scores[0] == pytest.approx(0.5) and scores[1] == pytest.approx(0.0)


def test_token_0_reads_the_problem_by_construction_and_the_chance_correction_says_so():
    """Attention spread evenly over the visible keys: raw IAF starts at 1 and looks like a heartbeat; above
    chance it is 0 throughout, so a CoT that never reads the problem has no heartbeat."""
    from mycelium.analysis.timeseries import heartbeats

    P, T = 30, 120
    chance = signals.chance_iaf(P, P, T)
    assert chance[0] == 1.0 and chance[P] == pytest.approx(0.5)
    even = chance.copy()  # the IAF of rows that spread evenly over problem and CoT keys
    assert heartbeats(even, 0.5, 5) == 1  # the artefact: a pulse from token 0
    assert heartbeats(signals.iaf_over_chance(even, chance), 0.5, 5) == 0
    never = np.zeros(T)
    never[0] = 1.0  # token 0 has no choice, every later row reads the CoT only
    assert heartbeats(signals.iaf_over_chance(never, chance), 0.5, 5) == 0
    pulses = np.where((np.arange(T) // 10) % 3 == 2, 0.95, chance)  # reads the problem in 10-token bursts
    assert heartbeats(signals.iaf_over_chance(pulses, chance), 0.5, 5) == 4


def test_visible_prompt_keys_follow_the_sink_settings():
    meta = {"n_problem_tokens": 12, "prompt_len": 20, "signals": {"exclude_template_tokens": True}}
    assert signals.visible_prompt_keys(meta) == 12
    meta["signals"] = {"exclude_template_tokens": False, "exclude_first_token": True}
    assert signals.visible_prompt_keys(meta) == 19
