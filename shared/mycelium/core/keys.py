"""Where every output of a run lives: one function per key, so no stage spells a path itself.

Everything of run ``R`` lives under ``R/`` in the store::

    R/stages/<stage>.json           StageRecord: the stage's current config, its hash, the stage it reads
    R/commits/<stage>/<item>.json   Commit: written last, after the item's outputs (the commit marker)
    R/failures/<stage>/<item>.json  Failure: the ledger (written on failure, removed when the item succeeds)
    R/summary.json                  RunSummary: per stage in, out, skipped by reason, failed
    R/problems/part-00000.jsonl     ingest: sharded problems (the ingest commit lists the current shards)
    R/chunks/<pid>.npz              capture: chunk format v1 (mycelium.records.chunk)
    R/traces/<pid>.json             capture: Trace
    R/capture/calibration.json      capture: computing heads, how they were found
    R/signals/<pid>.json            analyze: SignalsRecord
    R/steps/<pid>.jsonl             analyze: one StepRecord per step
    R/analyze/report.json, .png     analyze: the run's report over its committed, current outputs
    R/ib/steps.npz, ib/index.jsonl  aggregate: the IB inputs
    R/ib/taxonomy.json, *.png       discover: templates and plots
    R/ib/templates.npz              discover: each template's centroid in X (how any step gets its template)
    R/labels/<pid>.json             label: LabelRecord, the problem's program (or why not) and its variants
    R/examples/<pid>.jsonl          label: one Example per specialist per program
    R/training/<C>/{train,val}.jsonl, R/training/stats.json   merge
    R/manifest.json, R/input/<f>    a submitted run's RunManifest and dataset (mycelium.cloud.manifest)
    R/status/capture/<job>.json     each capture worker's final status
    R/status/run.json               how the cloud run ended

>>> k = RunKeys("gsm8k")
>>> k.commit("analyze", "p0123456789ab"), k.failure("aggregate", "gsm8k/steps/p0123456789ab.jsonl:7")
('gsm8k/commits/analyze/p0123456789ab.json', 'gsm8k/failures/aggregate/gsm8k_steps_p0123456789ab.jsonl_7.json')
"""

from __future__ import annotations

import re

#: The item of a stage that runs once per run (a reduce): its commit is ``commits/<stage>/run.json``.
RUN_ITEM = "run"


def check_run(run: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", run):
        raise ValueError(f"run name {run!r}: use letters, digits, '.', '_' and '-' (max 128)")
    return run


def safe_item(item: str) -> str:
    """An item id as a key's last part (a bad line's ``file:line`` becomes ``file_line``)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", item)


class RunKeys:
    def __init__(self, run: str):
        self.run = check_run(run)

    def __call__(self, *parts: str) -> str:
        return "/".join((self.run, *parts))

    # ---- the stage machinery
    def stage_record(self, stage: str) -> str:
        return self("stages", f"{stage}.json")

    def commits(self, stage: str) -> str:
        """The prefix under which ``stage`` commits its items (listing it lists the committed items)."""
        return self("commits", stage, "")

    def commit(self, stage: str, item: str) -> str:
        return self("commits", stage, safe_item(item) + ".json")

    def failures(self, stage: str) -> str:
        return self("failures", stage, "")

    def failure(self, stage: str, item: str) -> str:
        return self("failures", stage, safe_item(item) + ".json")

    @property
    def summary(self) -> str:
        return self("summary.json")

    # ---- outputs
    def shard(self, i: int) -> str:
        return self("problems", f"part-{i:05d}.jsonl")

    def chunk(self, pid: str) -> str:
        return self("chunks", f"{pid}.npz")

    def trace(self, pid: str) -> str:
        return self("traces", f"{pid}.json")

    @property
    def calibration(self) -> str:
        return self("capture", "calibration.json")

    def signals(self, pid: str) -> str:
        return self("signals", f"{pid}.json")

    def steps(self, pid: str) -> str:
        return self("steps", f"{pid}.jsonl")

    def label(self, pid: str, round: int = 0) -> str:
        """The teacher's program (round 0), or improvement round k's student program (``rounds/r<k>/labels/``)."""
        return self(*self._in_round(round), "labels", f"{pid}.json")

    def examples(self, pid: str, round: int = 0) -> str:
        return self(*self._in_round(round), "examples", f"{pid}.jsonl")

    @staticmethod
    def _in_round(round: int) -> tuple[str, ...]:
        return () if round == 0 else ("rounds", f"r{round}")

    def training(self, component: str, split: str, round: int = 0) -> str:
        return self(*self.merged(round), component, f"{split}.jsonl")

    @classmethod
    def merged(cls, round: int = 0) -> tuple[str, ...]:
        """Where merge writes: ``training/``, and an improvement round's merge ``rounds/r<k>/training/``."""
        return (*cls._in_round(round), "training")

    def round(self, k: int, *parts: str) -> str:
        """An improvement round's outputs: ``rounds/r<k>/...``."""
        return self(*self._in_round(k), *parts)

    def models(self, round: int = 0) -> str:
        """The prefix of a round's uploaded students."""
        return self(*self._in_round(round), "models", "")

    def model(self, component: str, name: str, round: int = 0) -> str:
        """A trained specialist's file, uploaded by the training worker (``models/<C>/<name>``; improvement round
        k's: ``rounds/r<k>/models/<C>/<name>``)."""
        return self(*self._in_round(round), "models", component, name)


def mop_up_run(run: str, k: int) -> str:
    """The run of improvement round ``k``'s teacher mop-up: the failures, captured with generated CoT."""
    return check_run(f"{run}.mopup-r{k}")


def student_stage(k: int) -> str:
    """The stage of improvement round ``k`` that labels training problems with the students' own programs."""
    return f"student-r{k}"


def item_of_commit(key: str) -> str:
    """The item id of a commit key (``.../commits/<stage>/<item>.json``)."""
    return key.rsplit("/", 1)[-1].removesuffix(".json")
