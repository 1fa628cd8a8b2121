"""Lambda: aggregate a run's analysed steps into the IB inputs (the reduce after the map).

Event: ``{"run": "gsm8k-train"}``. Writes ``ib/steps.npz`` and ``ib/index.jsonl``; returns counts.
"""

from __future__ import annotations

import logging
import os

from mycelium import env
from mycelium.aggregate import aggregate_run
from mycelium.events import RunEvent
from mycelium.runs import RunKeys
from mycelium.store import open_store

log = logging.getLogger()
log.setLevel(logging.INFO)

STORE = open_store(os.environ.get(env.STORE_URL))


def handler(event: dict, context=None) -> dict:
    ev = RunEvent.model_validate(event)
    stage, table = aggregate_run(STORE, ev.run)
    out = {"run": ev.run, "steps": len(table.index), "labels": table.vocab, "dims": int(table.X.shape[1]),
           "skipped": stage.skipped, "steps_key": RunKeys(ev.run)("ib", "steps.npz")}
    log.info({"message": "aggregated", **out})
    return out
