"""Lambda: merge a run's examples into training/<component>/{train,val}.jsonl (the reduce after label).

Event: ``{"run": "gsm8k-train"}``. Returns the example count and the stats key.
"""

from __future__ import annotations

import logging
import os

from mycelium.cloud.events import RunEvent
from mycelium.core import env
from mycelium.core.store import open_store
from mycelium.stages.merge import MergeStage
from mycelium.stages.runner import run_stage

log = logging.getLogger()
log.setLevel(logging.INFO)

STORE = open_store(os.environ.get(env.STORE_URL))


def handler(event: dict, context=None) -> dict:
    ev = RunEvent.model_validate(event)
    stage = MergeStage.current(STORE, ev.run)
    summary = run_stage(stage, progress=False)
    out = {"run": ev.run, "problems": summary.n_in, "with_examples": summary.n_out,
           "examples": summary.counters.get("examples", 0), "stats_key": stage.keys("training", "stats.json")}
    log.info({"message": "merged", **out})
    return out
