"""The run summary: per stage, items in, out, skipped by reason, failed, counters, seconds.

>>> s = StageSummary(); s.skip("already done"); s.count("steps", 3); s.skipped, s.counters
({'already done': 1}, {'steps': 3})
"""

from __future__ import annotations

import datetime as _dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from .keys import RunKeys
from .store import Store


class StageSummary(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n_in: int = 0
    n_out: int = 0
    skipped: dict[str, int] = Field(default_factory=dict)
    failed: int = 0
    counters: dict[str, int | float] = Field(default_factory=dict)
    seconds: float = 0.0

    @property
    def all_failed(self) -> bool:
        """Every item this call tried failed (nothing written, nothing already done)."""
        return self.failed > 0 and self.n_out == 0 and not self.skipped

    def skip(self, reason: str, n: int = 1) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + n

    def count(self, name: str, n: int | float = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    def merge(self, other: "StageSummary") -> None:
        """Add ``other``'s counts to this one's."""
        self.n_in += other.n_in
        self.n_out += other.n_out
        self.failed += other.failed
        for reason, n in other.skipped.items():
            self.skip(reason, n)
        for name, v in other.counters.items():
            self.count(name, v)


class RunSummary(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = 1
    run: str
    stages: dict[str, StageSummary] = Field(default_factory=dict)
    updated_at: str = ""


def load_summary(store: Store, keys: RunKeys) -> RunSummary:
    if store.exists(keys.summary):
        return RunSummary.model_validate(store.get_json(keys.summary))
    return RunSummary(run=keys.run)


def save_stage(store: Store, keys: RunKeys, stage: str, summary: StageSummary) -> RunSummary:
    """Replace one stage's entry in the run summary (read, update, write: stages of a run run one at a time)."""
    run = load_summary(store, keys)
    run.stages[stage] = summary
    run.updated_at = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    store.put_json(keys.summary, run.model_dump(mode="json"))
    return run


def format_summary(summary: RunSummary) -> str:
    """A plain-text table of the run summary, one row per stage."""
    rows = [("stage", "in", "out", "skipped", "failed", "seconds")]
    for name, s in summary.stages.items():
        skipped = ", ".join(f"{k}: {v}" for k, v in sorted(s.skipped.items())) or "0"
        rows.append((name, str(s.n_in), str(s.n_out), skipped, str(s.failed), f"{s.seconds:.1f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [f"run {summary.run}"] + ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    for name, s in summary.stages.items():
        if s.counters:
            lines.append(f"{name}: " + ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(s.counters.items())))
    return "\n".join(lines)


def _fmt(v: int | float) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
