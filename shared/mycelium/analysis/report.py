"""The analysis report of a run: boundary P/R/F1, heartbeats by dataset and level, op-label counts.

Pure: it takes the run's SignalsRecords (the analyze stage passes the committed, current ones).
Heartbeats are reported on both traces, raw IAF and IAF above chance, raw and per 100 CoT tokens, and
for levelled data (MATH) with the level's coefficient in a regression on level and CoT length, since
longer chains have more pulses whatever their level.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable

import numpy as np

from ..records.analysis import SignalsRecord
from .boundaries import prf
from .timeseries import runs_above


#: A first heartbeat that starts within this many tokens says more about the first rows' lack of choice than
#: about the CoT (the raw IAF of token 0 is 1 by construction; the next rows can barely look elsewhere).
EARLY = 10


def heartbeat_row(rec: SignalsRecord) -> dict:
    """One problem's heartbeats on raw IAF and above chance, with its level and CoT length."""
    thr, run = rec.config["heartbeat_threshold"], rec.config["heartbeat_min_run"]
    _, raw_s, _ = runs_above(np.asarray(rec.iaf), thr, run)
    _, cor_s, _ = runs_above(np.asarray(rec.iaf_over_chance), thr, run)
    return {"dataset": rec.dataset, "level": rec.level, "tokens": rec.t_gen, "raw": len(raw_s), "above_chance": len(cor_s),
            "raw_starts_early": bool(len(raw_s) and raw_s[0] < EARLY),
            "above_chance_starts_early": bool(len(cor_s) and cor_s[0] < EARLY)}


def level_regression(rows: list[dict], key: str) -> dict | None:
    """OLS of heartbeats on level and CoT length (per 100 tokens): the level's coefficient and its standard
    error, and the length's; None with fewer than two levels or too few problems."""
    rows = [r for r in rows if r["level"] is not None]
    if len({r["level"] for r in rows}) < 2 or len(rows) < 5:
        return None
    X = np.array([[1.0, r["level"], r["tokens"] / 100] for r in rows])  # [n, 3]
    y = np.array([r[key] for r in rows], dtype=float)  # [n]
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    resid = y - X @ coef
    dof = max(1, len(y) - 3)
    se = np.sqrt(np.diag(float(resid @ resid) / dof * np.linalg.pinv(X.T @ X)))
    alone = np.polyfit([r["level"] for r in rows], y, 1)[0]  # level's slope without length
    return {"level": round(float(coef[1]), 4), "level_se": round(float(se[1]), 4),
            "per_100_tokens": round(float(coef[2]), 4), "per_100_tokens_se": round(float(se[2]), 4),
            "level_without_length": round(float(alone), 4), "n": len(rows),
            "corr_heartbeats_length": round(float(np.corrcoef(y, X[:, 2])[0, 1]), 4) if y.std() > 0 else 0.0}


def heartbeat_stats(rows: list[dict]) -> dict:
    """By dataset and level: mean heartbeats (raw IAF, above chance), per 100 tokens, the share of problems
    whose first heartbeat starts in the first EARLY tokens; and the regression on level + length for each trace."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        groups[f"{r['dataset']} level {r['level']}" if r["level"] is not None else r["dataset"]].append(r)
    out = {}
    for g, rs in sorted(groups.items()):
        tok = sum(r["tokens"] for r in rs)
        out[g] = {"n": len(rs), "tokens": tok / len(rs),
                  **{k: sum(r[k] for r in rs) / len(rs) for k in ("raw", "above_chance")},
                  **{f"{k}_per_100_tokens": 100 * sum(r[k] for r in rs) / tok for k in ("raw", "above_chance")},
                  **{f"{k}_starts_early": sum(r[f"{k}_starts_early"] for r in rs) / len(rs)
                     for k in ("raw", "above_chance")}}
    return {"groups": out, "regression": {k: level_regression(rows, k) for k in ("raw", "above_chance")}}


def build_report(records: Iterable[SignalsRecord]) -> dict:
    """Aggregate per-problem records: boundary P/R/F1 against the CoT's own arithmetic, heartbeats, labels."""
    tp = fp = fn = with_ref = n = steps = exprs = parsed = 0
    hb_level: dict[str, list[int]] = defaultdict(list)  # group -> heartbeat counts
    labels: dict[str, int] = defaultdict(int)
    rows = []
    for rec in records:
        n += 1
        rows.append(heartbeat_row(rec))
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
        "heartbeat_stats": heartbeat_stats(rows),
        "label_steps": dict(sorted(labels.items(), key=lambda kv: -kv[1])),
    }


def format_report(report: dict) -> str:
    b = report["boundaries"]
    lines = [
        f"analyzed {report['problems']} problems: {report['steps_per_problem']:.1f} steps/problem, "
        f"{report['expressions']} expressions, {100 * report['parse_rate']:.1f}% parsed",
        f"boundaries vs where each calculation starts (±tolerance): precision {b['precision']:.3f} "
        f"recall {b['recall']:.3f} F1 {b['f1']:.3f} (tp {b['tp']}, fp {b['fp']}, fn {b['fn']})",
        "heartbeats (IAF above chance; on raw IAF, which starts every problem with one): " + ", ".join(
            f"{g}: {v['above_chance']:.2f} ({v['raw']:.2f} raw; n={v['n']})"
            for g, v in report["heartbeat_stats"]["groups"].items()),
        "op labels (steps): " + ", ".join(f"{k} {v}" for k, v in report["label_steps"].items()),
    ]
    return "\n".join(lines)
