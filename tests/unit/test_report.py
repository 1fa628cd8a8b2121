"""The analysis report's heartbeat statistics: length controlled, both traces."""

import numpy as np
import pytest

from mycelium.analysis.report import heartbeat_stats, level_regression


def rows_where_only_length_matters(n=400, seed=0):
    """Higher levels write longer CoTs; heartbeats follow length alone (1.5 per 100 tokens) plus noise."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        level = int(rng.integers(1, 6))
        tokens = int(rng.normal(60 + 50 * level, 20))
        beats = max(0, int(round(1.5 * tokens / 100 + rng.normal(0, 0.5))))
        out.append({"dataset": "math", "level": level, "tokens": tokens, "raw": beats + 1, "above_chance": beats,
                    "raw_starts_early": True, "above_chance_starts_early": False})
    return out


def test_a_level_trend_that_is_only_length_vanishes_once_length_is_controlled():
    reg = level_regression(rows_where_only_length_matters(), "above_chance")
    assert reg["level_without_length"] > 0.5  # the raw trend with level ...
    assert abs(reg["level"]) < 2 * reg["level_se"] + 0.05  # ... is gone with length in the regression
    assert reg["per_100_tokens"] == pytest.approx(1.5, abs=0.2) and reg["corr_heartbeats_length"] > 0.7


def test_stats_by_level_report_both_traces_per_100_tokens():
    stats = heartbeat_stats(rows_where_only_length_matters(100))
    g = stats["groups"]["math level 3"]
    assert g["raw"] == pytest.approx(g["above_chance"] + 1) and g["raw_starts_early"] == 1.0
    assert g["above_chance_per_100_tokens"] == pytest.approx(100 * g["above_chance"] / g["tokens"])
    assert set(stats["regression"]) == {"raw", "above_chance"}
    assert level_regression([{"level": None, "tokens": 10, "raw": 1}], "raw") is None
