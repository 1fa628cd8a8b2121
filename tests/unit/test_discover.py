"""Aggregate and discover on a tiny captured, analysed run."""

import json

import numpy as np
import pytest

from mycelium.cli import main
from mycelium.core.config import AggregateConfig, AnalyzeConfig, CaptureConfig, DiscoverConfig, IngestConfig
from mycelium.core.errors import RunNotFoundError
from mycelium.core.store import LocalStore
from mycelium.stages.aggregate import AggregateStage, load_table
from mycelium.stages.capture import run_capture
from mycelium.stages.discover import DiscoverStage
from mycelium.stages.runner import StageFailed
from mycelium.templates.taxonomy import format_tree

from ..conftest import SAMPLE, analyze_run, reduce_run


@pytest.fixture(scope="module")
def analysed(tmp_path_factory, tiny_teacher):
    store = LocalStore(tmp_path_factory.mktemp("discover") / "store")
    run_capture(SAMPLE, "d", store, CaptureConfig(n_computing_heads=2, calibration_problems=1, progress=False),
                IngestConfig(limit=16), teacher=tiny_teacher)
    analyze_run(store, "d", AnalyzeConfig(segmentation="jsd", progress=False))  # JSD steps: some hold no arithmetic
    return store


def test_aggregate_drops_unlabelled_steps_and_duplicates(analysed, tmp_path):
    import shutil

    store = LocalStore(tmp_path / "copy")
    shutil.copytree(analysed.root, store.root)
    first = next(store.list("d/steps/"))
    # the same steps again, under a second problem's name: a committed output of another problem
    pid = first.split("/")[-1][:-6]
    other = next(k for k in store.list("d/steps/") if k != first).split("/")[-1][:-6]
    commit = store.get_json(f"d/commits/analyze/{other}.json")
    from mycelium.core.store import sha256

    store.put(f"d/steps/{other}.jsonl", store.get(first))
    commit["outputs"][f"d/steps/{other}.jsonl"] = sha256(store.get(first))
    store.put_json(f"d/commits/analyze/{other}.json", commit)
    st = reduce_run(AggregateStage, store, "d")
    stage = DiscoverStage(store, "d", DiscoverConfig())
    table = load_table(stage)
    n_lines = sum(len(store.get(k).decode().splitlines()) for k in store.list("d/steps/"))
    assert st.n_in == n_lines and st.n_out == len(table.index) == table.X.shape[0] == table.Y.shape[0]
    labelled_in_copy = sum(1 for line in store.get(first).decode().splitlines() if json.loads(line)["labels"])
    assert st.skipped["duplicate"] == labelled_in_copy, pid
    assert st.skipped["no op labels"] > 0
    np.testing.assert_allclose(table.Y.sum(1), 1.0, rtol=1e-6)
    assert table.X.dtype == np.float32 and table.X.shape[1] == 32
    back = load_table(stage)
    np.testing.assert_array_equal(back.X, table.X)
    assert back.vocab == table.vocab and back.index == table.index
    for row, y in zip(back.index, back.Y):
        assert sorted(row["labels"]) == [back.vocab[j] for j in np.flatnonzero(y)]


def test_discover_writes_taxonomy_and_plots(analysed):
    with pytest.raises(RunNotFoundError, match="mycelium aggregate --run d"):
        reduce_run(DiscoverStage, analysed, "d", DiscoverConfig(min_size=2))
    assert not analysed.exists("d/stages/discover.json")  # refused before anything was written
    reduce_run(AggregateStage, analysed, "d", AggregateConfig())
    reduce_run(DiscoverStage, analysed, "d", DiscoverConfig(min_size=2, progress=False))
    tax = stored = analysed.get_json("d/ib/taxonomy.json")
    assert tax["lineage"] == analysed.get_json("d/commits/discover/run.json")["lineage"]
    assert set(tax["lineage"]) == {"ingest", "capture", "analyze", "aggregate", "discover"}
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


def test_a_stale_table_is_refused_until_aggregate_runs_again(analysed, tmp_path):
    import shutil

    store = LocalStore(tmp_path / "copy")
    shutil.copytree(analysed.root, store.root)
    reduce_run(AggregateStage, store, "d")
    analyze_run(store, "d", AnalyzeConfig(segmentation="jsd", peak_prominence=2.0, progress=False))  # a new config
    with pytest.raises(StageFailed, match=r"stale aggregate output \(made with analyze config .*mycelium aggregate --run d"):
        reduce_run(DiscoverStage, store, "d", DiscoverConfig(min_size=2))
    assert store.exists("d/failures/discover/run.json")
    reduce_run(AggregateStage, store, "d")
    reduce_run(DiscoverStage, store, "d", DiscoverConfig(min_size=2))
    assert not store.exists("d/failures/discover/run.json")  # cleared by the success
