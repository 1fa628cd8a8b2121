"""The evaluation's report: ``report.md`` (every number beside its baseline) and its PNGs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..viz.plots import png, pyplot


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def by_png(by: dict) -> bytes:
    plt = pyplot()
    fig, axes = plt.subplots(1, len(by), figsize=(5 * len(by), 3.6), squeeze=False)
    for ax, (group, cells) in zip(axes[0], by.items()):
        keys = list(cells)
        x = np.arange(len(keys))
        solver = [c["correct"] / c["n"] for c in cells.values()]
        cot = [c["cot_correct"] / c["cot_n"] if c["cot_n"] else 0 for c in cells.values()]
        ax.bar(x - 0.2, solver, 0.4, label="solver")
        ax.bar(x + 0.2, cot, 0.4, label="same backbone, CoT")
        ax.set_xticks(x, keys, rotation=45 if max(map(len, keys)) > 4 else 0, ha="right" if max(map(len, keys)) > 4 else "center")
        ax.set_title(f"accuracy by {group}")
        ax.set_ylim(0, max(0.05, max(solver + cot) * 1.2))
        for i, c in enumerate(cells.values()):
            ax.text(i, 0, f"n={c['n']}", ha="center", va="bottom", fontsize=7)
    axes[0][0].legend()
    return png(fig)


def _latency_png(solver_ms: list[float], cot_ms: list[float]) -> bytes:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    both = [m for m in solver_ms + cot_ms if m > 0]
    bins = np.logspace(np.log10(min(both)), np.log10(max(both)), 40)
    ax.hist(solver_ms, bins=bins, alpha=0.7, label=f"solver (n={len(solver_ms)})")
    if cot_ms:
        ax.hist(cot_ms, bins=bins, alpha=0.7, label=f"same backbone, CoT (n={len(cot_ms)})")
    ax.set_xscale("log")
    ax.set_xlabel("ms per problem (batch 1)")
    ax.legend()
    return png(fig)


def _coverage_png(curve: list[dict]) -> bytes:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.6))
    ax.plot([c["coverage"] for c in curve], [c["accuracy"] for c in curve], marker="o")
    for c in curve[::4]:
        ax.annotate(f"τ={c['tau']:.2f}", (c["coverage"], c["accuracy"]), fontsize=7)
    ax.set_xlabel("coverage (answered / all)")
    ax.set_ylabel("accuracy when answered")
    ax.set_title("answer only when the program's probability ≥ τ")
    return png(fig)


def _bars_png(labels: list[str], values: list[float], title: str, xlabel: str) -> bytes:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 0.35 * len(labels) + 1.2))
    y = np.arange(len(labels))[::-1]
    ax.barh(y, values)
    ax.set_yticks(y, labels)
    for yi, v in zip(y, values):
        ax.text(v, yi, f" {v:g}", va="center", fontsize=8)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    return png(fig)


def write_report(m: dict, out: Path, solver_ms: list[float], cot_ms: list[float]) -> Path:
    s, base = m["solver"], m["baselines"]
    lines = [f"# Evaluation: {m['data']}", "",
             f"{m['n']} problems ({m['bad_rows']} bad rows skipped; {m['overlap']['in_training']} found in the "
             "students' training data by content hash and dropped). Students: " + m["models"] + ".", "",
             "| method | accuracy | coverage | latency per problem (median / mean) |", "|---|---|---|---|",
             f"| solver (students + sympy, no CoT) | **{_pct(s['accuracy'])}** | {_pct(s['coverage'])} | "
             f"{s['latency_ms']['median']:.0f} / {s['latency_ms']['mean']:.0f} ms |"]
    if "pass_at_beam" in s:
        lines.append(f"| a right value anywhere in the solver's beam (pass@beam, the verifier's ceiling) | "
                     f"{_pct(s['pass_at_beam'])} | | |")
    cot = base.get("same backbone, chain of thought")
    if cot:
        lines.append(f"| same backbone writing CoT, greedy (first {cot['n']}; latency: first {cot['timed']}) | "
                     f"{_pct(cot['accuracy'])} | 100 % | "
                     f"{cot['latency_ms']['median']:.0f} / {cot['latency_ms']['mean']:.0f} ms |")
        lines.append(f"| solver on those {cot['n']} (latency: first {cot['timed']}) | "
                     f"{_pct(cot['solver_accuracy_same_problems'])} | | "
                     f"{cot['solver_latency_ms']['median']:.0f} / {cot['solver_latency_ms']['mean']:.0f} ms |")
    lines.append(f"| the last number in the problem (trivial) | {_pct(base['last number in the problem']['accuracy'])} | 100 % | |")
    if cot:
        lines += ["", f"Speed: the solver is **{cot['speedup_mean']}×** faster per problem than the same backbone's "
                  f"chain of thought (mean latency at batch 1 on the first {cot['timed']} problems, both in this run "
                  f"on this machine; the CoT's other {cot['n'] - cot['timed']} were generated in batches for "
                  f"accuracy only, {cot['batched_ms_per_problem']} ms per problem). The CoT averaged "
                  f"{cot['tokens_mean']} tokens, {cot['truncated']} cut at the token limit."]
    lines += ["", f"Grader: math-verify, with an exact sympy check beside it: {m['grader']['disagreements']} "
              "disagreement(s) (in solutions.jsonl, `grade`).", ""]
    for group, cells in m["by"].items():
        lines += [f"## By {group}", "", f"| {group} | n | solver | answered | CoT (n) |", "|---|---|---|---|---|"]
        for key, c in cells.items():
            cot_cell = f"{_pct(c['cot_correct'] / c['cot_n'])} ({c['cot_n']})" if c["cot_n"] else "–"
            lines.append(f"| {key} | {c['n']} | {_pct(c['correct'] / c['n'])} | {_pct(c['answered'] / c['n'])} | {cot_cell} |")
        lines.append("")
    (out / "accuracy_by_group.png").write_bytes(by_png(m["by"]))
    (out / "latency.png").write_bytes(_latency_png(solver_ms, cot_ms))
    (out / "coverage_accuracy.png").write_bytes(_coverage_png(m["coverage_accuracy"]))
    lines += ["![accuracy by group](accuracy_by_group.png) ![latency](latency.png)", "",
              "## Coverage and accuracy", "", "| τ | coverage | accuracy when answered |", "|---|---|---|"]
    lines += [f"| {c['tau']:.2f} | {_pct(c['coverage'])} | {_pct(c['accuracy'])} |" for c in m["coverage_accuracy"][::2]]
    lines += ["", "![coverage and accuracy](coverage_accuracy.png)", ""]
    if "attribution" in m:
        a = m["attribution"]
        lines += ["## Where the errors are", "",
                  f"Teacher programs (the teacher reading each reference solution, labelled as training was): "
                  f"{a['teacher_programs']} of {m['n']}. Wrong answers: {a['wrong']}.", "",
                  "| blamed (first disagreement, the framework's order) | wrong answers |", "|---|---|"]
        lines += [f"| {c} | {n} |" for c, n in a["blamed"].items()]
        lines += ["", "C2's template set, C1 and C4 are in the trace but not inputs of this solver's search (C2 gates "
                  "abstention, C3 chooses the program, unless `--fuse`): the blame says which component disagreed "
                  "first in the framework's order; what fixing a component would buy is the oracle ladder below."]
        lines += ["", "Every disagreement with the teacher's labels (a problem can have several): " +
                  ", ".join(f"{c} {n}" for c, n in a["disagreements"].items()), "",
                  "## Oracle ladder", "", "| teacher's labels in place of | accuracy | on teacher-labelled problems |",
                  "|---|---|---|"]
        lines += [f"| {r['rung']} | {_pct(r['accuracy'])} | {_pct(r['accuracy_teacher_labelled'])} |" for r in m["ladder"]]
        (out / "attribution.png").write_bytes(_bars_png(list(a["blamed"]), list(a["blamed"].values()),
                                                        "wrong answers by the component blamed", "problems"))
        (out / "ladder.png").write_bytes(_bars_png([r["rung"] for r in m["ladder"]],
                                                   [round(100 * r["accuracy"], 1) for r in m["ladder"]],
                                                   "oracle ladder (cumulative)", "accuracy, %"))
        lines += ["", "![attribution](attribution.png) ![ladder](ladder.png)", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
