"""Lambda: merge a run's examples into training/<component>/{train,val}.jsonl (the reduce after label).

Event: ``{"run": "gsm8k-train"}``, or ``{"run": ..., "round": k}`` for improvement round k's merge (the teacher's,
the mop-ups' and the students' labels -> ``rounds/r<k>/training/``). Returns the example count and the stats key.
"""

from __future__ import annotations

import logging
import os

from pydantic import Field

from mycelium.cloud.events import RunEvent
from mycelium.core import env
from mycelium.core.store import open_store
from mycelium.stages.merge import MergeStage
from mycelium.stages.runner import run_stage

log = logging.getLogger()
log.setLevel(logging.INFO)

STORE = open_store(os.environ.get(env.STORE_URL))


class MergeEvent(RunEvent):
    round: int = Field(0, ge=0)


def handler(event: dict, context=None) -> dict:
    ev = MergeEvent.model_validate(event)
    stage = MergeStage.current(STORE, ev.run)  # the run's merge config; a round merges more sources
    if ev.round:
        stage = MergeStage(STORE, ev.run, stage.config.model_copy(update={"round": ev.round}))
    summary = run_stage(stage, progress=False)
    out = {"run": ev.run, "round": ev.round, "problems": summary.n_in, "with_examples": summary.n_out,
           "examples": summary.counters.get("examples", 0),
           "stats_key": stage.keys(*stage.keys.merged(ev.round), "stats.json")}
    log.info({"message": "merged", **out})
    return out
