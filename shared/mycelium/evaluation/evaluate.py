"""``mycelium evaluate``: the solver on a test split, graded, beside its baselines measured in the same run.

Per problem the solver gets a :class:`~mycelium.solver.solve.Question` (id and text only); the gold answer is
read here, after the solver answered, by the grader alone. Before anything runs, every problem's content hash
is checked against the questions the students trained on (``trained_on.txt`` beside the weights): an overlap
stops the evaluation (``drop_overlap`` drops those problems instead, and says how many).

Baselines in the same run and on the same problems: the same backbone writing a chain of thought (greedy, the
first ``cot_limit`` problems, with its latency), and "the last number in the problem" (trivial). With a labels
run (``labels_run``: the evaluation problems captured with their reference solutions and analysed), every
wrong answer is attributed to a component and the oracle ladder is climbed (``attribution``).

Outputs in ``out``: ``solutions.jsonl`` (one line per problem: the solver's answer, trace and grade),
``metrics.json``, ``report.md`` and the PNGs (``report``). Solved problems are appended to
``solutions.partial.jsonl`` as they come: an interrupted evaluation with the same weights and options resumes.
"""

from __future__ import annotations

import json
import re
import statistics
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import ConfigError
from ..records.datasets import BadRowError, read_dataset
from ..solver.solve import FAILED, Question, Solution, Solver, failed, solve_safely
from .attribution import CATEGORIES, LADDER, attribute, ladder, teacher_programs
from .grading import exact_equal, grade_many

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


@dataclass
class EvalOptions:
    limit: int | None = None
    cot_limit: int = 200  # problems the chain-of-thought baseline runs on (0: none)
    cot_max_new_tokens: int = 512
    cot_batch: int = 16  # after the first cot_timed problems (one at a time: the latency), for throughput
    cot_timed: int = 20
    drop_overlap: bool = False
    labels_run: str | None = None
    progress: bool = True


def read_problems(data: Path, fmt: str = "auto", limit: int | None = None) -> tuple[list, list[str]]:
    problems, bad = [], []
    for row in read_dataset(data, fmt):
        if isinstance(row, BadRowError):
            bad.append(str(row))
            continue
        if row.answer is None:
            bad.append(f"{row.source.file}:{row.source.line}: {row.id} has no gold answer")
            continue
        problems.append(row)
        if limit and len(problems) >= limit:
            break
    return problems, bad


def check_overlap(problems: list, trained_on: set[str], drop: bool) -> tuple[list, list[str]]:
    """The problems whose content hash is not among the training questions; an overlap raises unless ``drop``."""
    seen = [p.id for p in problems if p.id in trained_on]
    if seen and not drop:
        raise ConfigError(f"{len(seen)} evaluation problem(s) are in the students' training data (by content hash), "
                          f"e.g. {', '.join(seen[:5])}: evaluate on a test split, or pass --drop-overlap")
    return [p for p in problems if p.id not in trained_on], seen


def steps_of(problem) -> str:
    """GSM8K: the reference solution's number of calculations (``<<a*b=c>>``), as a group key."""
    n = (problem.solution or "").count("<<")
    return f"{n}" if n < 8 else "8+"


def groups_of(problem) -> dict[str, str]:
    if problem.subject or problem.level:
        return {"subject": problem.subject or "?", "level": str(problem.level or "?")}
    return {"steps": steps_of(problem)}


def last_number(text: str) -> str | None:
    """The trivial baseline: the last number written in the problem."""
    found = _NUMBER.findall(text)
    return found[-1].replace(",", "") if found else None


def _latency(ms: list[float]) -> dict:
    if not ms:
        return {}
    qs = statistics.quantiles(ms, n=10) if len(ms) > 1 else [ms[0]] * 9
    return {"mean": round(statistics.fmean(ms), 1), "median": round(statistics.median(ms), 1), "p90": round(qs[8], 1)}


def _rate(flags: list[bool]) -> float:
    return round(sum(flags) / len(flags), 4) if flags else 0.0


def evaluate(models: Path, data: Path, out: Path, teacher, solver_options=None, options: EvalOptions | None = None,
             store=None, fmt: str = "auto") -> dict:
    from ..students.saved import read_trained_on
    from .cot import cot_answers
    from .report import write_report

    opts = options or EvalOptions()
    out.mkdir(parents=True, exist_ok=True)
    problems, bad = read_problems(Path(data), fmt, opts.limit)
    from ..solver.read import reader_dir

    problems, overlap = check_overlap(problems, read_trained_on(reader_dir(models) or models), opts.drop_overlap)
    if not problems:
        raise ConfigError(f"{data}: no problems to evaluate ({len(bad)} bad rows, {len(overlap)} in the training data)")
    solver = make_solver(models, teacher, solver_options)
    if opts.labels_run and not hasattr(solver, "read"):
        raise ConfigError(f"{models}: attribution and the oracle ladder are the six students' (the reader has none "
                          "yet); evaluate the reader without --labels-run")
    teacher_progs = (teacher_programs(store, opts.labels_run, _train_run(models), problems, opts.progress)
                     if opts.labels_run else {})

    solutions, rungs = _solve_all(solver, problems, teacher_progs, out / "solutions.partial.jsonl",
                                  _resume_key(models, solver.options, opts), opts.progress)
    grades = grade_many([(p.answer, s.answer) for p, s in zip(problems, solutions)])
    trivial = grade_many([(p.answer, last_number(p.question)) for p in problems])

    cot = cot_answers(teacher, [Question(id=p.id, text=p.question) for p in problems[:opts.cot_limit]],
                      opts.cot_max_new_tokens, opts.cot_batch, opts.cot_timed, opts.progress) if opts.cot_limit else []
    cot_grades = grade_many([(p.answer, c.answer) for p, c in zip(problems, cot)])

    metrics: dict = {
        "data": str(data), "models": str(models), "n": len(problems), "bad_rows": len(bad), "bad": bad[:50],
        "overlap": {"trained_on": "trained_on.txt", "in_training": len(overlap), "dropped": len(overlap)},
        "solver": {"accuracy": _rate([g.correct for g in grades]),
                   "coverage": _rate([not s.abstained for s in solutions]),
                   "failed": sum(bool(s.reason and s.reason.startswith(FAILED)) for s in solutions),
                   "accuracy_when_answered": _rate([g.correct for g, s in zip(grades, solutions) if not s.abstained]),
                   "latency_ms": _latency([s.ms for s in solutions]),
                   "programs_tried": _latency([float(s.programs_tried) for s in solutions]),
                   "options": vars(solver.options)},
        "baselines": {"last number in the problem": {"accuracy": _rate([g.correct for g in trivial])}},
        "grader": {"disagreements": sum(g.disagree for g in grades + cot_grades),
                   "math_verify_could_not_grade": sum(g.verify is None and s.answer is not None
                                                      for g, s in zip(grades, solutions))},
        "by": _by_group(problems, grades, solutions, cot_grades),
        "coverage_accuracy": _coverage_curve(solutions, grades),
    }
    if any("beam" in s.trace for s in solutions):  # the verifier's ceiling: a right value anywhere in the beam
        metrics["solver"]["pass_at_beam"] = _rate([any(exact_equal(p.answer, b["value"]) for b in s.trace.get("beam", []))
                                                   for p, s in zip(problems, solutions)])
    if any("choice" in s.trace for s in solutions):  # every rule's pick from the same beams, graded as the answer is
        pick = lambda s, how: s.trace["beam"][s.trace["choice"][how]]["value"] if "choice" in s.trace else None  # noqa: E731
        metrics["solver"]["by_choice"] = {how: _rate([g.correct for g in grade_many(
            [(p.answer, pick(s, how)) for p, s in zip(problems, solutions)])]) for how in ("beam", "verifier", "weighted")}
        metrics["solver"]["verifier"] = {"path": str(solver.verifier_path), "choice": solver.choice}
    if cot:
        metrics["baselines"]["same backbone, chain of thought"] = _cot_metrics(cot, cot_grades, solutions, grades)
    categories: list[str | None] = [None] * len(problems)
    if opts.labels_run:
        metrics["attribution"], categories = _attribution(problems, grades, solutions, teacher_progs)
        metrics["attribution"]["labels_run"] = opts.labels_run
        metrics["ladder"] = _ladder(problems, solutions, rungs)

    with open(out / "solutions.jsonl", "w") as f:
        for p, s, g, cat in zip(problems, solutions, grades, categories):
            f.write(json.dumps(s.to_json() | {"gold": p.answer, "correct": g.correct, "grade": vars(g),
                                              "blamed": cat, "groups": groups_of(p)}) + "\n")
    if cot:
        with open(out / "cot.jsonl", "w") as f:
            for c, g in zip(cot, cot_grades):
                f.write(json.dumps(vars(c) | {"correct": g.correct}) + "\n")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    (out / "solutions.partial.jsonl").unlink(missing_ok=True)
    write_report(metrics, out, [s.ms for s in solutions], [c.ms for c in cot if c.batch == 1])
    return metrics


def make_solver(models: Path, teacher, solver_options=None):
    """The reader's solver where ``models`` holds a reader (``solve.read.reader_dir``), else the six students'."""
    from ..solver.read import ReaderOptions, ReaderSolver, reader_dir

    reader = reader_dir(models)
    if reader is not None:
        o = solver_options
        return ReaderSolver(reader, teacher, ReaderOptions(width=getattr(o, "beam", 10),
                                                           choice=getattr(o, "choice", "auto")),
                            verifier=getattr(o, "verifier", True))
    return Solver(models, teacher, solver_options)


def _train_run(models: Path) -> str:
    return json.loads((Path(models) / "C3" / "provenance.json").read_text())["run"]


def _resume_key(models: Path, solver_options, opts: EvalOptions) -> str:
    """What a solved problem's line depends on: the weights, the solver's options, the labels run."""
    import hashlib

    weights = sorted((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in
                     [*Path(models).glob("*/model.safetensors"), *Path(models).glob("model.safetensors"),
                      *Path(models).parent.glob("verifier/model.safetensors")])
    text = json.dumps([str(Path(models).resolve()), weights, vars(solver_options), opts.labels_run], default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _solve_all(solver, problems: list, teacher_progs: dict, partial: Path, key: str, progress: bool):
    """Every problem's Solution and, with teacher programs, its answers up the oracle ladder. Each problem is
    appended to ``partial`` as it is solved, so an interrupted evaluation resumes where it stopped."""
    from tqdm import tqdm

    done = {}
    if partial.is_file():
        for line in partial.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # the line being written when it stopped
                continue
            if row.get("key") == key:
                done[row["id"]] = row
    solutions, rungs = [], []
    with open(partial, "a") as f:
        bar = tqdm(problems, desc="solve", unit="problem", disable=not progress)
        for p in bar:
            if p.id in done:
                row = done[p.id]
                solutions.append(Solution(**row["solution"]))
                rungs.append(row["rungs"])
                continue
            q = Question(id=p.id, text=p.question)  # the text only: no answer, no solution
            sol, reading, t0 = None, None, time.perf_counter()
            if not hasattr(solver, "read"):  # the reader: no oracle ladder
                sol = solve_safely(solver, q)
            else:
                try:
                    reading = solver.read(q)
                    sol = solver.answer(reading)
                except Exception as e:  # noqa: BLE001 - one problem never stops the others: named in its reason
                    sol = failed(q, e, t0)
            solutions.append(sol)
            prog = teacher_progs.get(p.id)
            has_program = reading is not None and prog is not None and not isinstance(prog, str)
            rungs.append([s.answer for s in ladder(solver, reading, prog, sol)] if has_program else None)
            f.write(json.dumps({"key": key, "id": p.id, "solution": solutions[-1].to_json(), "rungs": rungs[-1]}) + "\n")
            f.flush()
            bar.set_postfix(abstained=sum(s.abstained for s in solutions), resumed=len(done))
    return solutions, rungs


def _cot_metrics(cot: list, cot_grades: list, solutions: list, grades: list) -> dict:
    n = len(cot)
    timed = [i for i, c in enumerate(cot) if c.batch == 1]  # latency: batch 1 only, on both sides
    solver_ms, cot_ms = [solutions[i].ms for i in timed], [cot[i].ms for i in timed]
    return {"n": n, "accuracy": _rate([g.correct for g in cot_grades]),
            "solver_accuracy_same_problems": _rate([g.correct for g in grades[:n]]),
            "timed": len(timed), "latency_ms": _latency(cot_ms), "solver_latency_ms": _latency(solver_ms),
            "speedup_mean": round(statistics.fmean(cot_ms) / statistics.fmean(solver_ms), 1) if timed else None,
            "batched_ms_per_problem": round(statistics.fmean(c.ms for c in cot if c.batch > 1), 1)
            if n > len(timed) else None,
            "tokens_mean": round(statistics.fmean(c.tokens for c in cot), 1),
            "truncated": sum(c.truncated for c in cot)}


def _by_group(problems: list, grades: list, solutions: list, cot_grades: list) -> dict:
    by: dict = defaultdict(lambda: defaultdict(lambda: {"n": 0, "correct": 0, "answered": 0, "cot_n": 0,
                                                        "cot_correct": 0}))
    for i, (p, g, s) in enumerate(zip(problems, grades, solutions)):
        for group, key in groups_of(p).items():
            cell = by[group][key]
            cell["n"] += 1
            cell["correct"] += g.correct
            cell["answered"] += not s.abstained
            if i < len(cot_grades):
                cell["cot_n"] += 1
                cell["cot_correct"] += cot_grades[i].correct
    return {g: dict(sorted(v.items(), key=lambda kv: (len(kv[0]), kv[0]))) for g, v in by.items()}


def _coverage_curve(solutions: list, grades: list) -> list[dict]:
    """Answer only when the answer's probability is at least τ: coverage and accuracy when answered, per τ."""
    answered = [(s.confidence, g.correct) for s, g in zip(solutions, grades) if not s.abstained]
    curve = []
    for tau in [x / 20 for x in range(20)]:
        kept = [c for conf, c in answered if conf >= tau]
        curve.append({"tau": tau, "coverage": round(len(kept) / len(solutions), 4), "accuracy": _rate(kept)})
    return curve


def _attribution(problems: list, grades: list, solutions: list, teacher_progs: dict) -> tuple[dict, list]:
    blame, every, categories = Counter(), Counter(), []
    for p, g, s in zip(problems, grades, solutions):
        cat, found = attribute(s, teacher_progs.get(p.id, "no program"), g.correct)
        categories.append(cat)
        blame.update([cat] if cat else [])
        every.update(found)
    reasons = Counter(v for v in teacher_progs.values() if isinstance(v, str))
    return {"teacher_programs": sum(not isinstance(teacher_progs.get(p.id), str) for p in problems),
            "teacher_rejected": dict(reasons.most_common()), "wrong": sum(not g.correct for g in grades),
            "blamed": {c: blame.get(c, 0) for c in CATEGORIES}, "disagreements": dict(every.most_common())}, categories


def _ladder(problems: list, solutions: list, rungs: list) -> list[dict]:
    """Accuracy per rung (rung 0: the students; problems without a teacher program keep the students' answer)."""
    rows = []
    answers = [[s.answer for s in solutions]] + [[r[k] if r else s.answer for r, s in zip(rungs, solutions)]
                                                 for k in range(len(LADDER) - 1)]
    for name, rung in zip(LADDER, answers):
        gs = grade_many([(p.answer, a) for p, a in zip(problems, rung)])
        rows.append({"rung": name, "accuracy": _rate([g.correct for g in gs]),
                     "accuracy_teacher_labelled": _rate([g.correct for g, r in zip(gs, rungs) if r])})
    return rows
