"""The problem records: where a problem came from and what it says (pydantic, versioned).

Readers reject a ``schema_version`` they do not know.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Artifact(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Source(_Artifact):
    """Where a problem came from: dataset file and 1-based line number."""

    file: str
    line: int = Field(ge=1)
    dataset: Literal["gsm8k", "math", "plain"]


class Problem(_Artifact):
    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = 1
    id: str = Field(pattern=r"^p[0-9a-f]{12}$")
    question: str = Field(min_length=1)
    answer: str | None = Field(None, description="gold final answer, as text")
    solution: str | None = Field(None, description="the dataset's own worked solution (reference CoT)")
    subject: str | None = None
    level: int | None = None
    source: Source
