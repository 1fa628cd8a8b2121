"""Lambda: aggregate a run's analysed steps into the IB inputs (the reduce after the map).

Event: ``{"run": "gsm8k-train"}``. Writes ``ib/steps.npz`` and ``ib/index.jsonl``; returns counts.
"""

from __future__ import annotations

import logging
import os

from mycelium.cloud.events import RunEvent
from mycelium.core import env
from mycelium.core.store import open_store
from mycelium.stages.aggregate import AggregateStage
from mycelium.stages.runner import run_stage

log = logging.getLogger()
log.setLevel(logging.INFO)

STORE = open_store(os.environ.get(env.STORE_URL))


def handler(event: dict, context=None) -> dict:
    ev = RunEvent.model_validate(event)
    stage = AggregateStage.current(STORE, ev.run)
    summary = run_stage(stage, progress=False)
    out = {"run": ev.run, "steps": summary.n_out, "skipped": summary.skipped, "failed": summary.failed,
           "steps_key": stage.keys("ib", "steps.npz")}
    log.info({"message": "aggregated", **out})
    return out
