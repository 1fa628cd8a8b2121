"""Lambda: label one analysed problem (a map): its program, checked by execution, and the specialists' examples.

Event (one item per analyze commit)::

    {"run": "gsm8k-train", "item_key": "runs/gsm8k-train/commits/analyze/p0a1b2c3d4e5f.json"}

The run's label config is its stage record (written from the manifest when the run started).
Returns a small summary; raises (after the ledger entry) when the item fails, so the map counts it.
"""

from __future__ import annotations

import functools
import logging
import os

from mycelium.cloud.events import ItemEvent
from mycelium.core import env
from mycelium.core.store import open_store
from mycelium.stages.base import run_item
from mycelium.stages.label import LabelStage

log = logging.getLogger()
log.setLevel(logging.INFO)

STORE = open_store(os.environ.get(env.STORE_URL))


@functools.lru_cache(maxsize=16)
def stage(run: str) -> LabelStage:
    """The run's label stage; a warm container keeps its config, templates and problems."""
    return LabelStage.current(STORE, run)


def handler(event: dict, context=None) -> dict:
    ev = ItemEvent.model_validate(event)
    out = run_item(stage(ev.run), ev.item)
    log.info({"message": "label", **out})
    return out
