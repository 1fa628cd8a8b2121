"""Stage 4, aggregate (a reduce): every committed, current step of the run -> the IB inputs.

Reads ``steps/<pid>.jsonl`` of the problems whose analyze commit has the run's current lineage (the
rest are counted as skipped, with the reason); a bad line is a ledger entry naming ``file:line`` and
counted, and the others go on. Writes ``ib/steps.npz`` (X: float32 [N, d] step embeddings; Y: float32
[N, V] op-label sets as distributions; the vocabulary) and ``ib/index.jsonl`` (one line per row); the
commit records the lineage they came from.
"""

from __future__ import annotations

import json

from pydantic import ValidationError

from ..core.config import AggregateConfig
from ..core.errors import IntegrityError
from ..core.keys import RUN_ITEM
from ..core.ledger import record_failure
from ..core.store import jsonl
from ..core.summary import StageSummary
from ..records.analysis import StepRecord
from ..templates.steps import StepTable, StepTableBuilder
from .base import Outputs, ReduceStage, Stage, committed


class AggregateStage(ReduceStage):
    name = "aggregate"
    after = "analyze"
    config_type = AggregateConfig

    def process(self, item: str) -> Outputs:
        summary = StageSummary()  # counts steps; problems that are not read are counted as skipped
        builder = StepTableBuilder()
        problems = 0
        for commit in committed(self, self.after, self.upstream_lineage, summary):
            key = self.keys.steps(commit.item)
            try:
                lines = self.read_verified(commit, key).decode().split("\n")  # line numbers as in the file
            except IntegrityError as e:
                summary.failed += 1
                record_failure(self.store, self.keys, self.name, commit.item, str(e), e)
                continue
            problems += 1
            for lineno, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                summary.n_in += 1
                try:
                    step = StepRecord.model_validate_json(line)
                except ValidationError as e:
                    summary.failed += 1
                    record_failure(self.store, self.keys, self.name, f"{key}:{lineno}",
                                   f"{key}:{lineno}: not a step record ({str(e).splitlines()[0]})")
                    continue
                why = builder.add(step)
                if why:
                    summary.skip(why)
        table = builder.build()
        summary.n_out = len(table.index)
        return Outputs(
            files={self.keys("ib", "steps.npz"): table.to_bytes(),
                   self.keys("ib", "index.jsonl"): "".join(json.dumps(r) + "\n" for r in table.index).encode()},
            counters={"problems": problems, "dims": int(table.X.shape[1]), "labels": len(table.vocab)},
            detail={"vocab": table.vocab, "steps": len(table.index), "dims": int(table.X.shape[1])},
            summary=summary,
        )


def load_table(stage: Stage) -> StepTable:
    """The run's current ``ib/`` table, verified against the aggregate commit."""
    commit = stage.upstream_commit(RUN_ITEM)
    k = stage.keys
    index = [json.loads(line) for line in jsonl(stage.read_verified(commit, k("ib", "index.jsonl")))]
    return StepTable.from_bytes(stage.read_verified(commit, k("ib", "steps.npz")), index)
