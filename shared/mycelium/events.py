"""What a Lambda handler accepts, validated at the edge (Step Functions passes these payloads).

>>> RunEvent.model_validate({"run": "gsm8k-train", "extra": 1}).run
'gsm8k-train'
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class RunEvent(BaseModel):
    """The payload every stage's event carries: the run it works on. Unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    run: str = Field(min_length=1)
