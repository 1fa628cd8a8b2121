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
    question: str = Field(description="the problem text the offsets index (no gold answer here)")
    dataset: Literal["gsm8k", "math", "plain"]
    subject: str | None = None
    level: int | None = None
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

    @property
    def all_failed(self) -> bool:
        """Every item this call tried failed (nothing written, nothing already done)."""
        return self.failed > 0 and self.n_out == 0 and not self.skipped

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


# ---- analysis (stage 3) ------------------------------------------------------------------------


class Embedding(_Artifact):
    """A vector stored compactly: base64 of little-endian float16."""

    dim: int
    dtype: Literal["float16"] = "float16"
    b64: str

    @classmethod
    def from_array(cls, x) -> "Embedding":
        import base64

        import numpy as np

        arr = np.asarray(x, dtype="<f2").ravel()
        return cls(dim=arr.size, b64=base64.b64encode(arr.tobytes()).decode())

    def to_array(self):
        import base64

        import numpy as np

        return np.frombuffer(base64.b64decode(self.b64), dtype="<f2").astype(np.float32)


class Operand(_Artifact):
    text: str = Field(description="the number as the expression writes it")
    source: Literal["text", "word", "step", "constant"]
    span: tuple[int, int] | None = Field(None, description="character span in the problem text")
    span_text: str | None = None
    step: int | None = Field(None, description="index of the prior step whose result this is")


class ExpressionRecord(_Artifact):
    kind: Literal["annotation", "inline", "latex"]
    text: str
    char_start: int
    char_end: int
    result_text: str | None = None
    ok: bool
    reason: str | None = None
    sympy: str | None = None
    labels: list[str] = Field(default_factory=list)
    value: str | None = None
    value_matches_result: bool | None = None
    operands: list[Operand] = Field(default_factory=list)


class MappedSpan(_Artifact):
    start: int
    end: int
    text: str
    score: float


class StepRecord(_Artifact):
    """One computation step of a CoT: its span, expressions, labels, problem mapping, embedding."""

    schema_version: Literal[1] = 1
    problem_id: str
    dataset: Literal["gsm8k", "math", "plain"]
    index: int
    token_start: int
    token_end: int
    char_start: int
    char_end: int
    text: str
    expressions: list[ExpressionRecord] = Field(default_factory=list)
    labels: list[str] = Field(default_factory=list, description="union of the parsed expressions' op labels")
    unlabelled_reason: str | None = None
    top_tokens: list[tuple[int, float]] = Field(default_factory=list, description="(problem token, attention)")
    mapped_spans: list[MappedSpan] = Field(default_factory=list)
    embedding: Embedding
    config_hash: str


class SignalsRecord(_Artifact):
    """Per-problem signal analysis: traces, boundaries, heartbeats, and what fed each signal."""

    schema_version: Literal[1] = 1
    problem_id: str
    dataset: Literal["gsm8k", "math", "plain"]
    level: int | None = None
    subject: str | None = None
    t_gen: int
    jsd_layers: list[int]
    jsd: list[float] = Field(description="JSD trace: mean over jsd_layers and all heads")
    jsd_smoothed: list[float]
    boundaries: list[int] = Field(description="step boundaries (token index), snapped to word starts")
    boundary_prominences: list[float]
    iaf_heads: list[tuple[int, int]]
    iaf: list[float] = Field(description="mean IAF of iaf_heads")
    heartbeats: int
    heartbeat_runs: list[tuple[int, int]]
    heartbeats_per_head: list[int]
    received_attention: list[float] = Field(description="per problem token, summed over CoT tokens (map heads mean)")
    reference_boundaries: list[int] = Field(default_factory=list, description="from the CoT's own arithmetic")
    boundary_tp: int = 0
    boundary_fp: int = 0
    boundary_fn: int = 0
    n_steps: int
    n_expressions: int
    n_parsed: int
    label_counts: dict[str, int] = Field(default_factory=dict, description="steps carrying each op label")
    config_hash: str
    config: dict
