"""The reader's programs: where they come from (GSM8K's annotations, a labelled run's teacher programs) and
the split each problem belongs to (merge's, by problem id)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import ConfigError
from ..programs.steps import StepProgram


@dataclass
class Labelled:
    id: str
    question: str
    answer: str
    program: StepProgram
    split: str
    alternatives: list[StepProgram] = field(default_factory=list)  # other right programs (the loop's)


def annotation_programs(path: Path, val_share: float = 0.1, order: str = "canonical"
                        ) -> tuple[list[Labelled], Counter]:
    """GSM8K rows with their annotations as step programs (string-matched), and why the others have none."""
    from ..programs.steps import NotAProgram, from_annotations
    from ..records.datasets import BadRowError, read_dataset
    from ..records.datasets import split_of

    out, reasons = [], Counter()
    for row in read_dataset(path, "gsm8k"):
        if isinstance(row, BadRowError):
            reasons["bad row"] += 1
            continue
        try:
            prog = from_annotations(row.question, row.solution or "", row.answer, order)
        except NotAProgram as e:
            reasons[e.reason] += 1
            continue
        out.append(Labelled(row.id, row.question, row.answer, prog, split_of(row.id, val_share)))
    return out, reasons


def run_programs(store, run: str, val_share: float = 0.1) -> tuple[list[Labelled], Counter]:
    """A labelled run's teacher programs as step programs (with the values the teacher read), their augmented
    variants in train only; and why the others have none."""
    from ..programs.steps import NotAProgram, from_program
    from ..records.programs import LabelRecord
    from ..records.datasets import split_of

    out, reasons = [], Counter()
    keys = store.list(f"{run}/labels/")
    if not keys:
        raise ConfigError(f"run {run}: no labels (run `mycelium label --run {run}`)")
    for key in keys:
        rec = LabelRecord.model_validate_json(store.get(key))
        if not rec.kept:
            reasons[rec.reason or "not kept"] += 1
            continue
        split = split_of(rec.problem_id, val_share)
        for prog in [rec.program] + (rec.variants if split == "train" else []):
            try:
                out.append(Labelled(prog.problem_id, prog.question, prog.answer, from_program(prog), split))
            except NotAProgram as e:
                reasons[e.reason] += 1
    return out, reasons
