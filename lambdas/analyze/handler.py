"""Lambda: analyze one committed chunk (the map stage of the MapReduce).

Event (from the Step Functions Distributed Map's ItemSelector: one item per capture commit)::

    {"run": "gsm8k-train", "item_key": "runs/gsm8k-train/commits/capture/p0a1b2c3d4e5f.json"}

The run's analyze config is its stage record (written from the manifest when the run started).
Returns a small summary; raises (after the ledger entry) when the item fails, so the map counts it.
"""

from __future__ import annotations

import functools
import logging
import os

from mycelium.cloud.events import ItemEvent
from mycelium.core import env
from mycelium.core.store import open_store
from mycelium.stages.analyze import AnalyzeStage
from mycelium.stages.base import run_item

log = logging.getLogger()
log.setLevel(logging.INFO)

STORE = open_store(os.environ.get(env.STORE_URL))  # s3://bucket/prefix; created once per container


@functools.lru_cache(maxsize=16)
def stage(run: str) -> AnalyzeStage:
    """The run's analyze stage; a warm container keeps its config, lineage and problem set."""
    return AnalyzeStage.current(STORE, run)


def handler(event: dict, context=None) -> dict:
    ev = ItemEvent.model_validate(event)
    out = run_item(stage(ev.run), ev.item)
    log.info({"message": "analyze", **out})
    return out
