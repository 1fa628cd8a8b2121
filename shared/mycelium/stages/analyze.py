"""Stage 3, analyze (the map): one committed chunk -> ``signals/<pid>.json`` + ``steps/<pid>.jsonl``.

Pure CPU work, so the local runner maps it over a process pool (one worker per core); on AWS the same
:func:`mycelium.stages.base.run_one` runs once per Lambda invocation of the Distributed Map. Before a
chunk is analysed it is checked against its capture commit (the current capture lineage, the SHA-256 of
chunk and trace) and against its trace (problem id, capture config hash, CoT token ids), so a mismatched
pair is a ledger entry naming the problem, not steps from the wrong text. After every item the run's
report is written from the committed outputs of the current analyze config only.
"""

from __future__ import annotations

import numpy as np

from ..analysis.analyze import analyze
from ..analysis.report import build_report, format_report
from ..core.config import AnalyzeConfig
from ..core.errors import IntegrityError
from ..core.keys import item_of_commit
from ..core.summary import StageSummary
from ..records.analysis import SignalsRecord
from ..records.capture import Trace
from ..records.chunk import Chunk, decode_chunk
from .base import Outputs, Stage, committed


def check_pair(pid: str, capture_hash: str, trace: Trace, chunk: Chunk) -> None:
    """A chunk and a trace of one capture of problem ``pid``, or IntegrityError saying what differs."""
    meta = chunk.meta
    if trace.problem_id != pid or meta.get("problem_id") != pid:
        raise IntegrityError(pid, f"trace is of {trace.problem_id}, chunk of {meta.get('problem_id')}")
    if meta.get("config_hash") != capture_hash:
        raise IntegrityError(pid, f"chunk made with capture config {meta.get('config_hash')}, "
                                  f"its commit says {capture_hash}")
    if chunk.iaf.shape[-1] != trace.t_gen or not np.array_equal(chunk.cot_token_ids, trace.cot_token_ids):
        raise IntegrityError(pid, f"chunk's CoT tokens ({chunk.iaf.shape[-1]}) differ from the trace's ({trace.t_gen})")


class AnalyzeStage(Stage):
    name = "analyze"
    after = "capture"
    parallel = True
    config_type = AnalyzeConfig

    def items(self) -> list[str]:
        return [item_of_commit(k) for k in self.store.list(self.keys.commits("capture"))]

    def process(self, pid: str) -> Outputs:
        k = self.keys
        commit = self.upstream_commit(pid)
        trace = Trace.model_validate_json(self.read_verified(commit, k.trace(pid)))
        chunk = decode_chunk(self.read_verified(commit, k.chunk(pid)), k.chunk(pid))
        check_pair(pid, commit.lineage["capture"], trace, chunk)
        record, steps = analyze(trace, chunk, self.config)
        return Outputs(
            files={k.steps(pid): "".join(s.model_dump_json() + "\n" for s in steps).encode(),
                   k.signals(pid): record.model_dump_json().encode()},
            counters={"steps": len(steps), "expressions": record.n_expressions, "parsed": record.n_parsed},
            detail={"heartbeats": record.heartbeats, "boundaries": len(record.boundaries), "dataset": record.dataset,
                    "level": record.level},
        )

    def records(self, excluded: StageSummary, corrupt: dict[str, str]):
        """The run's SignalsRecords of the current analyze config. What is not read is counted in
        ``excluded``; a committed output that fails its check is named in ``corrupt`` (problem -> why)."""
        for commit in committed(self, self.name, self.lineage, excluded):
            try:
                yield SignalsRecord.model_validate_json(self.read_verified(commit, self.keys.signals(commit.item)))
            except (IntegrityError, ValueError) as e:
                corrupt[commit.item] = str(e).splitlines()[0]

    def finish(self, summary: StageSummary) -> None:
        """``analyze/report.json`` (+ heartbeats PNG) over the committed, current outputs.

        It only reads: a committed output that fails its check is named in the report (and counted in the
        summary), and deleting its commit marker makes the next run redo it.
        """
        from ..viz.plots import heartbeats_png

        excluded, corrupt = StageSummary(), {}
        report = build_report(self.records(excluded, corrupt))
        report["excluded"] = {"skipped": excluded.skipped, "corrupt_outputs": corrupt}
        self.store.put_json(self.keys("analyze", "report.json"), report)
        if report["problems"]:
            self.store.put(self.keys("analyze", "heartbeats.png"), heartbeats_png(report))
        summary.counters.update({k: v for k, v in report["boundaries"].items() if isinstance(v, (int, float))})
        if corrupt:
            summary.count("corrupt_outputs", len(corrupt))

    def report_text(self) -> str:
        report = self.store.get_json(self.keys("analyze", "report.json"))
        lines = [format_report(report)]
        for pid, why in report["excluded"]["corrupt_outputs"].items():
            lines.append(f"excluded, its committed output fails its check: {why} "
                         f"(delete {self.keys.commit(self.name, pid)} to analyse it again)")
        return "\n".join(lines)
