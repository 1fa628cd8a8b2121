"""Lambda: record how a run's execution ended (the last state on both the success and the failure path).

Event: ``{"run": "gsm8k-train", "state": "succeeded", "outputs": {...}}`` or
``{"run": ..., "state": "failed", "error": {"Error": "States.TaskFailed", "Cause": "..."}}``.
Writes ``status/run.json``.
"""

from __future__ import annotations

import logging
import os
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from mycelium import env
from mycelium.events import RunEvent
from mycelium.runs import RunKeys, record_run_status
from mycelium.store import open_store

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
    err = ev.error or StateError()
    status = record_run_status(STORE, RunKeys(ev.run), ev.state, err.error or None, err.cause or None, ev.outputs)
    log.info({"message": "run finished", **{k: status[k] for k in ("run", "state", "error")}})
    return {"run": ev.run, "state": ev.state, "status_key": RunKeys(ev.run)("status", "run.json")}
