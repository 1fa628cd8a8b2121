"""Lambda: analyze one captured chunk (the map stage of the MapReduce).

Event (from the Step Functions Distributed Map's ItemSelector)::

    {"run": "gsm8k-train", "chunk_key": "runs/gsm8k-train/chunks/p0a1b2c3d4e5f.npz"}

``chunk_key`` may be the bucket key (with the store's prefix) or the store-relative key.
Returns a small summary; the outputs are ``signals/<pid>.json`` and ``steps/<pid>.jsonl``.
"""

from __future__ import annotations

import functools
import logging
import os

from pydantic import Field

from mycelium import env
from mycelium.analyze import analyze_one, is_done
from mycelium.config import AnalyzeConfig
from mycelium.events import RunEvent
from mycelium.manifest import submitted
from mycelium.runs import RunKeys, record_failure
from mycelium.store import open_store

log = logging.getLogger()
log.setLevel(logging.INFO)

STORE = open_store(os.environ.get(env.STORE_URL))  # s3://bucket/prefix; created once per container
CONFIG = AnalyzeConfig.model_validate_json(os.environ.get("MYCELIUM_ANALYZE_CONFIG", "{}"))


@functools.lru_cache(maxsize=16)
def config_of(run: str) -> AnalyzeConfig:
    """A submitted run's analyze config (from its manifest, read once per warm container), else the default."""
    manifest = submitted(STORE, RunKeys(run))
    return manifest.analyze if manifest else CONFIG


class AnalyzeEvent(RunEvent):
    chunk_key: str = Field(pattern=r"chunks/p[0-9a-f]{12}\.npz$")

    @property
    def problem_id(self) -> str:
        return self.chunk_key.rsplit("/", 1)[-1][: -len(".npz")]


def handler(event: dict, context=None) -> dict:
    ev = AnalyzeEvent.model_validate(event)
    keys = RunKeys(ev.run)
    config = config_of(ev.run)
    if is_done(STORE, keys, ev.problem_id, config):  # a retried or re-run item: idempotent
        return {"problem_id": ev.problem_id, "skipped": "already analyzed"}
    try:
        summary = analyze_one(STORE, ev.run, ev.problem_id, config)
    except Exception as e:
        # recorded for the run summary, then raised so the Distributed Map counts the item as failed
        record_failure(STORE, keys, "analyze", ev.problem_id, f"{type(e).__name__}: {e}", e)
        raise
    log.info({"message": "analyzed", **summary})
    return summary
