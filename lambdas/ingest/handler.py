"""Lambda: start a submitted run (the first state of the run's execution): check the upload, ingest.

Event: ``{"manifest_key": "runs/gsm8k-train/manifest.json"}`` (the key of the upload that started the run).
Writes ``problems/part-*.jsonl`` and every stage's record (``stages/*.json``, from the manifest); returns
the run name, the shard count that sizes the capture array job and the run's Distributed Map settings.
"""

from __future__ import annotations

import logging
import os

from pydantic import BaseModel, ConfigDict, Field

from mycelium.cloud.manifest import run_of_key
from mycelium.cloud.run import start_run
from mycelium.core import env
from mycelium.core.keys import RunKeys
from mycelium.core.store import open_store

log = logging.getLogger()
log.setLevel(logging.INFO)

STORE = open_store(os.environ.get(env.STORE_URL))


class IngestEvent(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    manifest_key: str = Field(min_length=1, max_length=1024)


def handler(event: dict, context=None) -> dict:
    ev = IngestEvent.model_validate(event)
    run = run_of_key(ev.manifest_key, getattr(STORE, "prefix", ""))
    summary, shards, manifest = start_run(STORE, RunKeys(run))
    out = {"run": run, "shards": len(shards), "problems": summary.n_out, "bad_rows": summary.failed,
           "duplicates": summary.skipped.get("duplicate problem", 0), "map": manifest.map.model_dump()}
    log.info({"message": "ingested", **out})
    return out
