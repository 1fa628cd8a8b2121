"""The README's headline table and picture, made from the committed reports (never typed by hand).

    python -m mycelium.evaluation.headline [--root .]        # rewrite README's table, docs/accuracy_by_steps.png
    python -m mycelium.evaluation.headline --check            # exit 1 if README's table is not the reports'

It reads ``reports/reader-gsm8k-test/metrics.json`` and ``reports/reader-math500/metrics.json`` (``mycelium
evaluate``: ``make evaluate`` and its MATH500 run) and ``reports/cloud-cost/cost.json``
(``benchmarks/cloud_cost.py --out``). The table stands between the README's ``<!-- headline -->`` and
``<!-- /headline -->`` lines; ``tests/unit/test_headline.py`` checks that it equals what the reports give.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .report import _pct

GSM8K = "reports/reader-gsm8k-test/metrics.json"
MATH500 = "reports/reader-math500/metrics.json"
COST = "reports/cloud-cost/cost.json"
PICTURE = "docs/accuracy_by_steps.png"
START, END = "<!-- headline -->", "<!-- /headline -->"


def _ms(x: float) -> str:
    return f"{x / 1000:.1f} s" if x >= 1000 else f"{x:.0f} ms"


def _evaluate_command(m: dict) -> str:
    cot = m["baselines"].get("same backbone, chain of thought")
    return (f"`mycelium evaluate --models {m['models']} --data {m['data']}"
            + (f" --cot-limit {cot['n']} --cot-timed {cot['timed']}" if cot else " --baseline none") + "`")


def table(root: Path) -> str:
    """The headline table (markdown) from the committed reports under ``root``."""
    g = json.loads((root / GSM8K).read_text())
    h = json.loads((root / MATH500).read_text())
    c = json.loads((root / COST).read_text())
    gc, hc = (m["baselines"].get("same backbone, chain of thought") for m in (g, h))
    last = lambda m: m["baselines"]["last number in the problem"]["accuracy"]  # noqa: E731
    choice = lambda m, how: _pct(m["solver"]["by_choice"][how]) if "by_choice" in m["solver"] else "not run"  # noqa: E731
    verified = "by_choice" in g["solver"]
    rows = [
        (f"**the reader{' + verifier' if verified else ''} + exact arithmetic (no chain of thought)**",
         f"**{_pct(g['solver']['accuracy'])}**", f"**{_pct(h['solver']['accuracy'])}**"),
    ] + ([("the reader alone: its beam's first program (same beams)", choice(g, "beam"), choice(h, "beam")),
          ("the beam's mass weighted by the verifier (same beams)", choice(g, "weighted"), choice(h, "weighted"))]
         if verified else []) + [
        ("a right value anywhere in its beam (pass@beam, the verifier's ceiling)", _pct(g["solver"]["pass_at_beam"]),
         _pct(h["solver"]["pass_at_beam"])),
        ("the last number in the problem (same run)", _pct(last(g)), _pct(last(h))),
        ("the same backbone writing a chain of thought (same run)",
         f"{_pct(gc['accuracy'])} (first {gc['n']})" if gc else "not run",
         f"{_pct(hc['accuracy'])} (first {hc['n']})" if hc else "not run"),
        ("latency per problem, median (batch 1, 2 CPU cores)",
         f"{_ms(g['solver']['latency_ms']['median'])}; CoT {_ms(gc['latency_ms']['median'])}, "
         f"{gc['speedup_mean']:.0f}× slower (mean, first {gc['timed']})" if gc else _ms(g['solver']['latency_ms']['median']),
         _ms(h["solver"]["latency_ms"]["median"])),
    ]
    lines = [f"| | GSM8K test ({g['n']:,}) | MATH500 ({h['n']}) |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {x} |" for a, b, x in rows]
    loop = f", with {c['loop_rounds']} improvement round(s)" if c.get("loop_rounds") else ", capture to merge"
    lines += ["", f"Capture stores **{c['bytes_per_problem_captured'] / 1e6:.2f} MB per problem** (the chunk v2, its "
              f"trace and commit); a **{c['problems']:,}-problem run on AWS costs {c['total_usd']:.2f} USD**{loop} "
              f"(`{c['command']}`: the handlers timed on {c['measured_on_chunks']} real chunks, list prices).",
              "", f"Measured by {_evaluate_command(g)} (`make evaluate`; the CoT's options in docs/measurements.md) and "
              f"{_evaluate_command(h)}; "
              f"the reports: [`{GSM8K.rsplit('/', 1)[0]}/`]({GSM8K.rsplit('/', 1)[0]}/report.md), "
              f"[`{MATH500.rsplit('/', 1)[0]}/`]({MATH500.rsplit('/', 1)[0]}/report.md)."]
    return "\n".join(lines)


def picture(root: Path) -> Path:
    """``docs/accuracy_by_steps.png``: accuracy by the reference solution's number of steps, the reader against
    the same backbone's chain of thought (from the GSM8K report)."""
    from .report import by_png

    g = json.loads((root / GSM8K).read_text())
    path = root / PICTURE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(by_png({"steps (GSM8K test)": g["by"]["steps"]}))
    return path


def block(readme: str) -> str:
    """The README's table as it stands (between the markers)."""
    if START not in readme or END not in readme:
        raise ValueError(f"README has no {START} … {END} block")
    return readme.split(START, 1)[1].split(END, 1)[0].strip("\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=".")
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args(argv)
    root = Path(args.root)
    readme = (root / "README.md").read_text()
    want = table(root)
    if args.check:
        same = block(readme) == want
        print("README's headline table matches the reports" if same else "README's headline table differs from the "
              "reports: run `python -m mycelium.evaluation.headline`")
        return 0 if same else 1
    before, rest = readme.split(START, 1)
    (root / "README.md").write_text(before + START + "\n" + want + "\n" + END + rest.split(END, 1)[1])
    print(f"wrote the table into {root / 'README.md'} and {picture(root)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
