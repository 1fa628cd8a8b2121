"""What analysis writes: per problem a SignalsRecord, per step a StepRecord (pydantic, versioned)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .problems import _Artifact



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
    """Where an operand comes from: the problem (its digits, or a number word), the result of an earlier
    expression (in an earlier step: ``step``; earlier in the same step: ``chain``), or a constant."""

    text: str = Field(description="the number as the expression writes it")
    source: Literal["text", "word", "step", "chain", "constant"]
    span: tuple[int, int] | None = Field(None, description="character span in the problem text")
    span_text: str | None = None
    step: int | None = Field(None, description="the step of the earlier result (always before the operand's step)")
    expression: int | None = Field(None, description="CoT-wide index of the earlier expression whose result it is")
    ambiguous: bool = Field(False, description="the problem and an earlier result both hold this value")
    problem_attention: float | None = Field(
        None, description="where ambiguous: the computing heads' IAF above chance on the operand's tokens")


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

    schema_version: Literal[3] = 3  # 2: lineage moved to the commit marker; 3: grounding sources, ambiguity
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


class SignalsRecord(_Artifact):
    """Per-problem signal analysis: traces, boundaries, heartbeats, and what fed each signal."""

    schema_version: Literal[3] = 3  # 2: lineage moved to the commit marker; 3: IAF over chance
    problem_id: str
    dataset: Literal["gsm8k", "math", "plain"]
    level: int | None = None
    subject: str | None = None
    t_gen: int
    jsd_layers: list[int]
    jsd: list[float] = Field(description="JSD trace: mean over jsd_layers and all heads")
    jsd_smoothed: list[float]
    segmentation: str = Field(description="how the boundaries were chosen (AnalyzeConfig.segmentation)")
    boundaries: list[int] = Field(description="step boundaries (token index)")
    jsd_boundaries: list[int] = Field(description="the JSD trace's peaks, snapped to word starts")
    boundary_prominences: list[float] = Field(description="JSD peak prominence (jsd), else the smoothed JSD there")
    iaf_heads: list[tuple[int, int]]
    iaf: list[float] = Field(description="mean IAF of iaf_heads")
    iaf_over_chance: list[float] = Field(description="the same above an even spread over the visible keys (0 at t=0)")
    heartbeat_signal: str = Field(description="the trace heartbeats were counted on")
    heartbeats: int
    heartbeat_runs: list[tuple[int, int]]
    heartbeats_per_head: list[int]
    received_attention: list[float] = Field(description="per problem token, summed over CoT tokens (map heads mean)")
    reference_boundaries: list[int] = Field(
        default_factory=list, description="the first token of each calculation's own text (not layout)")
    boundary_tp: int = 0
    boundary_fp: int = 0
    boundary_fn: int = 0
    n_steps: int
    n_expressions: int
    n_parsed: int
    label_counts: dict[str, int] = Field(default_factory=dict, description="steps carrying each op label")
    config: dict
