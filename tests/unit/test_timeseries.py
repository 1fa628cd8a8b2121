"""Trace analysis on synthetic signals with known answers."""

import math

import numpy as np
import pytest

from mycelium.analysis import signals
from mycelium.analysis.boundaries import boundary_match, find_boundaries, prf
from mycelium.core.config import AnalyzeConfig
from mycelium.analysis.timeseries import heartbeats, runs_above, smooth, snap


def block_rows(T=80, keys=40, cuts=(20, 41, 60), noise=0.02, seed=0):
    """Attention rows that read one block of keys per segment: a new block at each cut."""
    rng = np.random.default_rng(seed)
    rows = rng.random((T + 1, keys)) * noise  # [t+1, key]
    seg = np.searchsorted(cuts, np.arange(T + 1) - 1, side="right")  # row 0 is the reference row
    for s in range(len(cuts) + 1):
        rows[seg == s, s * 8:(s + 1) * 8] += 1.0
    return rows / rows.sum(-1, keepdims=True)


def test_three_planted_boundaries_give_three_peaks():
    jsd = signals.consecutive_jsd(block_rows())  # [T]
    bounds, prom, smoothed = find_boundaries(jsd, np.ones(80, bool), AnalyzeConfig(peak_distance=8))
    assert bounds.tolist() == [20, 41, 60]
    assert len(prom) == 3 and np.all(prom > 0) and smoothed.shape == (80,)


def test_boundaries_snap_to_word_starts():
    jsd = signals.consecutive_jsd(block_rows())
    allowed = np.zeros(80, bool)
    allowed[[0, 18, 42, 61]] = True
    bounds, _, _ = find_boundaries(jsd, allowed, AnalyzeConfig(peak_distance=8))
    assert bounds.tolist() == [18, 42, 61]


def test_flat_jsd_has_no_boundaries():
    bounds, prom, _ = find_boundaries(np.full(50, 0.1), np.ones(50, bool), AnalyzeConfig())
    assert bounds.size == 0 and prom.size == 0


def test_jsd_of_identical_rows_is_zero_and_of_disjoint_rows_ln2():
    rows = np.array([[0.5, 0.5, 0, 0], [0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5]])
    np.testing.assert_allclose(signals.consecutive_jsd(rows), [0.0, math.log(2)], atol=1e-12)


def test_telegraph_iaf_with_four_pulses_gives_four_heartbeats():
    trace = np.full(100, 0.1)
    for start in (5, 30, 55, 80):
        trace[start:start + 8] = 0.9
    trace[45:48] = 0.95  # a blip shorter than the minimum run is not a heartbeat
    assert heartbeats(trace) == 4
    _, s, e = runs_above(trace, 0.5, 5)
    assert s.tolist() == [5, 30, 55, 80] and e.tolist() == [13, 38, 63, 88]
    assert heartbeats(trace, min_run=3) == 5
    assert heartbeats(np.stack([trace, np.zeros(100), np.ones(100)])).tolist() == [4, 0, 1]


def test_smoothing_keeps_length_and_short_traces():
    x = np.sin(np.linspace(0, 6, 40))
    assert smooth(x).shape == (40,) and np.abs(smooth(x) - x).max() < 0.05
    np.testing.assert_array_equal(smooth(np.array([1.0, 2.0])), [1.0, 2.0])


@pytest.mark.parametrize("pred,ref,expected", [
    ([10, 20, 30], [10, 21, 33], (2, 1, 1)),
    ([10, 11], [10], (1, 1, 0)),  # one-to-one: the second prediction is a false positive
    ([], [5], (0, 0, 1)),
    ([5], [], (0, 1, 0)),
])
def test_boundary_match(pred, ref, expected):
    assert boundary_match(np.array(pred), np.array(ref), 2) == expected


def test_prf():
    assert prf(2, 1, 1) == pytest.approx({"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3})
    assert prf(0, 0, 0)["f1"] == 0.0


def test_snap_keeps_unreachable_boundaries():
    allowed = np.zeros(30, bool)
    allowed[[3, 8, 21]] = True
    assert snap(np.array([5, 20, 14]), allowed, 2).tolist() == [3, 21, 14]


def test_planted_boundaries_survive_the_defaults_too():
    jsd = signals.consecutive_jsd(block_rows(T=120, cuts=(30, 61, 90)))
    bounds, _, _ = find_boundaries(jsd, np.ones(120, bool), AnalyzeConfig())
    assert bounds.tolist() == [30, 61, 90]


def test_layer_selection():
    assert AnalyzeConfig().layers_for(30) == list(range(15))
    assert AnalyzeConfig(jsd_layer_fraction=(0.5, 1.0)).layers_for(30) == list(range(15, 30))
    assert AnalyzeConfig(jsd_layers=(2, 5)).layers_for(30) == [2, 5]
    assert AnalyzeConfig().layers_for(1) == [0]
    with pytest.raises(ValueError, match="jsd_layer_fraction"):
        AnalyzeConfig(jsd_layer_fraction=(0.6, 0.2))


def test_boundary_match_is_a_maximum_matching():
    from scipy.optimize import linear_sum_assignment

    assert boundary_match(np.array([3, 5]), np.array([1, 4]), 2) == (2, 0, 0)  # greedy by distance finds 1
    rng = np.random.default_rng(0)
    for _ in range(300):
        pred = np.unique(rng.integers(0, 40, rng.integers(0, 10)))
        ref = np.unique(rng.integers(0, 40, rng.integers(0, 10)))
        tol = int(rng.integers(0, 4))
        ok = (np.abs(pred[:, None] - ref[None, :]) <= tol).astype(float)  # [P, R]
        best = int(ok[linear_sum_assignment(-ok)].sum()) if ok.size else 0
        assert boundary_match(pred, ref, tol) == (best, len(pred) - best, len(ref) - best)


@pytest.mark.parametrize("cot, where", [
    ("Natalia sold 48/2 = <<48/2=24>>24 clips in May.", "48/2 ="),
    ("She earns $10 x 2 = $<<10*2=20>>20.", "$10 x 2"),
    ("Half of 48 is <<48/2=24>>24.", "<<48"),
    ("So she pays 3 * 4 = 12 dollars.", "3 * 4"),
])
def test_the_reference_is_where_the_cot_starts_writing_each_calculation(cot, where):
    from mycelium.mathlang.expressions import calculation_start, find_expressions

    (f,) = find_expressions(cot)
    assert calculation_start(cot, f) == cot.index(where)


def test_segmentations_by_layout_and_by_jsd_among_lines():
    from mycelium.analysis.boundaries import calculation_starts, layout_starts, segment
    from mycelium.mathlang.expressions import find_expressions

    cot = "First 2+3 = <<2+3=5>>5 apples.\nThen 5*4 = <<5*4=20>>20. So 20.\nDone: 20"
    offsets = np.array([(i, i + 1) for i in range(len(cot))])  # one token per character
    lines = layout_starts(cot, offsets, "line")
    assert lines.tolist() == [cot.index("Then"), cot.index("Done")]
    assert layout_starts(cot, offsets, "sentence").tolist() == [cot.index("Then"), cot.index("So"), cot.index("Done")]
    assert calculation_starts(cot, offsets, find_expressions(cot)).tolist() == [cot.index("2+3"), cot.index("5*4")]
    jsd = np.zeros(len(cot))
    jsd[cot.index("Done") + 1] = 1.0  # the JSD rises next to the last line only
    picked = segment("jsd_lines", np.array([7]), jsd, cot, offsets, window=2)
    assert picked.tolist() == [cot.index("Done")]  # as many lines as JSD peaks (1), the one where JSD is high
    with pytest.raises(ValueError, match="segmentation 'bogus'"):
        segment("bogus", np.array([]), jsd, cot, offsets, 2)
