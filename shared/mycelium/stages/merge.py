"""Stage 7, merge (a reduce): every current label commit's examples -> ``training/<component>/{train,val}.jsonl``.

The split is by problem: a hash of the problem id (an augmented variant's parent's), never by example, so
a problem and all its variants are on one side, and adding data later never moves one across. The rule and
the counts (by component, split and source; the label stage's rejection reasons) are in ``training/stats.json``.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict

from ..core.config import MergeConfig
from ..core.store import json_bytes, jsonl
from ..core.summary import StageSummary
from ..records.programs import COMPONENTS, Example
from .base import Outputs, ReduceStage, committed


def split_of(problem_id: str, val_share: float) -> str:
    """'val' or 'train', from the problem id alone (a variant passes its parent's)."""
    return "val" if int(hashlib.sha256(problem_id.encode()).hexdigest()[:8], 16) / 16**8 < val_share else "train"


class MergeStage(ReduceStage):
    name = "merge"
    after = "label"
    config_type = MergeConfig

    def process(self, item: str) -> Outputs:
        summary = StageSummary()  # counts problems
        out: dict[tuple[str, str], list[str]] = defaultdict(list)
        counts: Counter = Counter()
        outcomes: Counter = Counter()
        examples: list[tuple[Example, str]] = []
        for commit in committed(self, self.after, self.upstream_lineage, summary):
            summary.n_in += 1
            for name, v in commit.counters.items():
                if name.startswith("rejected: ") or name in ("kept", "variants", "augment_tries"):
                    outcomes[name] += v
            lines = jsonl(self.read_verified(commit, self.keys.examples(commit.item)))
            if lines:
                summary.n_out += 1
            examples += [(Example.model_validate_json(line), line) for line in lines]
        # A variant whose text is another problem's (GSM8K has near-twins that differ in their numbers) would
        # carry that problem into the other split: such a variant is dropped and counted.
        teachers = {ex.problem_id for ex, _ in examples if ex.parent_id is None}
        split_of_text: dict[str, str] = {}
        for ex, line in examples:
            split = split_of(ex.parent_id or ex.problem_id, self.config.val_share)
            if ex.parent_id is not None and (ex.problem_id in teachers
                                             or split_of_text.setdefault(ex.problem_id, split) != split):
                outcomes["variant examples dropped: another problem's text"] += 1
                continue
            out[(ex.component, split)].append(json.dumps({**json.loads(line), "split": split}))
            counts[(ex.component, split, ex.provenance.source)] += 1
        files = {self.keys.training(c, s): ("\n".join(out[(c, s)]) + "\n" if out[(c, s)] else "").encode()
                 for c in COMPONENTS for s in ("train", "val")}
        stats = {"split": {"by": "sha256 of the problem id (a variant: its parent's)", "val_share": self.config.val_share},
                 "problems": {"analysed": summary.n_in, "with_examples": summary.n_out, **dict(outcomes)},
                 "examples": {f"{c}/{s}/{src}": n for (c, s, src), n in sorted(counts.items())},
                 "lineage": self.lineage}
        files[self.keys("training", "stats.json")] = json_bytes(stats)
        return Outputs(files=files, counters={"examples": sum(counts.values())}, summary=summary,
                       detail={"examples": sum(counts.values())})
