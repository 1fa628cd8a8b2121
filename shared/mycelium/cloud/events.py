"""What a Lambda handler accepts, validated at the edge (Step Functions passes these payloads).

>>> RunEvent.model_validate({"run": "gsm8k-train", "extra": 1}).run
'gsm8k-train'
>>> ItemEvent.model_validate({"run": "r", "item_key": "runs/r/commits/capture/p0123456789ab.json"}).item
'p0123456789ab'
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..core.keys import item_of_commit


class RunEvent(BaseModel):
    """The payload every stage's event carries: the run it works on. Unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    run: str = Field(min_length=1)


class ItemEvent(RunEvent):
    """One item of a map: the key of the upstream commit that makes it an item (the Distributed Map lists them).

    ``item_key`` may be the bucket key (with the store's prefix) or the store-relative key.
    """

    item_key: str = Field(pattern=r"(^|/)commits/[a-z]+/p[0-9a-f]{12}\.json$")

    @model_validator(mode="after")
    def _of_this_run(self):
        if not (self.item_key.startswith(f"{self.run}/commits/") or f"/{self.run}/commits/" in self.item_key):
            raise ValueError(f"item_key {self.item_key!r} is not under run {self.run!r}")
        return self

    @property
    def item(self) -> str:
        return item_of_commit(self.item_key)
