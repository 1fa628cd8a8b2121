"""Improvement round k's labels from the students themselves (a map over the training problems).

Round k-1's students read each training-split problem's text (the loop's problems: ``loop_problems``), the
solver's best-first search proposes programs, the sandbox executes them, and the most probable program whose
value is the dataset's answer becomes the problem's label (``solver.verified``): ``rounds/r<k>/labels/<pid>.json``
and its examples (source ``student``) in ``rounds/r<k>/examples/<pid>.jsonl``, which merge reads as it reads the
teacher's. No teacher call: execution is the verifier. A problem with no such program is an outcome, not a
failure (``kept: false`` with the reason), and goes to the teacher's mop-up.

The stage's name is ``student-r<k>``; its lineage is the run's problems and the students' content digest, so
other students make every label stale. Val-split problems are never read: they measure each round.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from ..core.config import StudentLabelConfig
from ..core.errors import ConfigError
from ..core.keys import RunKeys, student_stage
from ..core.lineage import read_record
from ..core.store import Store
from ..records.programs import LabelRecord, Provenance
from .base import Outputs, SkipItem, Stage
from .merge import split_of
from .problems import read_problems


def loop_problems(store: Store, keys: RunKeys, val_share: float, limit: int | None = None,
                  split: str = "train") -> list[str]:
    """The run's problems of ``split`` (merge's rule), by id; the first ``limit`` of them."""
    ids = sorted(p.id for p in read_problems(store, keys) if split_of(p.id, val_share) == split)
    return ids[:limit] if limit is not None else ids


class StudentLabelStage(Stage):
    after = "ingest"
    config_type = StudentLabelConfig

    def __init__(self, store: Store, run: str, config: StudentLabelConfig, teacher=None):
        """``teacher``: the backbone, already loaded (else ``config.backbone`` is loaded)."""
        super().__init__(store, run, config)
        self.name = student_stage(config.round)
        self._teacher = teacher

    @classmethod
    def of_round(cls, store: Store, run: str, k: int, **kwargs) -> "StudentLabelStage":
        """Round k's stage with its recorded config (RunNotFoundError when the round has not begun)."""
        record = read_record(store, RunKeys(run), student_stage(k))
        return cls(store, run, StudentLabelConfig.model_validate(record.config), **kwargs)

    def items(self) -> list[str]:
        return loop_problems(self.store, self.keys, self.config.val_share, self.config.problems)

    @cached_property
    def problem_by_id(self):
        return {p.id: p for p in read_problems(self.store, self.keys)}

    @cached_property
    def solver(self):
        from ..solver.solve import Solver, SolverOptions
        from ..teacher.model import load_teacher

        from ..students.saved import models_digest

        cfg = self.config
        if models_digest(Path(cfg.models)) != cfg.models_sha256:
            raise ConfigError(f"{cfg.models}: not the students this round was begun with (digest "
                              f"{models_digest(Path(cfg.models))}, recorded {cfg.models_sha256})")
        return Solver(Path(cfg.models), self._teacher or load_teacher(cfg.backbone),
                      SolverOptions(theta=cfg.theta, width=cfg.width, budget=cfg.budget, max_programs=cfg.max_programs,
                                    timeout_s=cfg.sandbox_timeout_s))

    def ready(self) -> None:
        self.solver  # noqa: B018 - missing students stop the stage before any item

    def process(self, pid: str) -> Outputs:
        from ..programs.examples import examples
        from ..solver.solve import Question
        from ..solver.verified import VERIFIED, first_correct, student_program

        problem = self.problem_by_id.get(pid)
        if problem is None or pid not in self.problems:
            raise SkipItem("not among the run's problems (ingest)")
        if split_of(pid, self.config.val_share) != "train":
            raise SkipItem("a val-split problem: it measures the round, it is never labelled")
        if not problem.answer:
            raise SkipItem("no gold answer: nothing to verify a program against")
        k, keys, gold = self.config.round, self.keys, problem.answer
        reading = self.solver.read(Question(id=pid, text=problem.question))  # the text only
        computed, stats, tried = self.solver.search(reading, reading.decisions, reading.fmt,
                                                    lambda found: first_correct(found, gold) is not None)
        hit = first_correct(computed, gold)
        counters: dict[str, int | float] = {"kept": 0, "programs_tried": tried,
                                            "solved": int(bool(computed) and hit is not None and hit[0] == 0)}
        lines: list[str] = []
        if hit is None:
            record = LabelRecord(problem_id=pid, kept=False, reason="no student program computes the answer",
                                 detail=f"{len(computed)} of {tried} programs computed; none is {gold}")
            counters["rejected: no student program computes the answer"] = 1
        else:
            program = student_program(problem, hit[1], reading.node_templates)
            record = LabelRecord(problem_id=pid, kept=True, program=program)
            provenance = Provenance(dataset=problem.source.dataset, dataset_file=Path(problem.source.file).name,
                                    dataset_line=problem.source.line, run=keys.run,
                                    teacher=f"students:{self.config.models_sha256}", lineage=self.lineage, source="student")
            lines = [e.model_dump_json() for e in examples(program, provenance, VERIFIED)]
            counters.update(kept=1, rank=hit[0], nodes=len(program.nodes), examples=len(lines))
        return Outputs(files={keys.label(pid, k): record.model_dump_json().encode(),
                              keys.examples(pid, k): "".join(line + "\n" for line in lines).encode()},
                       counters=counters, detail={"kept": record.kept, "solved": counters["solved"]})
