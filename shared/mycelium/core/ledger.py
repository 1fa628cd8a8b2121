"""The failure ledger: one record per failed item, written when it fails and removed when it succeeds.

The same calls run locally and on AWS (each Lambda and worker role may delete under its own stage's
``failures/<stage>/``), so the ledger always says which items of the current run are failing.
"""

from __future__ import annotations

import datetime as _dt
import traceback as _tb
from collections.abc import Iterator

from pydantic import BaseModel, ConfigDict, Field

from .keys import RunKeys
from .store import Store


class Failure(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stage: str
    item: str = Field(description="problem id, or file:line for a bad dataset row or record")
    reason: str
    traceback: str | None = None
    at: str = Field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat())


def record_failure(store: Store, keys: RunKeys, stage: str, item: str, reason: str,
                   exc: BaseException | None = None) -> Failure:
    tb = "".join(_tb.format_exception(exc)) if exc is not None else None
    failure = Failure(stage=stage, item=item, reason=reason, traceback=tb)
    store.put_json(keys.failure(stage, item), failure.model_dump(mode="json"))
    return failure


def clear_failure(store: Store, keys: RunKeys, stage: str, item: str) -> None:
    """The item succeeded: an earlier failure of it is history now."""
    store.delete(keys.failure(stage, item))


def failed_items(store: Store, keys: RunKeys, stage: str) -> Iterator[str]:
    """Keys of the ledger entries of ``stage``."""
    yield from store.list(keys.failures(stage))
