#!/usr/bin/env python3
"""What the teacher's signals measure, each figure beside its baselines, on one or more analysed runs.

    .venv/bin/python benchmarks/signals_report.py --run gsm8k-ref [--run math-ref ...] [--store runs] [--out DIR]

For each run (its committed outputs of the current analyze config):

- heartbeats by dataset and level, counted on raw IAF and on IAF above chance, raw and per 100 CoT tokens,
  the share that start at token 0, and the level's coefficient in a regression on level + CoT length,
  beside the research seeds' 3.8 / 5.1 / 7.0 / 9.7 / 14.8 for MATH levels 1-5;
- step boundaries against the first token of each calculation's own text (maximum matching, ±tolerance):
  JSD peaks, every line start, every sentence start, as many random word starts as JSD has peaks, line
  starts ranked by JSD and as many random line starts (does attention pick which lines start a step?);
  and, for the steps a later stage reads, the share of calculations alone in their step;
- templates in and out of sample (steps split by problem 80/20): the IB templates, grouping by exact label
  set, k-means on X with as many clusters, one cluster (mycelium.templates.evaluation).

Prints the tables; writes signals_report.json and three PNGs to --out.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

SEEDS_MATH = {1: 3.8, 2: 5.1, 3: 7.0, 4: 9.7, 5: 14.8}  # heartbeats by MATH level in the research seeds


def load(store, run: str):
    """The run's current analysed problems: (SignalsRecord, Trace, [StepRecord])."""
    from mycelium.core.store import jsonl
    from mycelium.core.summary import StageSummary
    from mycelium.records.analysis import SignalsRecord, StepRecord
    from mycelium.records.capture import Trace
    from mycelium.stages.analyze import AnalyzeStage
    from mycelium.stages.base import committed

    stage = AnalyzeStage.current(store, run)
    k, skipped, out = stage.keys, StageSummary(), []
    for commit in committed(stage, "analyze", stage.lineage, skipped):
        rec = SignalsRecord.model_validate_json(stage.read_verified(commit, k.signals(commit.item)))
        steps = [StepRecord.model_validate_json(line) for line in jsonl(stage.read_verified(commit, k.steps(commit.item)))]
        out.append((rec, Trace.model_validate_json(store.get(k.trace(commit.item))), steps))
    return out, stage.config, skipped.skipped


def boundaries(problems, tolerance: int, seed: int = 0) -> dict:
    from mycelium.analysis.boundaries import boundary_match, layout_starts, prf, segment
    from mycelium.analysis.text import word_starts

    rng = np.random.default_rng(seed)
    totals: dict[str, list[int]] = {}
    n_problems = n_ref = 0
    for rec, trace, _ in problems:
        ref = np.asarray(rec.reference_boundaries)
        if not len(ref):
            continue
        n_problems, n_ref = n_problems + 1, n_ref + len(ref)
        offsets = np.asarray(trace.cot_offsets, dtype=np.int64).reshape(-1, 2)
        jsd, smoothed = np.asarray(rec.jsd_boundaries), np.asarray(rec.jsd_smoothed)
        k = len(jsd)
        words = np.flatnonzero(word_starts(trace.cot_text, offsets)[1:]) + 1
        lines = layout_starts(trace.cot_text, offsets, "line")
        methods = {
            "JSD peaks": jsd,
            "random word starts (as many)": rng.choice(words, min(k, len(words)), replace=False) if len(words) else words,
            "evenly spaced word starts (as many)": evenly(words, k, len(offsets)),
            "every line start": lines,
            "every sentence start": segment("sentences", jsd, smoothed, trace.cot_text, offsets, 2),
            "line starts ranked by JSD (as many as peaks)": segment("jsd_lines", jsd, smoothed, trace.cot_text, offsets, 2),
            "random line starts (as many)": rng.choice(lines, min(k, len(lines)), replace=False) if len(lines) else lines,
        }
        for name, pred in methods.items():
            tp, fp, fn = boundary_match(pred, ref, tolerance)
            step_of = np.searchsorted(np.sort(np.asarray(pred)), ref, side="right")  # the step each calculation starts in
            alone = int(sum(np.bincount(step_of)[step_of] == 1))
            t = totals.setdefault(name, [0, 0, 0, 0])
            t[0], t[1], t[2], t[3] = t[0] + tp, t[1] + fp, t[2] + fn, t[3] + alone
    return {"problems": n_problems, "reference_per_problem": n_ref / max(1, n_problems),
            "methods": {name: {"tp": t[0], "fp": t[1], "fn": t[2], "per_problem": (t[0] + t[1]) / max(1, n_problems),
                               "calculations_alone": t[3] / max(1, n_ref), **prf(*t[:3])}
                        for name, t in totals.items()}}


def evenly(candidates: np.ndarray, k: int, T: int) -> np.ndarray:
    """``k`` candidates nearest k evenly spaced positions: the spacing of JSD peaks (≥ 24 apart), without JSD."""
    if not len(candidates) or k <= 0:
        return np.array([], np.int64)
    targets = (np.arange(1, k + 1) * T / (k + 1)).astype(int)
    return np.unique(candidates[np.abs(candidates[None, :] - targets[:, None]).argmin(1)])


def templates(problems, min_size: int) -> dict:
    from mycelium.core.config import DiscoverConfig
    from mycelium.templates.evaluation import evaluate
    from mycelium.templates.ib import anneal, smooth_labels
    from mycelium.templates.steps import StepTableBuilder
    from mycelium.templates.taxonomy import build_taxonomy, operating_point

    builder = StepTableBuilder()
    for _, _, steps in problems:
        for s in steps:
            builder.add(s)
    table = builder.build()
    cfg = DiscoverConfig(min_size=min_size, progress=False)
    an = anneal(smooth_labels(table.X, table.Y, cfg), cfg)
    tax = build_taxonomy(an, table, cfg, *operating_point(an, cfg))
    sets = ["+".join(r["labels"]) for r in table.index]
    out = evaluate(table.X, table.Y, sets, [r["problem_id"] for r in table.index], cfg)
    out["operating_point"] = tax["operating_point"]
    out["all_steps"] = {"steps": len(sets), "templates": tax["n_templates"], "purity": tax["purity"],
                        "label_sets": len(set(sets))}
    return out


def report(store, run: str, min_size: int) -> dict:
    from mycelium.analysis.report import heartbeat_row, heartbeat_stats

    problems, cfg, excluded = load(store, run)
    if not problems:
        raise SystemExit(f"run {run!r}: no committed analysis of the current config (run `mycelium analyze --run {run}`)")
    rows = [heartbeat_row(rec) for rec, _, _ in problems]
    return {"run": run, "problems": len(problems), "excluded": excluded, "analyze_config": cfg.hash(),
            "cot": problems[0][1].cot_source, "heartbeats": heartbeat_stats(rows),
            "boundaries": boundaries(problems, cfg.boundary_tolerance), "templates": templates(problems, min_size)}


def print_report(r: dict) -> None:
    print(f"\n=== {r['run']} ({r['cot']} CoT): {r['problems']} problems analysed; excluded {r['excluded'] or 'none'}")
    print("heartbeats            n   tokens   raw IAF (/100 tok, first in t<10)   above chance (/100 tok, first in t<10)  seeds")
    for g, v in r["heartbeats"]["groups"].items():
        level = int(g.rsplit(" ", 1)[-1]) if "level" in g and g.rsplit(" ", 1)[-1].isdigit() else None
        print(f"{g:18} {v['n']:5} {v['tokens']:8.0f}   {v['raw']:6.2f} ({v['raw_per_100_tokens']:.2f}, "
              f"{100 * v['raw_starts_early']:.0f}%)          {v['above_chance']:6.2f} "
              f"({v['above_chance_per_100_tokens']:.2f}, {100 * v['above_chance_starts_early']:.0f}%)"
              f"            {SEEDS_MATH.get(level, '') if g.startswith('math') else ''}")
    for key, reg in r["heartbeats"]["regression"].items():
        if reg:
            print(f"regression ({key}): heartbeats ~ level + length/100 on {reg['n']} problems: level "
                  f"{reg['level']:+.3f} ± {reg['level_se']:.3f} (without length {reg['level_without_length']:+.3f}), "
                  f"per 100 tokens {reg['per_100_tokens']:+.3f} ± {reg['per_100_tokens_se']:.3f}; "
                  f"corr(heartbeats, length) {reg['corr_heartbeats_length']:.2f}")
    b = r["boundaries"]
    print(f"boundaries vs the first token of each calculation ({b['problems']} problems, "
          f"{b['reference_per_problem']:.1f} per problem)")
    for name, m in b["methods"].items():
        print(f"  {name:46} P {m['precision']:.3f}  R {m['recall']:.3f}  F1 {m['f1']:.3f}  "
              f"({m['per_problem']:.1f} per problem; calculations alone in their step {m['calculations_alone']:.3f})")
    t = r["templates"]
    op = t["operating_point"]
    print(f"templates: {t['all_steps']['templates']} IB templates on all {t['all_steps']['steps']} steps "
          f"({t['all_steps']['label_sets']} label sets); gain ≥ {op['gain']:.3g} keeps splits at β "
          f"{op['beta_kept'][0] or float('nan'):.3g}–{op['beta_kept'][1] or float('nan'):.3g} and drops the first at "
          f"β = {op['beta_first_dropped'] or float('nan'):.3g} ({'' if op['is_a_beta_threshold'] else 'not '}a β threshold; "
          f"gain·β over all splits {op['gain_times_beta'][0] or 0:.2f}–{op['gain_times_beta'][1] or 0:.2f})")
    print(f"  steps: {t['steps']['train']} fit, {t['steps']['held_out']} held out (split by problem)")
    for name, m in t["methods"].items():
        i, o = m["in_sample"], m["out_of_sample"]
        inside = (f"{i['clusters']:4} clusters   in sample: purity {i['purity']:.3f}, I/H {i['i_ty_share']:.3f}"
                  if i else f"{'':4}    no clusters{'':31}")
        print(f"  {name:20} {inside}   held out: purity {o['purity']:.3f}, I/H {o['i_ty_share']:.3f}")


def pngs(reports: list[dict], out: Path) -> None:
    from mycelium.viz.plots import png, pyplot

    plt = pyplot()
    levelled = [r for r in reports if any("level" in g for g in r["heartbeats"]["groups"])]
    if levelled:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for r in levelled:
            gs = {int(g.rsplit(" ", 1)[-1]): v for g, v in r["heartbeats"]["groups"].items() if g.rsplit(" ", 1)[-1].isdigit()}
            lv = sorted(gs)
            for key, style in (("raw", "--"), ("above_chance", "-")):
                axes[0].plot(lv, [gs[x][key] for x in lv], style, marker="o", label=f"{r['run']}: {key.replace('_', ' ')}")
                axes[1].plot(lv, [gs[x][f"{key}_per_100_tokens"] for x in lv], style, marker="o",
                             label=f"{r['run']}: {key.replace('_', ' ')}")
        axes[0].plot(list(SEEDS_MATH), list(SEEDS_MATH.values()), "k:", marker="x", label="research seeds")
        axes[0].set(xlabel="MATH level", ylabel="heartbeats per problem", title="Heartbeats by level")
        axes[1].set(xlabel="MATH level", ylabel="heartbeats per 100 CoT tokens", title="Controlled for length")
        for a in axes:
            a.legend(fontsize=7)
        (out / "heartbeats_by_level.png").write_bytes(png(fig))
    fig, ax = plt.subplots(figsize=(11, 4.5))
    names = list(reports[0]["boundaries"]["methods"])
    width = 0.8 / len(reports)
    for i, r in enumerate(reports):
        ax.bar(np.arange(len(names)) + i * width, [r["boundaries"]["methods"][n]["f1"] for n in names], width,
               label=f"{r['run']} ({r['cot']})")
    ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names, rotation=15, fontsize=7, ha="right")
    ax.set(ylabel="F1 vs calculation starts", title="Step boundaries by method")
    ax.legend(fontsize=7)
    (out / "boundaries.png").write_bytes(png(fig))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    methods = list(reports[0]["templates"]["methods"])
    for i, r in enumerate(reports):
        for a, key in zip(axes, ("purity", "i_ty_share")):
            a.bar(np.arange(len(methods)) + i * width, [r["templates"]["methods"][m]["out_of_sample"][key] for m in methods],
                  width, label=r["run"])
            inside = [(j, r["templates"]["methods"][m]["in_sample"]) for j, m in enumerate(methods)]
            a.scatter([j + i * width for j, v in inside if v], [v[key] for _, v in inside if v], marker="_", s=200,
                      color="k")
    for a, title in zip(axes, ("purity held out (bars) and in sample (ticks)", "I(T;Y)/H(Y) held out and in sample")):
        a.set_xticks(np.arange(len(methods)) + 0.4 - width / 2, methods, fontsize=7, rotation=15, ha="right")
        a.set_title(title, fontsize=9)
        a.legend(fontsize=7)
    (out / "templates.png").write_bytes(png(fig))


def main() -> int:
    from mycelium.core.store import open_store

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", action="append", required=True)
    ap.add_argument("--store", default="runs")
    ap.add_argument("--out", default="runs/signals_report")
    ap.add_argument("--min-size", type=int, default=50, help="surface tension for the IB templates")
    args = ap.parse_args()
    store, out = open_store(args.store), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    reports = []
    for run in args.run:
        reports.append(report(store, run, args.min_size))
        print_report(reports[-1])
    (out / "signals_report.json").write_text(json.dumps(reports, indent=1, default=float))
    pngs(reports, out)
    print(f"\nwrote {out}/signals_report.json, heartbeats_by_level.png, boundaries.png, templates.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
