"""Lambda: discover operation templates with the Information Bottleneck.

Event: ``{"run": "gsm8k-train", "gain": 0.15, "min_size": 50}``. The config is the run manifest's
(the default for a run that was not submitted); ``gain`` and ``min_size`` in the event override it.
Writes ``ib/taxonomy.json`` and the plots; returns the template count and the key.
"""

from __future__ import annotations

import logging
import os

from pydantic import Field

from mycelium import env
from mycelium.config import DiscoverConfig
from mycelium.discover import discover
from mycelium.events import RunEvent
from mycelium.manifest import submitted
from mycelium.runs import RunKeys
from mycelium.store import open_store

log = logging.getLogger()
log.setLevel(logging.INFO)

STORE = open_store(os.environ.get(env.STORE_URL))


class DiscoverEvent(RunEvent):
    gain: float | None = Field(None, gt=0)
    min_size: int | None = Field(None, ge=1)
    elbow: bool = False


def handler(event: dict, context=None) -> dict:
    ev = DiscoverEvent.model_validate(event)
    manifest = submitted(STORE, RunKeys(ev.run))
    base = manifest.discover if manifest else DiscoverConfig()
    fields = {k: v for k, v in {"gain": ev.gain, "min_size": ev.min_size}.items() if v is not None}
    taxonomy = discover(STORE, ev.run, base.model_copy(update={"progress": False, **fields}), elbow=ev.elbow)
    out = {"run": ev.run, "templates": taxonomy["n_templates"], "families": taxonomy["n_families"],
           "purity": taxonomy["purity"], "taxonomy_key": RunKeys(ev.run)("ib", "taxonomy.json")}
    log.info({"message": "discovered", **out})
    return out
