"""Lambda: aggregate a run's analysed steps into the IB inputs (the reduce after the map).

Event: ``{"run": "gsm8k-train"}``. Writes ``ib/steps.npz`` and ``ib/index.jsonl``; returns counts.
"""

from __future__ import annotations

import logging
import os

from pydantic import BaseModel, ConfigDict, Field

from mycelium import env
from mycelium.aggregate import aggregate
from mycelium.artifacts import StageSummary
from mycelium.runs import RunKeys, load_summary, save_summary
from mycelium.store import open_store

log = logging.getLogger()
log.setLevel(logging.INFO)

STORE = open_store(os.environ.get(env.STORE_URL))


class RunEvent(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    run: str = Field(min_length=1)


def handler(event: dict, context=None) -> dict:
    ev = RunEvent.model_validate(event)
    keys = RunKeys(ev.run)
    summary = load_summary(STORE, keys)
    stage = summary.stages["aggregate"] = StageSummary()
    try:
        table = aggregate(STORE, ev.run, stage)
    finally:
        save_summary(STORE, keys, summary)
    out = {"run": ev.run, "steps": len(table.index), "labels": table.vocab, "dims": int(table.X.shape[1]),
           "skipped": stage.skipped, "steps_key": keys("ib", "steps.npz")}
    log.info({"message": "aggregated", **out})
    return out
