"""Keys of a run's outputs, the run summary, and failure records.

Everything of run ``R`` lives under ``R/`` in the store::

    R/problems/part-00000.jsonl   ingest: sharded problems
    R/chunks/<pid>.npz            capture: chunk format v1 (mycelium.chunk)
    R/chunks/<pid>.json           capture: ChunkManifest, written last (commit marker)
    R/traces/<pid>.json           capture: Trace
    R/capture/config.json         capture: the config (and hash) this run was captured with
    R/capture/calibration.json    capture: computing heads, how they were found
    R/failures/<stage>/<item>.json  one Failure per failed item
    R/summary.json                RunSummary: per stage in, out, skipped by reason, failed
    R/manifest.json               RunManifest of a submitted run (mycelium.manifest); its upload starts it on AWS
    R/status/capture/<job>.json   each capture worker's final status (succeeded, or failed with traceback)
    R/status/run.json             how the cloud run ended: succeeded, or failed with the state machine's error
"""

from __future__ import annotations

import datetime as _dt
import re
import traceback as _tb

from .artifacts import Failure, RunSummary
from .store import Store


def _check_run(run: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", run):
        raise ValueError(f"run name {run!r}: use letters, digits, '.', '_' and '-' (max 128)")
    return run


class RunKeys:
    def __init__(self, run: str):
        self.run = _check_run(run)

    def __call__(self, *parts: str) -> str:
        return "/".join((self.run, *parts))

    def shard(self, i: int) -> str:
        return self("problems", f"part-{i:05d}.jsonl")

    def chunk(self, pid: str) -> str:
        return self("chunks", f"{pid}.npz")

    def manifest(self, pid: str) -> str:
        return self("chunks", f"{pid}.json")

    def trace(self, pid: str) -> str:
        return self("traces", f"{pid}.json")

    def failure(self, stage: str, item: str) -> str:
        return self("failures", stage, re.sub(r"[^A-Za-z0-9._-]", "_", item) + ".json")

    @property
    def summary(self) -> str:
        return self("summary.json")


def record_failure(store: Store, keys: RunKeys, stage: str, item: str, reason: str, exc: BaseException | None = None):
    tb = "".join(_tb.format_exception(exc)) if exc is not None else None
    failure = Failure(stage=stage, item=item, reason=reason, traceback=tb)
    store.put_json(keys.failure(stage, item), failure.model_dump(mode="json"))
    return failure


def load_summary(store: Store, keys: RunKeys) -> RunSummary:
    if store.exists(keys.summary):
        return RunSummary.model_validate(store.get_json(keys.summary))
    return RunSummary(run=keys.run)


def save_summary(store: Store, keys: RunKeys, summary: RunSummary) -> None:
    summary.updated_at = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    store.put_json(keys.summary, summary.model_dump(mode="json"))


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


def record_run_status(store: Store, keys: RunKeys, state: str, error: str | None = None, cause: str | None = None,
                      outputs: dict | None = None) -> dict:
    """``status/run.json``: how a run ended, so nobody has to read the execution history to learn why."""
    status = {"run": keys.run, "state": state, "error": error, "cause": cause, "outputs": outputs or {},
              "at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    store.put_json(keys("status", "run.json"), status)
    return status
