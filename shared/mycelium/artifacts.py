"""Typed artifacts that cross stage boundaries (pydantic v2).

Every artifact carries a ``schema_version``; readers reject versions they do not know.
"""

from __future__ import annotations

import datetime as _dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


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


class Trace(_Artifact):
    """A teacher's chain of thought for one problem, with exact token geometry.

    ``cot_offsets[i]`` is the character span of CoT token i in ``cot_text``;
    ``problem_offsets[j]`` the span of problem token j in ``Problem.question``.
    Prompt token positions ``problem_token_start .. problem_token_end`` hold the problem.
    """

    schema_version: Literal[1] = 1
    problem_id: str
    model_id: str
    cot_source: Literal["reference", "generate"]
    prompt_text: str
    prompt_len: int = Field(ge=1, description="number of prompt tokens (chat template + problem)")
    problem_token_start: int = Field(ge=0)
    problem_token_end: int = Field(ge=0)
    problem_offsets: list[tuple[int, int]]
    cot_text: str
    cot_token_ids: list[int]
    cot_offsets: list[tuple[int, int]]
    truncated: bool = False
    retokenized_equal: bool | None = Field(None, description="generate mode: re-tokenized CoT equals generated ids")
    answer_extracted: str | None = None
    correct: bool | None = None
    grade_note: str | None = None

    @model_validator(mode="after")
    def _geometry(self):
        if len(self.cot_token_ids) != len(self.cot_offsets):
            raise ValueError("cot_token_ids and cot_offsets differ in length")
        if self.problem_token_end - self.problem_token_start != len(self.problem_offsets):
            raise ValueError("problem token range and problem_offsets differ in length")
        if not self.problem_token_end <= self.prompt_len:
            raise ValueError("problem tokens extend past the prompt")
        return self

    @property
    def t_gen(self) -> int:
        return len(self.cot_token_ids)


class ArraySpec(_Artifact):
    shape: list[int]
    dtype: str


class ChunkManifest(_Artifact):
    """Small, human-readable description of one binary chunk (written last: a commit marker)."""

    schema_version: Literal[1] = 1
    format_version: int
    problem_id: str
    chunk_key: str
    trace_key: str
    bytes: int
    sha256: str
    model_id: str
    config_hash: str
    n_layers: int
    n_heads: int
    hidden_size: int
    hidden_layer: int
    prompt_len: int
    t_gen: int
    n_problem_tokens: int
    head_set: list[tuple[int, int]] = Field(description="(layer, head); head -1 is the layer's head mean")
    arrays: dict[str, ArraySpec]


class Failure(_Artifact):
    stage: str
    item: str = Field(description="problem id, or file:line for a bad dataset row")
    reason: str
    traceback: str | None = None
    at: str = Field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat())


class StageSummary(_Artifact):
    n_in: int = 0
    n_out: int = 0
    skipped: dict[str, int] = Field(default_factory=dict)
    failed: int = 0
    counters: dict[str, int | float] = Field(default_factory=dict)
    seconds: float = 0.0

    def skip(self, reason: str, n: int = 1) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + n

    def count(self, name: str, n: int | float = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n


class RunSummary(_Artifact):
    schema_version: Literal[1] = 1
    run: str
    stages: dict[str, StageSummary] = Field(default_factory=dict)
    updated_at: str = ""

    def stage(self, name: str) -> StageSummary:
        return self.stages.setdefault(name, StageSummary())
