"""Stage 6, label (a map over analysed problems): the teacher's program, checked by execution -> examples.

For each problem with a current analyze commit: assemble the program from its steps, execute it in the
sandbox, keep it only if its answer equals the dataset's (training split only: the label stage is for
training data, and evaluation never reads what it writes). A rejection is an outcome, not a failure: the
problem's ``labels/<pid>.json`` says why, and the reasons are counted. Kept programs (and their augmented
variants, ``--augment K``) give one example per specialist in ``examples/<pid>.jsonl``.

The stage comes after discover (every node carries its step's IB template) and reads analyze's items.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from ..core.config import LabelConfig
from ..core.errors import RunNotFoundError
from ..core.keys import RUN_ITEM, item_of_commit
from ..core.lineage import mismatch, read_commit
from ..core.store import jsonl
from ..records.analysis import SignalsRecord, StepRecord
from ..records.programs import LabelRecord, Provenance
from ..templates.assign import TemplateIndex
from .base import Outputs, SkipItem, Stage
from .problems import read_problems


class LabelStage(Stage):
    name = "label"
    after = "discover"
    items_from = "analyze"
    parallel = True
    config_type = LabelConfig

    def items(self) -> list[str]:
        return [item_of_commit(k) for k in self.store.list(self.keys.commits("analyze"))]

    @cached_property
    def problem_by_id(self):
        return {p.id: p for p in read_problems(self.store, self.keys)}

    @cached_property
    def templates(self) -> TemplateIndex:
        """The run's current templates (discover's commit, with the current lineage), else the stage stops."""
        commit = read_commit(self.store, self.keys, "discover", RUN_ITEM)
        why = "missing" if commit is None else mismatch(self.upstream_lineage, commit.lineage)
        if why:
            raise RunNotFoundError(f"run {self.keys.run!r}: no current templates ({why}): "
                                   f"run `mycelium aggregate` and `mycelium discover --run {self.keys.run}` first")
        return TemplateIndex.from_bytes(self.read_verified(commit, self.keys("ib", "templates.npz")))

    def ready(self) -> None:
        self.templates  # noqa: B018 - no current templates stops the stage before any item

    def process(self, pid: str) -> Outputs:
        from ..programs.augment import variants
        from ..programs.build import Rejected, build_program
        from ..programs.examples import examples

        k, cfg = self.keys, self.config
        commit = self.upstream_commit(pid)
        problem = self.problem_by_id.get(pid)
        if problem is None:
            raise SkipItem("not among the run's problems (ingest)")
        signals = SignalsRecord.model_validate_json(self.read_verified(commit, k.signals(pid)))
        steps = [StepRecord.model_validate_json(line)
                 for line in jsonl(self.read_verified(commit, k.steps(pid)))]
        counters: dict[str, int | float] = {"kept": 0}
        try:
            program = build_program(problem, steps, signals, cfg, self.templates)
        except Rejected as r:
            record = LabelRecord(problem_id=pid, kept=False, reason=r.reason, detail=r.detail[:500])
            counters[f"rejected: {r.reason}"] = 1
            lines = []
        else:
            found, tried, rejected = variants(program, cfg.augment, cfg.augment_tries, cfg.seed, cfg.sandbox_timeout_s)
            record = LabelRecord(problem_id=pid, kept=True, program=program, variants=found, augment_tries=tried,
                                 augment_rejected=dict(rejected))
            capture = read_commit(self.store, k, "capture", pid)
            provenance = Provenance(dataset=problem.source.dataset, dataset_file=Path(problem.source.file).name,
                                    dataset_line=problem.source.line, run=k.run,
                                    teacher=(capture.detail.get("model_id", "?") if capture else "?"),
                                    lineage=self.lineage, source="teacher")
            lines = [e.model_dump_json() for p in (program, *found) for e in examples(p, provenance)]
            counters.update(kept=1, nodes=len(program.nodes), pruned=program.pruned, variants=len(found),
                            augment_tries=tried, examples=len(lines))
        return Outputs(files={k.label(pid): record.model_dump_json().encode(),
                              k.examples(pid): "".join(line + "\n" for line in lines).encode()},
                       counters=counters, detail={"kept": record.kept, "reason": record.reason})
