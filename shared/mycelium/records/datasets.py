"""Dataset loaders: GSM8K, MATH and plain ``{question, answer}`` JSONL.

Rows are read as bytes and validated one by one; a bad row becomes a
:class:`BadRowError` naming file, line and reason, and reading goes on.

>>> import json, tempfile
>>> p = tempfile.mktemp(suffix=".jsonl")
>>> _ = open(p, "w").write(json.dumps({"question": "1+1?", "answer": "1+1=<<1+1=2>>2\\n#### 2"}) + "\\n{oops\\n")
>>> [type(r).__name__ for r in read_dataset(p)]
['Problem', 'BadRowError']
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from ..core.errors import BadRowError
from ..mathlang.answers import clean_number, last_boxed
from .problems import Problem, Source

Format = Literal["auto", "gsm8k", "math", "plain"]


def problem_id(question: str) -> str:
    """Stable id: a content hash of the whitespace-normalised question text."""
    norm = " ".join(question.split())
    return "p" + hashlib.sha256(norm.encode()).hexdigest()[:12]


def split_of(problem_id: str, val_share: float) -> str:
    """'val' or 'train', from the problem id alone (a variant passes its parent's): merge's split, and the
    reader's."""
    return "val" if int(hashlib.sha256(problem_id.encode()).hexdigest()[:8], 16) / 16**8 < val_share else "train"


class _Row(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_blank_strings(cls, v, info):
        if isinstance(v, str) and not v.strip() and info.field_name in ("question", "problem"):
            raise ValueError("is empty")
        return v


class _GSM8KRow(_Row):
    question: str
    answer: str


class _MathRow(_Row):
    problem: str
    solution: str
    answer: str | int | float | None = None
    subject: str | None = None
    type: str | None = None
    level: int | str | None = None


class _PlainRow(_Row):
    question: str
    answer: str | int | float
    solution: str | None = None


def _detect(obj: dict) -> str:
    if "problem" in obj:
        return "math"
    answer = obj.get("answer")
    # A worked GSM8K solution (steps, annotations) without its "####" line is a bad GSM8K row,
    # not a plain row whose gold answer is a paragraph.
    if isinstance(answer, str) and ("####" in answer or "<<" in answer or "\n" in answer.strip()):
        return "gsm8k"
    return "plain"


def _level(v: int | str | None) -> int | None:
    if v is None or isinstance(v, int):
        return v
    m = re.search(r"\d+", v)
    if not m:
        raise ValueError(f"level {v!r} has no number")
    return int(m.group())


def _num(v: str | int | float) -> str:
    if isinstance(v, float) and not math.isfinite(v):
        raise ValueError(f"answer {v!r} is not a finite number")
    out = clean_number(str(v)) if not isinstance(v, str) else v.strip()
    if not out:
        raise ValueError("answer is empty")
    return out


def _to_problem(obj: dict, fmt: str, source: Source) -> Problem:
    if fmt == "gsm8k":
        row = _GSM8KRow.model_validate(obj)
        if "####" not in row.answer:
            raise ValueError("GSM8K answer has no '#### <final answer>' line")
        steps, _, final = row.answer.rpartition("####")
        final = clean_number(final)
        if not final:
            raise ValueError("GSM8K answer is empty after '####'")
        return Problem(id=problem_id(row.question), question=row.question.strip(), answer=final,
                       solution=steps.strip(), source=source)
    if fmt == "math":
        row = _MathRow.model_validate(obj)
        answer = _num(row.answer) if row.answer is not None else last_boxed(row.solution)
        if not answer:
            raise ValueError("MATH row has no 'answer' and no \\boxed{} in its solution")
        return Problem(id=problem_id(row.problem), question=row.problem.strip(), answer=answer,
                       solution=row.solution.strip(), subject=row.subject or row.type, level=_level(row.level),
                       source=source)
    row = _PlainRow.model_validate(obj)
    return Problem(id=problem_id(row.question), question=row.question.strip(), answer=_num(row.answer),
                   solution=row.solution.strip() if row.solution else None, source=source)


def dataset_row(problem: Problem) -> dict:
    """The problem as a row of its own dataset's format: ``read_dataset`` reads it back as the same problem (the
    same id, question, answer, solution, subject and level; the source is the new file's)."""
    fmt = problem.source.dataset
    if fmt == "gsm8k":
        return {"question": problem.question, "answer": f"{problem.solution or ''}\n#### {problem.answer}"}
    if fmt == "math":
        return {"problem": problem.question, "solution": problem.solution or "", "answer": problem.answer,
                "subject": problem.subject, "level": problem.level}
    return {"question": problem.question, "answer": problem.answer, "solution": problem.solution}


def _reason(e: Exception) -> str:
    if isinstance(e, ValidationError):
        parts = []
        for err in e.errors():
            loc = ".".join(str(x) for x in err["loc"]) or "row"
            parts.append(f"field '{loc}': {err['msg'].lower()}")
        return "; ".join(parts)
    return str(e)


def read_dataset(
    path: str | Path,
    fmt: Format = "auto",
    *,
    token_counter: Callable[[str], int] | None = None,
    max_tokens: int | None = None,
) -> Iterator[Problem | BadRowError]:
    """Yield a Problem per good row and a BadRowError per bad one, in file order.

    With ``token_counter`` and ``max_tokens``, problems longer than the teacher's
    context budget are reported as bad rows.
    """
    path = Path(path)
    name = str(path)
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield BadRowError(name, lineno, f"not UTF-8 (byte {e.start}: {raw[e.start:e.start + 1]!r})")
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as e:
                yield BadRowError(name, lineno, f"invalid JSON ({e.msg} at column {e.colno})")
                continue
            if not isinstance(obj, dict):
                yield BadRowError(name, lineno, f"row is a JSON {type(obj).__name__}, expected an object")
                continue
            row_fmt = _detect(obj) if fmt == "auto" else fmt
            try:
                problem = _to_problem(obj, row_fmt, Source(file=name, line=lineno, dataset=row_fmt))
            except (ValidationError, ValueError) as e:
                yield BadRowError(name, lineno, f"{row_fmt} row: {_reason(e)}")
                continue
            if token_counter is not None and max_tokens is not None:
                n = token_counter(problem.question)
                if n > max_tokens:
                    yield BadRowError(name, lineno, f"problem {problem.id} is {n} tokens, over the teacher's budget of {max_tokens}")
                    continue
            yield problem
