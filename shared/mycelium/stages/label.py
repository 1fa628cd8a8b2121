"""Stage 6, label (a map over analysed problems): the teacher's program, checked by execution -> examples.

For each problem with a current analyze commit: assemble the program from its steps, execute it in the
sandbox, keep it only if its answer equals the dataset's (training split only: the label stage is for
training data, and evaluation never reads what it writes). A rejection is an outcome, not a failure: the
problem's ``labels/<pid>.json`` says why, and the reasons are counted. Kept programs (and their augmented
variants, ``--augment K``) give one example per specialist in ``examples/<pid>.jsonl``.

The stage comes after discover (every node carries its step's IB template) and reads analyze's items. A
mop-up run (``LabelConfig.templates_run``: the failures of an improvement round, captured with generated CoT)
labels with the training run's templates: it then comes after its own analyze, and the training run's current
discover lineage is part of its config hash, so new templates make its labels stale.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from ..core.config import LabelConfig, digest
from ..core.errors import RunNotFoundError
from ..core.keys import RUN_ITEM, RunKeys, item_of_commit
from ..core.lineage import Commit, Lineage, current_lineage, mismatch, read_commit
from ..core.store import Store, jsonl
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

    def __init__(self, store, run: str, config: LabelConfig):
        super().__init__(store, run, config)
        if config.templates_run is not None:
            self.after = "analyze"  # this run has no discover of its own

    def items(self) -> list[str]:
        return [item_of_commit(k) for k in self.store.list(self.keys.commits("analyze"))]

    @cached_property
    def templates_keys(self) -> RunKeys:
        return RunKeys(self.config.templates_run or self.keys.run)

    @cached_property
    def templates_lineage(self) -> Lineage:
        return current_lineage(self.store, self.templates_keys, "discover")

    def config_hash(self) -> str:
        if self.config.templates_run is None:
            return super().config_hash()
        return digest({"config": self.config.hash(), "templates": self.templates_lineage})

    @cached_property
    def problem_by_id(self):
        return {p.id: p for p in read_problems(self.store, self.keys)}

    @cached_property
    def templates(self) -> TemplateIndex:
        """The run's current templates (discover's commit, with the current lineage), else the stage stops."""
        keys = self.templates_keys
        commit = read_commit(self.store, keys, "discover", RUN_ITEM)
        why = "missing" if commit is None else mismatch(self.templates_lineage, commit.lineage)
        if why:
            raise RunNotFoundError(f"run {keys.run!r}: no current templates ({why}): "
                                   f"run `mycelium aggregate` and `mycelium discover --run {keys.run}` first")
        return TemplateIndex.from_bytes(self.read_verified(commit, keys("ib", "templates.npz")))

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


def live_lineage(store, keys: RunKeys, stage: str) -> Lineage:
    """``stage``'s current lineage; a label stage's computed now (a mop-up run's label hash holds the main run's
    *current* templates, which its record cannot know once they change)."""
    if stage == "label":
        return LabelStage.current(store, keys.run).lineage
    return current_lineage(store, keys, stage)


def kept(store: Store, keys: RunKeys, stage: str) -> tuple[set[str], set[str]]:
    """(items with a current commit of ``stage``, those of them whose label was kept)."""
    try:
        lineage = live_lineage(store, keys, stage)
    except RunNotFoundError:  # a stage that never began has nothing
        return set(), set()
    done, good = set(), set()
    for key in store.list(keys.commits(stage)):
        commit = Commit.model_validate(store.get_json(key))
        if mismatch(lineage, commit.lineage) is None:
            done.add(commit.item)
            if commit.detail.get("kept"):
                good.add(commit.item)
    return done, good
