"""Lambda: the solver on one part of a run's problems (a Distributed Map item of the improvement loop).

Events::

    {"run": "gsm8k-train", "round": 1, "split": "train", "part": 3}   # round 1's student labels, part 3
    {"run": "gsm8k-train", "round": 1, "split": "val", "part": 0}     # round 1's students on val, part 0

``beams-train`` / ``beams-val``: the reader's beams of part i (``stages/verifier_round``), the round's verifier's
training data and its val check. ``train``: round k-1's students solve part i of the loop's training problems and keep the programs that execute
to the answer (``student-r<k>`` commits). ``val``: round k's students answer part i of the val problems
(``rounds/r<k>/val/part-<i>.json``; the report Lambda grades them). The students come from the store at cold
start (``models/``, ``rounds/r<k>/models/``) and the backbone from the image; a warm container keeps both.
This is the one function whose image carries torch (CPU), imported on the first event, not at import.
"""

from __future__ import annotations

import functools
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


class SolveEvent(RunEvent):
    round: int = Field(ge=0)
    split: Literal["train", "val", "beams-train", "beams-val"]
    part: int = Field(ge=0)


@functools.lru_cache(maxsize=2)
def teacher(backbone: str):
    from mycelium.teacher.model import load_teacher

    return load_teacher(backbone, device="cpu")


def handler(event: dict, context=None) -> dict:
    ev = SolveEvent.model_validate(event)
    cfg = improve_config(STORE, RunKeys(ev.run)).model_copy(update={"progress": False, "device": "cpu"})
    loop = Loop(STORE, ev.run, cfg, teacher=teacher(cfg.backbone))
    if ev.split.startswith("beams-"):  # the reader's beams of the part: the round's verifier's data
        from mycelium.stages.verifier_round import beams_part

        out = beams_part(loop, ev.round, ev.split.removeprefix("beams-"), ev.part)
    else:
        out = loop.label_part(ev.round, ev.part) if ev.split == "train" else loop.solve_part(ev.round, ev.part)
    # A problem that failed is a ledger entry, counted in the round's line of the summary and in its report row;
    # the part itself succeeds (one bad problem must not end a multi-round execution).
    log.info({"message": f"solved {ev.split}", "run": ev.run, "round": ev.round, **out})
    return {"run": ev.run, "round": ev.round, "split": ev.split, **out}
