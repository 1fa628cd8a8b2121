"""Aggregate and discover on a tiny captured, analysed run."""

import json

import numpy as np
import pytest

from mycelium.aggregate import aggregate, load_table
from mycelium.analyze_stage import run_analyze
from mycelium.artifacts import StageSummary
from mycelium.capture_stage import run_capture
from mycelium.cli import main
from mycelium.config import AnalyzeConfig, CaptureConfig, DiscoverConfig, IngestConfig
from mycelium.discover import discover, format_tree
from mycelium.errors import MyceliumError
from mycelium.store import LocalStore

from ..conftest import SAMPLE


@pytest.fixture(scope="module")
def analysed(tmp_path_factory, tiny_teacher):
    store = LocalStore(tmp_path_factory.mktemp("discover") / "store")
    run_capture(SAMPLE, "d", store, CaptureConfig(n_computing_heads=2, calibration_problems=1, progress=False),
                IngestConfig(limit=16), teacher=tiny_teacher)
    run_analyze(store, "d", AnalyzeConfig(workers=1, progress=False))
    return store


def test_aggregate_drops_unlabelled_steps_and_duplicates(analysed, tmp_path):
    import shutil

    store = LocalStore(tmp_path / "copy")
    shutil.copytree(analysed.root, store.root)
    first = next(store.list("d/steps/"))
    store.put("d/steps/zz-duplicate.jsonl", store.get(first))  # the same steps again
    st = StageSummary()
    table = aggregate(store, "d", st)
    n_lines = sum(len(store.get(k).decode().splitlines()) for k in store.list("d/steps/"))
    assert st.n_in == n_lines and st.n_out == len(table.index) == table.X.shape[0] == table.Y.shape[0]
    labelled_in_copy = sum(1 for line in store.get(first).decode().splitlines() if json.loads(line)["labels"])
    assert st.skipped["duplicate"] == labelled_in_copy
    assert st.skipped["no op labels"] > 0
    np.testing.assert_allclose(table.Y.sum(1), 1.0, rtol=1e-6)
    assert table.X.dtype == np.float32 and table.X.shape[1] == 32
    back = load_table(store, "d")
    np.testing.assert_array_equal(back.X, table.X)
    assert back.vocab == table.vocab and back.index == table.index
    for row, y in zip(back.index, back.Y):
        assert sorted(row["labels"]) == [back.vocab[j] for j in np.flatnonzero(y)]


def test_discover_writes_taxonomy_and_plots(analysed):
    with pytest.raises(MyceliumError, match="mycelium aggregate --run d"):
        discover(analysed, "d", DiscoverConfig(min_size=2))
    aggregate(analysed, "d", StageSummary())
    tax = discover(analysed, "d", DiscoverConfig(min_size=2, progress=False))
    stored = analysed.get_json("d/ib/taxonomy.json")
    assert stored["n_templates"] == tax["n_templates"] >= 1
    sizes = [t["size"] for f in tax["families"] for t in f["templates"]]
    assert sum(sizes) == tax["n_steps"]
    assert len(sizes) == 1 or all(s >= 2 for s in sizes)
    assert 0 <= tax["i_ty_nats"] <= tax["h_y_nats"] + 1e-9 and 0 < tax["purity"] <= 1
    for f in tax["families"]:
        for t in f["templates"]:
            assert t["dominant_ops"] and all(op in tax["labels"] for op, _ in t["dominant_ops"])
    for name in ("information_plane.png", "gains.png"):
        assert analysed.get(f"d/ib/{name}")[:8] == b"\x89PNG\r\n\x1a\n"
    assert "templates in" in format_tree(tax)
    assert analysed.get_json("d/summary.json")["stages"]["discover"]["n_out"] == tax["n_templates"]


def test_cli_aggregate_then_discover_prints_the_tree(analysed, capsys):
    assert main(["aggregate", "--run", "d", "--store", str(analysed.root)]) == 0
    assert main(["discover", "--run", "d", "--store", str(analysed.root), "--min-size", "2", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "taxonomy:" in out and "├─ F" in out and "templates at gain 0.3:" in out
