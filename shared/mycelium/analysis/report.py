"""The analysis report of a run: boundary P/R/F1, heartbeats by dataset and level, op-label counts.

Pure: it takes the run's SignalsRecords (the analyze stage passes the committed, current ones).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable

from ..records.analysis import SignalsRecord
from .boundaries import prf


def build_report(records: Iterable[SignalsRecord]) -> dict:
    """Aggregate per-problem records: boundary P/R/F1 against the CoT's own arithmetic, heartbeats, labels."""
    tp = fp = fn = with_ref = n = steps = exprs = parsed = 0
    hb_level: dict[str, list[int]] = defaultdict(list)  # group -> heartbeat counts
    labels: dict[str, int] = defaultdict(int)
    for rec in records:
        n += 1
        steps, exprs, parsed = steps + rec.n_steps, exprs + rec.n_expressions, parsed + rec.n_parsed
        if rec.reference_boundaries or rec.boundary_fp:
            with_ref += bool(rec.n_expressions)
            tp, fp, fn = tp + rec.boundary_tp, fp + rec.boundary_fp, fn + rec.boundary_fn
        group = f"{rec.dataset} level {rec.level}" if rec.level is not None else rec.dataset
        hb_level[group].append(rec.heartbeats)
        for label, c in rec.label_counts.items():
            labels[label] += c
    return {
        "problems": n,
        "steps_per_problem": steps / n if n else 0.0,
        "expressions": exprs,
        "parse_rate": parsed / exprs if exprs else 0.0,
        "boundaries": {"problems_with_reference": with_ref, "tp": tp, "fp": fp, "fn": fn,
                       **prf(tp, fp, fn)},
        "heartbeats": {g: {"n": len(v), "mean": sum(v) / len(v), "counts": dict(sorted(Counter(v).items()))}
                       for g, v in sorted(hb_level.items())},
        "label_steps": dict(sorted(labels.items(), key=lambda kv: -kv[1])),
    }


def format_report(report: dict) -> str:
    b = report["boundaries"]
    lines = [
        f"analyzed {report['problems']} problems: {report['steps_per_problem']:.1f} steps/problem, "
        f"{report['expressions']} expressions, {100 * report['parse_rate']:.1f}% parsed",
        f"JSD boundaries vs the CoT's own arithmetic (±tolerance): precision {b['precision']:.3f} "
        f"recall {b['recall']:.3f} F1 {b['f1']:.3f} (tp {b['tp']}, fp {b['fp']}, fn {b['fn']})",
        "heartbeats: " + ", ".join(f"{g}: {v['mean']:.2f} (n={v['n']})" for g, v in report["heartbeats"].items()),
        "op labels (steps): " + ", ".join(f"{k} {v}" for k, v in report["label_steps"].items()),
    ]
    return "\n".join(lines)
