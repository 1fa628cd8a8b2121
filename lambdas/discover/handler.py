"""Lambda: discover operation templates with the Information Bottleneck.

Event: ``{"run": "gsm8k-train", "gain": 0.15, "min_size": 50, "elbow": false}``. The config is the run's
discover record (from its manifest); ``gain``, ``min_size`` and ``elbow`` in the event override it.
Writes ``ib/taxonomy.json`` and the plots; returns the template count and the key.
"""

from __future__ import annotations

import logging
import os

from pydantic import Field

from mycelium.cloud.events import RunEvent
from mycelium.core import env
from mycelium.core.store import open_store
from mycelium.stages.discover import DiscoverStage
from mycelium.stages.runner import run_stage

log = logging.getLogger()
log.setLevel(logging.INFO)

STORE = open_store(os.environ.get(env.STORE_URL))


class DiscoverEvent(RunEvent):
    gain: float | None = Field(None, gt=0)
    min_size: int | None = Field(None, ge=1)
    elbow: bool | None = None


def handler(event: dict, context=None) -> dict:
    ev = DiscoverEvent.model_validate(event)
    base = DiscoverStage.current(STORE, ev.run)
    overrides = {k: v for k, v in {"gain": ev.gain, "min_size": ev.min_size, "elbow": ev.elbow}.items() if v is not None}
    stage = DiscoverStage(STORE, ev.run, base.config.model_copy(update={"progress": False, **overrides}))
    summary = run_stage(stage, progress=False)
    out = {"run": ev.run, "templates": summary.n_out, "families": summary.counters.get("families"),
           "purity": summary.counters.get("purity"), "taxonomy_key": stage.keys("ib", "taxonomy.json")}
    log.info({"message": "discovered", **out})
    return out
