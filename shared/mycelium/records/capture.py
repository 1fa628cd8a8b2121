"""What capture writes besides the chunk: the trace of one problem and the run's calibration.

>>> Calibration(problem_ids=["p000000000000"], scores=[[0.1]], computing_heads=[(0, 0)]).computing_heads
[(0, 0)]
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from .problems import _Artifact


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


class Calibration(_Artifact):
    """The computing heads of a run: the heads whose IAF switches most between reading the problem and not."""

    schema_version: Literal[1] = 1
    problem_ids: list[str] = Field(description="the problems calibration captured")
    scores: list[list[float]] = Field(description="[layer][head] mean telegraph score")
    computing_heads: list[tuple[int, int]]
    # What the pinned capture config leaves to the machine ("auto" dtype: bf16 on a GPU, fp32 on a CPU):
    # every worker of the run must load the teacher the same way, or one lineage would hold two precisions.
    dtype: str | None = Field(None, description="the teacher's dtype as loaded, e.g. 'torch.float32'")
    n_layers: int | None = None
    n_heads: int | None = None
    method: str = ("top-k heads by mean std over CoT tokens of the head's IAF trace "
                   "(mycelium.analysis.signals.telegraph_score)")
