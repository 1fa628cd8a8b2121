"""Lambda: record how a run's execution ended (the last state on both the success and the failure path).

Event: ``{"run": "gsm8k-train", "state": "succeeded", "outputs": {...}}`` or
``{"run": ..., "state": "failed", "error": {"Error": "States.TaskFailed", "Cause": "..."}}``.
Writes ``status/run.json``, the run summary's lines of the map stages (capture, analyze), tallied from their
commits and ledger (no single process saw all their items), and ``analyze/report.json``.
"""

from __future__ import annotations

import logging
import os
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from mycelium.cloud.events import RunEvent
from mycelium.cloud.status import record_run_status
from mycelium.core import env
from mycelium.core.keys import RunKeys
from mycelium.core.store import open_store
from mycelium.cloud.run import finish_run

log = logging.getLogger()
log.setLevel(logging.INFO)

STORE = open_store(os.environ.get(env.STORE_URL))


class StateError(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)
    error: str = Field("", alias="Error")
    cause: str = Field("", alias="Cause", max_length=32768)


class FinishEvent(RunEvent):
    state: Literal["succeeded", "failed"]
    error: StateError | None = None
    outputs: dict = {}


def handler(event: dict, context=None) -> dict:
    ev = FinishEvent.model_validate(event)
    keys = RunKeys(ev.run)
    err = ev.error or StateError()
    try:
        stages = finish_run(STORE, keys)
    except Exception as e:  # noqa: BLE001 - on the failure path the status must be written whatever else fails
        if ev.state == "succeeded":
            raise
        stages = {"error": f"{type(e).__name__}: {e}"}
    outputs = {**ev.outputs, "stages": stages}
    status = record_run_status(STORE, keys, ev.state, err.error or None, err.cause or None, outputs)
    log.info({"message": "run finished", **{k: status[k] for k in ("run", "state", "error")}})
    return {"run": ev.run, "state": ev.state, "status_key": keys("status", "run.json")}
