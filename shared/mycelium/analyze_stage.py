"""The analyze stage run locally: a process pool maps :func:`analyze_one` over every chunk.

One worker per core, a progress bar, failures recorded under
``failures/analyze/``, resumable (a chunk whose ``signals/<pid>.json`` exists is
skipped), and a run-level report ``analyze/report.json``.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import time
import traceback
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor, as_completed

from tqdm import tqdm

from .analyze import analyze_one, is_done
from .artifacts import RunSummary, SignalsRecord
from .config import AnalyzeConfig
from .runs import RunKeys, load_summary, record_failure, save_summary
from .store import Store, open_store
from .timeseries import prf

log = logging.getLogger(__name__)

_STORE: Store | None = None


def _init(store_url: str) -> None:
    global _STORE
    _STORE = open_store(store_url)


def _work(run: str, pid: str, cfg_json: str) -> tuple[str, dict | None, str | None]:
    cfg = AnalyzeConfig.model_validate_json(cfg_json)
    try:
        return pid, analyze_one(_STORE, run, pid, cfg), None
    except Exception as e:  # noqa: BLE001 - recorded, counted, the map goes on
        record_failure(_STORE, RunKeys(run), "analyze", pid, f"{type(e).__name__}: {e}", e)
        return pid, None, f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=2)}"


def captured_ids(store: Store, keys: RunKeys) -> list[str]:
    """Problems with a committed chunk (its manifest exists)."""
    prefix = keys("chunks", "")
    return [k[len(prefix):-5] for k in store.list(prefix) if k.endswith(".json")]


def run_analyze(store: Store, run: str, cfg: AnalyzeConfig) -> RunSummary:
    keys = RunKeys(run)
    summary = load_summary(store, keys)
    stage = summary.stages["analyze"] = type(summary.stage("analyze"))()
    t0 = time.perf_counter()
    todo = []
    for pid in captured_ids(store, keys):
        stage.n_in += 1
        if is_done(store, keys, pid, cfg):
            stage.skip("already analyzed")
        else:
            todo.append(pid)
    workers = min(cfg.workers or os.cpu_count() or 1, max(1, len(todo)))
    try:
        if todo:
            ctx = mp.get_context("spawn")  # workers never inherit a parent's torch threads
            with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init, initargs=(store.url,)) as pool:
                futures = [pool.submit(_work, run, pid, cfg.model_dump_json()) for pid in todo]
                bar = tqdm(as_completed(futures), total=len(futures), unit="chunk", desc=f"analyze ({workers} workers)",
                           disable=not cfg.progress, dynamic_ncols=True)
                for fut in bar:
                    pid, result, error = fut.result()
                    if error:
                        stage.failed += 1
                        log.warning("analyze %s failed: %s", pid, error.splitlines()[0])
                    else:
                        stage.n_out += 1
                        store.delete(keys.failure("analyze", pid))  # an earlier failure is history now
                        stage.count("steps", result["steps"])
                        stage.count("expressions", result["expressions"])
                        stage.count("parsed", result["parsed"])
                    bar.set_postfix(failed=stage.failed, refresh=False)
        stage.seconds = time.perf_counter() - t0
        stage.count("workers", workers)
        report = build_report(store, keys)
        store.put_json(keys("analyze", "report.json"), report)
        if report["problems"]:
            store.put(keys("analyze", "heartbeats.png"), heartbeats_png(report))
        stage.counters.update({k: v for k, v in report["boundaries"].items() if isinstance(v, (int, float))})
    finally:
        save_summary(store, keys, summary)
    return summary


def build_report(store: Store, keys: RunKeys) -> dict:
    """Aggregate every ``signals/*.json`` of the run: boundary P/R/F1, heartbeats by level, labels."""
    tp = fp = fn = with_ref = n = steps = exprs = parsed = 0
    hb_level: dict[str, list[int]] = defaultdict(list)  # group -> heartbeat counts
    labels: dict[str, int] = defaultdict(int)
    for key in store.list(keys("signals", "")):
        rec = SignalsRecord.model_validate(store.get_json(key))
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


def heartbeats_png(report: dict) -> bytes:
    """Heartbeats per problem by dataset / level: distribution (dots sized by count) and mean."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(report["heartbeats"].items())
    fig, ax = plt.subplots(figsize=(max(4, 1.3 * len(groups)), 4))
    for i, (_, g) in enumerate(groups):
        values = [int(k) for k in g["counts"]]
        sizes = [6 * c for c in g["counts"].values()]
        ax.scatter([i] * len(values), values, s=sizes, alpha=0.35, color="tab:blue")
        ax.plot([i - 0.3, i + 0.3], [g["mean"]] * 2, color="tab:red", lw=2)
        ax.annotate(f"{g['mean']:.2f}\nn={g['n']}", (i + 0.32, g["mean"]), fontsize=7, va="center")
    ax.set_xticks(range(len(groups)), [name for name, _ in groups], rotation=20, fontsize=8)
    ax.set_ylabel("heartbeats per problem")
    ax.set_title("Heartbeats (computing heads' IAF pulses); red: mean")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


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
