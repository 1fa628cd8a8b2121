"""Stage 7, merge (a reduce): every current label commit's examples -> ``training/<component>/{train,val}.jsonl``.

The split is by problem: a hash of the problem id (an augmented variant's parent's), never by example, so
a problem and all its variants are on one side, and adding data later never moves one across. The rule and
the counts (by component, split and source; the label stage's rejection reasons) are in ``training/stats.json``.

Improvement round ``k`` (``MergeConfig.round``, stage ``merge-r<k>``, written under ``rounds/r<k>/training/``)
merges more sources: the teacher's labels, the mop-up runs' labels (the teacher's generated CoT on problems
nothing else solved) and the students' verified programs of rounds 1..k. A problem's examples come from one
source, the first that has some in that order (later rounds first within a kind), so a problem is never taught
two programs at once.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass

from ..core.config import MergeConfig
from ..core.keys import RunKeys, mop_up_run, student_stage
from ..core.store import json_bytes, jsonl
from ..core.summary import StageSummary
from ..records.datasets import split_of
from ..records.programs import COMPONENTS, Example
from .base import Outputs, ReduceStage, committed
from .label import live_lineage


@dataclass(frozen=True)
class Source:
    """Label commits to merge: ``stage``'s of ``run``; ``origin`` names them in the counts."""

    run: str
    stage: str
    origin: str  # teacher, mop-up, student
    round: int = 0  # the students' round (where their examples are)


class MergeStage(ReduceStage):
    name = "merge"
    after = "label"
    config_type = MergeConfig

    def __init__(self, store, run: str, config: MergeConfig):
        super().__init__(store, run, config)
        if config.round:
            self.name = f"merge-r{config.round}"

    def sources(self) -> list[Source]:
        """Round 0: the run's labels. Round k: then the mop-up runs' and the students' of rounds k..1."""
        run, k = self.keys.run, self.config.round
        mop_ups = [Source(mop_up_run(run, j), "label", "mop-up") for j in range(k, 0, -1)]
        mop_ups = [s for s in mop_ups if self.store.exists(RunKeys(s.run).stage_record("label"))]
        students = [Source(run, student_stage(j), "student", j) for j in range(k, 0, -1)
                    if self.store.exists(self.keys.stage_record(student_stage(j)))]
        return [Source(run, "label", "teacher"), *mop_ups, *students]

    def process(self, item: str) -> Outputs:
        summary = StageSummary()  # counts problems
        out: dict[tuple[str, str], list[str]] = defaultdict(list)
        counts: Counter = Counter()
        outcomes: Counter = Counter()
        examples: list[tuple[Example, str, str]] = []
        taken: dict[str, str] = {}  # root problem -> the origin its examples come from
        for source in self.sources():
            keys = RunKeys(source.run)
            lineage = (self.upstream_lineage if (source.run, source.stage) == (self.keys.run, "label")
                       else live_lineage(self.store, keys, source.stage))
            found: dict[str, list] = defaultdict(list)
            for commit in committed(self, source.stage, lineage, summary, keys=keys):
                summary.n_in += 1
                for name, v in commit.counters.items():
                    if name.startswith("rejected: ") or name in ("kept", "variants", "augment_tries"):
                        outcomes[f"{source.origin}: {name}" if self.config.round else name] += v
                for line in jsonl(self.read_verified(commit, keys.examples(commit.item, source.round))):
                    ex = Example.model_validate_json(line)
                    found[ex.parent_id or ex.problem_id].append((ex, line, source.origin))
            for root, exs in found.items():
                if root in taken:
                    outcomes[f"{source.origin} examples not used: {taken[root]} examples of the problem"] += len(exs)
                    continue
                taken[root] = source.origin
                summary.n_out += 1
                examples += exs
        # A variant whose text is another problem's (GSM8K has near-twins that differ in their numbers) would
        # carry that problem into the other split: such a variant is dropped and counted.
        originals = {ex.problem_id for ex, _, _ in examples if ex.parent_id is None}
        split_of_text: dict[str, str] = {}
        for ex, line, origin in examples:
            split = split_of(ex.parent_id or ex.problem_id, self.config.val_share)
            if split == "val" and origin != "teacher":  # val measures the rounds: only the teacher's labels
                outcomes[f"{origin} examples dropped: a val-split problem"] += 1
                continue
            if ex.parent_id is not None and (ex.problem_id in originals
                                             or split_of_text.setdefault(ex.problem_id, split) != split):
                outcomes["variant examples dropped: another problem's text"] += 1
                continue
            out[(ex.component, split)].append(json.dumps({**json.loads(line), "split": split}))
            kind = ex.provenance.source if origin != "mop-up" else "mop-up"
            counts[(ex.component, split, kind)] += 1
        k = self.config.round
        files = {self.keys.training(c, s, k): ("\n".join(out[(c, s)]) + "\n" if out[(c, s)] else "").encode()
                 for c in COMPONENTS for s in ("train", "val")}
        by_origin = Counter(taken.values())
        read = "analysed" if not k else "label commits read (every source)"
        stats = {"split": {"by": "sha256 of the problem id (a variant: its parent's)", "val_share": self.config.val_share},
                 "problems": {read: summary.n_in, "with_examples": summary.n_out, **dict(outcomes)},
                 "problems_by_source": dict(by_origin),
                 "examples": {f"{c}/{s}/{src}": n for (c, s, src), n in sorted(counts.items())},
                 "round": k, "lineage": self.lineage}
        files[self.keys(*self.keys.merged(k), "stats.json")] = json_bytes(stats)
        return Outputs(files=files, counters={"examples": sum(counts.values())}, summary=summary,
                       detail={"examples": sum(counts.values()), "problems_by_source": dict(by_origin)})
