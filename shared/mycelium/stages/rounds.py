"""The improvement loop's record: one row per round, built from what the store holds, and the stop rule.

A row: val accuracy (and the last-number baseline on the same val problems; round 0 is today's students, the
baseline every later round is compared with), the gain over the previous round, train examples by source
(teacher, augmented, mop-up, student), problems by source, the students' labels (kept: some program of the
search computes the answer; solved: the first one does), the teacher's calls (round 0: one per loop and val
problem, the reference CoT; round k: the mop-up) beside asking it about every loop problem again in every round
that trained, and the share of loop problems still without a program. Written to ``rounds/improve.json``,
``improve.md`` and ``improve.png``; the same function reports a local loop and the AWS one (``lambdas/improve``).
"""

from __future__ import annotations

from collections import Counter

from ..core.keys import RunKeys, mop_up_run, student_stage
from ..core.store import json_bytes


def row(loop, k: int) -> dict:
    """Round k's row (its val measurement must exist)."""
    from .base import tally_from_store
    from .label import kept
    from .student import StudentLabelStage

    store, keys, n = loop.store, loop.keys, len(loop.problems)
    val = store.get_json(keys("rounds", f"r{k}", "val.json"))
    out = {"round": k, "val_accuracy": round(val["accuracy"], 4), "val_correct": val["correct"], "val_n": val["n"],
           "val_abstained": val["abstained"], "val_last_number": round(val["last_number_accuracy"], 4),
           "solve_ms_mean": round(val["solve_ms_mean"], 1)}
    if k == 0:  # the reference CoT of every loop problem and every val problem, captured once
        out["teacher_calls"] = n + len(loop.val)
    else:
        summary = tally_from_store(StudentLabelStage.of_round(store, keys.run, k))
        asked = loop._mop_up_problems(k)
        mop_kept = kept(store, RunKeys(mop_up_run(keys.run, k)), "label")[1] & set(asked)
        out |= {"students": {"tried": summary.n_out, "kept": int(summary.counters.get("kept", 0)),
                             "solved": int(summary.counters.get("solved", 0)), "failed": summary.failed},
                "mop_up": {"asked": len(asked), "kept": len(mop_kept)}, "teacher_calls": len(asked)}
    out["examples_by_source"] = examples_by_source(loop, k)
    still = len(loop.unsolved(k, k))
    out |= {"problems_with_program": n - still, "still_failing": round(still / n, 4)}
    from .verifier_round import row as verifier_row

    verifier = verifier_row(loop, k)
    if verifier:
        out["verifier"] = verifier
    timings = keys("rounds", f"r{k}", "timings.json")
    if store.exists(timings):
        out["seconds"] = store.get_json(timings)
    return out


def examples_by_source(loop, k: int) -> dict:
    """Round k's train examples of the loop's problems, by source (a mop-up's teacher examples as ``mop-up``)."""
    from .train import only_problems, read_training

    data, _ = read_training(loop.store, loop.keys.run, k)
    data = only_problems(data, set(loop.problems))
    count: Counter = Counter()
    for c in data:
        for e in data[c]["train"]:
            count["mop-up" if e["provenance"]["run"] != loop.keys.run else e["provenance"]["source"]] += 1
    return dict(count)


def decide(rows: list[dict], rounds: int, min_gain: float) -> tuple[bool, str]:
    """Whether to run another round, and why not."""
    last = rows[-1]
    if last["round"] > 0 and "val_accuracy" not in last:
        return False, f"round {last['round']} had nothing new to learn (no student program, no teacher call)"
    if last["round"] > 0 and last["gain"] < min_gain:
        return False, f"round {last['round']} gained {last['gain']:+.3f} on val, less than the minimum {min_gain}"
    if last["round"] >= rounds:
        return False, f"{rounds} round(s) done"
    return True, ""


def report(loop, k: int, nothing_new: bool = False) -> dict:
    """Rows 0..k, the decision, the files; ``{"continue", "next_round", "stopped", ...}`` back."""
    from ..viz.plots import improvement_png

    rows = []
    for j in range(k + 1):
        if j == k and nothing_new:
            rows.append({"round": j, "students": {"kept": _students_kept(loop, j)}, "mop_up": {"asked": 0, "kept": 0},
                         "teacher_calls": 0, "still_failing": round(len(loop.unsolved(j, j)) / len(loop.problems), 4)})
            continue
        rows.append(row(loop, j))
        if j:
            rows[-1]["gain"] = round(rows[-1]["val_accuracy"] - rows[-2]["val_accuracy"], 4)
    go, why = decide(rows, loop.cfg.rounds, loop.cfg.min_gain)
    n = len(loop.problems)
    out = {"run": loop.keys.run, "problems": n, "val_problems": len(loop.val), "continue": go,
           "next_round": k + 1, "stopped": None if go else why,
           "teacher_calls": sum(r["teacher_calls"] for r in rows),
           # the alternative: the teacher asked again about every loop problem in every round that trained
           "teacher_calls_if_every_problem_every_round": rows[0]["teacher_calls"] + n * sum(
               1 for r in rows[1:] if "val_accuracy" in r),
           "options": loop.cfg.model_dump(mode="json"), "rounds": rows}
    store, keys = loop.store, loop.keys
    store.put(keys("rounds", "improve.json"), json_bytes(out))
    store.put(keys("rounds", "improve.md"), table(out).encode())
    store.put(keys("rounds", "improve.png"), improvement_png(rows))
    return out


def _students_kept(loop, k: int) -> int:
    from .label import kept as kept_items

    return len(kept_items(loop.store, loop.keys, student_stage(k))[1])


def table(report: dict) -> str:
    """The per-round table as markdown."""
    lines = [f"# Improvement loop: run {report['run']}", "",
             f"{report['problems']} training problems, {report['val_problems']} val problems. "
             f"{'Stopped: ' + report['stopped'] if report['stopped'] else 'Running.'}", "",
             f"Teacher calls: {report['teacher_calls']}, against "
             f"{report['teacher_calls_if_every_problem_every_round']} asking the teacher about every problem in "
             "every round.", "",
             "| round | val accuracy | gain | last-number baseline | train examples: teacher / augmented / mop-up / "
             "student | students kept (first program right) | teacher calls (kept) | still without a program |",
             "|---|---|---|---|---|---|---|---|"]
    for r in report["rounds"]:
        ex, st, mop, gain = r.get("examples_by_source", {}), r.get("students"), r.get("mop_up"), r.get("gain")
        acc = f"{r['val_accuracy']:.3f} ({r['val_correct']}/{r['val_n']})" if "val_accuracy" in r else "not trained"
        base = f"{r['val_last_number']:.3f}" if "val_last_number" in r else ""
        students = f"{st['kept']} ({st.get('solved', '?')})" if st else "-"
        calls = f"{r['teacher_calls']}" + (f" ({mop['kept']})" if mop else "")
        lines.append(f"| {r['round']} | {acc} | {'' if gain is None else format(gain, '+.3f')} | {base} | "
                     f"{ex.get('teacher', 0)} / {ex.get('augmented', 0)} / {ex.get('mop-up', 0)} / "
                     f"{ex.get('student', 0)} | {students} | {calls} | {100 * r['still_failing']:.1f} % |")
    verified = [r for r in report["rounds"] if r.get("verifier")]
    if verified:
        lines += ["", "The reader's beams on val, each round's verifier (trained on the train beams):", "",
                  "| round | val beams | pass@beam | reader (beam order) | reader + verifier | weighted vote | AUC |",
                  "|---|---|---|---|---|---|---|"]
        for r in verified:
            v = r["verifier"]
            lines.append(f"| {r['round']} | {v['n']} | {v['pass_at_beam']:.3f} | {v['top1_beam']:.3f} | "
                         f"{v['top1_verifier']:.3f} | {v['top1_weighted']:.3f} | "
                         f"{'' if v['auc'] is None else format(v['auc'], '.3f')} |")
    return "\n".join(lines) + "\n"
