"""Configs fail fast on values that cannot work, and hash every field that changes what a stage writes."""

import pytest

from mycelium.core.config import AnalyzeConfig, CaptureConfig, DiscoverConfig, IngestConfig


@pytest.mark.parametrize("fields, message", [
    ({"savgol_window": 5, "savgol_polyorder": 5}, "savgol_polyorder \\(5\\) must be less than savgol_window \\(5\\)"),
    ({"savgol_window": 4}, "savgol_window must be odd"),
    ({"jsd_layers": ()}, "jsd_layers"),
    ({"jsd_layers": (0, -1)}, "jsd_layers"),
    ({"jsd_layer_fraction": (0.6, 0.2)}, "jsd_layer_fraction"),
    ({"heartbeat_threshold": 1.5}, "heartbeat_threshold"),
])
def test_an_analyze_config_that_cannot_work_is_refused_naming_the_field(fields, message):
    with pytest.raises(ValueError, match=message):
        AnalyzeConfig(**fields)


@pytest.mark.parametrize("cls, field, value", [
    (AnalyzeConfig, "sandbox_timeout_s", 9.0),  # an expression that times out is labelled differently
    (AnalyzeConfig, "peak_prominence", 2.0),
    (DiscoverConfig, "elbow", True),
    (DiscoverConfig, "gain", 0.3),
    (CaptureConfig, "hidden_layer", 3),
])
def test_fields_that_change_outputs_change_the_hash(cls, field, value):
    assert cls().hash() != cls(**{field: value}).hash()


@pytest.mark.parametrize("cls, field, value", [
    (AnalyzeConfig, "workers", 7), (AnalyzeConfig, "progress", False),
    (CaptureConfig, "device", "cuda"), (DiscoverConfig, "progress", False),
])
def test_runtime_fields_do_not(cls, field, value):
    assert cls().hash() == cls(**{field: value}).hash()


def test_ingest_selection_fields_are_named():
    assert set(IngestConfig.selection_fields) == {"limit", "shard_size"} <= set(IngestConfig.model_fields)
