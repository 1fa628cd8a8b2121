"""The start of a cloud run (the ingest Lambda): check the upload, record every stage's config, ingest.

The manifest fixes every stage's config when the run is submitted. Here each stage's record
(``stages/<stage>.json``) is written from it, in pipeline order and before anything is ingested, so every
later step (a Batch worker, a Lambda of the Distributed Map, a reduce) reads its config and lineage the way
a local run does. At the end (:func:`finish_run`) the map stages are tallied from the store.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from ..core.errors import MyceliumError
from ..core.keys import RunKeys
from ..core.store import Store, sha256
from ..core.summary import StageSummary
from ..stages.aggregate import AggregateStage
from ..stages.analyze import AnalyzeStage
from ..stages.discover import DiscoverStage
from ..stages.improve import write_improve_config
from ..stages.ingest import IngestStage
from ..stages.label import LabelStage
from ..stages.merge import MergeStage
from ..stages.problems import shard_keys
from ..stages.runner import run_stage
from .manifest import RunManifest, load_manifest


def start_run(store: Store, keys: RunKeys) -> tuple[StageSummary, list[str], RunManifest]:
    """Ingest a submitted run and record its stages' configs; return the ingest counts, shards and manifest.

    No teacher is loaded here, so over-long problems are not rejected at ingest: capture records each of
    them as a ledger entry naming the problem id. Running it again rewrites the same shards.
    """
    from ..stages.capture import CaptureStage  # its module imports no torch; the teacher loads on first use

    manifest = load_manifest(store, keys)
    key = keys(manifest.data)
    if not store.exists(key):
        raise MyceliumError(f"{store.url}/{key}: the manifest names this dataset, but it was not uploaded")
    data = store.get(key)
    if sha256(data) != manifest.data_sha256:
        raise MyceliumError(f"{store.url}/{key}: sha256 differs from the manifest's data_sha256 (partial upload?)")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(manifest.data).name  # the file name stays in bad-row messages
        path.write_bytes(data)
        ingest = IngestStage(store, keys.run, manifest.ingest, path, data_name=manifest.data)
        # Every record first, in pipeline order: a pinned stage refuses another config before anything is ingested.
        for stage in (ingest, CaptureStage(store, keys.run, manifest.capture),
                      AnalyzeStage(store, keys.run, manifest.analyze),
                      AggregateStage(store, keys.run, manifest.aggregate),
                      DiscoverStage(store, keys.run, manifest.discover),
                      LabelStage(store, keys.run, manifest.label), MergeStage(store, keys.run, manifest.merge)):
            stage.begin()
        write_improve_config(store, keys, manifest.improve)
        summary = run_stage(ingest, progress=False)
    return summary, shard_keys(store, keys), manifest


def finish_run(store: Store, keys: RunKeys) -> dict:
    """At a cloud run's end, on either path: the map stages' lines of the run summary (capture, analyze,
    label), tallied from their commits and ledger (no single process saw all their items: an array job, a
    Distributed Map), and the
    analyze report over the current outputs. A stage that never began is left out."""
    from ..core.errors import RunNotFoundError
    from ..core.summary import save_stage
    from ..stages.base import tally_from_store
    from ..stages.capture import CaptureStage

    out = {}
    for cls in (CaptureStage, AnalyzeStage, LabelStage):
        try:
            stage = cls.current(store, keys.run)
            summary = tally_from_store(stage)
        except RunNotFoundError:  # the run failed before this stage (or before ingest) began
            continue
        if cls is AnalyzeStage:
            stage.finish(summary)
        save_stage(store, keys, stage.name, summary)
        out[stage.name] = summary.model_dump(include={"n_in", "n_out", "failed", "skipped"})
    return out
