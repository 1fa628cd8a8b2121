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


def _other_values(cls, name):
    """Valid values of a field other than its default (the config validates each candidate)."""
    default = cls.model_fields[name].default
    if isinstance(default, bool):
        candidates = [not default]
    elif isinstance(default, int):
        candidates = [default + 1, default - 1, default + 2]
    elif isinstance(default, float):
        candidates = [default * 1.5, default / 1.5]
    elif isinstance(default, str):
        candidates = ["generate", "float32", "all", "layer_mean", "gsm8k", "lines", "iaf", "other"]
    elif isinstance(default, tuple):
        candidates = [(0.1, 0.3), (0,)]
    else:  # None: an optional setting
        candidates = [1, 2, (0,), ((0, 0),)]
    out = []
    for v in candidates:
        try:
            cls(**{name: v})
            out.append(v)
        except ValueError:
            pass
    return out


@pytest.mark.parametrize("cls", [AnalyzeConfig, CaptureConfig, DiscoverConfig, IngestConfig])
def test_every_field_that_is_not_runtime_only_changes_the_hash(cls):
    """Every field of every config, not a hand-picked few: a new field must be hashed or declared runtime."""
    for name in cls.model_fields:
        if name in cls._runtime_only.default or name == "signals":
            continue
        others = _other_values(cls, name)
        assert others, f"{cls.__name__}.{name}: no other valid value to try"
        for v in others:
            assert cls(**{name: v}).hash() != cls().hash(), f"{cls.__name__}.{name}={v!r} is not hashed"


@pytest.mark.parametrize("cls, field, value", [
    (AnalyzeConfig, "workers", 7), (AnalyzeConfig, "progress", False),
    # the device changes no output by itself; what it changes ('auto' dtype) is pinned by the calibration
    (CaptureConfig, "device", "cuda"), (DiscoverConfig, "progress", False), (DiscoverConfig, "workers", 2),
])
def test_runtime_fields_do_not(cls, field, value):
    assert cls().hash() == cls(**{field: value}).hash()


def test_ingest_selection_fields_are_named():
    assert set(IngestConfig.selection_fields) == {"limit", "shard_size"} <= set(IngestConfig.model_fields)


def test_discover_options_added_after_runs_keep_their_lineage():
    """The anneal's defaults are the one the existing runs made (the same to the bit), so their config hash, the
    discover lineage runs/*/ib/taxonomy.json records (dd4afefeb4b6; 53c334dfb905 with min_size 8), stays; the
    faster equivalent anneals are named apart; threads change no output."""
    assert DiscoverConfig().hash() == "dd4afefeb4b6" and DiscoverConfig(min_size=8).hash() == "53c334dfb905"
    assert "dtype" not in DiscoverConfig().output_fields() and "workers" not in DiscoverConfig().output_fields()
    hashes = {DiscoverConfig(**o).hash() for o in ({}, {"dtype": "float32"}, {"distinct_rows": True},
                                                    {"distinct_rows": True, "dtype": "float32"})}
    assert len(hashes) == 4
