"""Lambda: the improvement loop's decisions on AWS (no torch): plan a round, start its mop-up, report it.

Events (``{"run": ..., "round": k, "action": ...}``):

- ``plan``: the parts the solver maps run over: ``{"val_parts": [0, 1, ...], "train_parts": [...], "verifier":
  bool}`` (whether the round's beams teach a verifier before val is solved);
- ``mop-up``: after round k's student labels (the map), the problems still without a program go to the teacher:
  run ``<run>.mopup-r<k>`` is ingested with every stage's record, and ``{"run", "asked", "shards", "new"}``
  comes back (the capture jobs and the analyze and label maps take it from there; ``new`` is false when
  the students found no program for a problem that had none and nobody was asked);
- ``report``: grade round k's val parts, write the per-round table (``rounds/improve.json``, ``.md``, ``.png``)
  and decide: ``{"continue": bool, "next_round": k + 1, "stopped": why}``. ``nothing_new``: the round stops
  before training.
"""

from __future__ import annotations

import logging
import os
from typing import Literal

from pydantic import Field

from mycelium.cloud.events import RunEvent
from mycelium.core import env
from mycelium.core.keys import RunKeys
from mycelium.core.store import open_store
from mycelium.stages.improve import Loop, improve_config

log = logging.getLogger()
log.setLevel(logging.INFO)

STORE = open_store(os.environ.get(env.STORE_URL))


class ImproveEvent(RunEvent):
    round: int = Field(ge=0)
    action: Literal["plan", "mop-up", "report"]
    nothing_new: bool = False


def handler(event: dict, context=None) -> dict:
    from mycelium.stages.rounds import report

    ev = ImproveEvent.model_validate(event)
    keys = RunKeys(ev.run)
    loop = Loop(STORE, ev.run, improve_config(STORE, keys).model_copy(update={"progress": False}))
    if ev.action == "plan":
        loop.check()
        out = {"val_parts": loop.parts("val"), "train_parts": loop.parts("train"), "verifier": loop.cfg.verifier}
    elif ev.action == "mop-up":
        loop.tally_students(ev.round)
        out = loop.start_mop_up(ev.round)
        out["new"] = bool(out["asked"] or loop.new_programs(ev.round))
    else:
        if not ev.nothing_new:
            loop.measure(ev.round)
        r = report(loop, ev.round, nothing_new=ev.nothing_new)
        last = r["rounds"][-1]
        out = {"continue": r["continue"], "next_round": r["next_round"], "stopped": r["stopped"],
               "val_accuracy": last.get("val_accuracy"), "teacher_calls": r["teacher_calls"]}
    log.info({"message": ev.action, "run": ev.run, "round": ev.round, **out})
    return {"run": ev.run, "round": ev.round, **out}
