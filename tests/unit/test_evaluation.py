"""Evaluation: the grader table, the overlap check, attribution (one case per category), the oracle ladder, and
``evaluate`` end to end on tiny students with a labels run."""

import json

import numpy as np
import pytest

from mycelium.core.config import CaptureConfig, IngestConfig
from mycelium.core.errors import ConfigError
from mycelium.evaluation.attribution import CATEGORIES, LADDER, attribute, oracle
from mycelium.evaluation.evaluate import EvalOptions, _resume_key, check_overlap, evaluate
from mycelium.evaluation.grading import grade_many
from mycelium.records.datasets import problem_id
from mycelium.records.programs import Node, Pointer, Program
from mycelium.solver.search import best_first
from mycelium.solver.solve import Solution, SolverOptions
from mycelium.stages.capture import run_capture

from ..conftest import SAMPLE, analyze_run, write_jsonl
from .test_label_stage import labelled  # noqa: F401 - the tiny run, labelled and merged
from .test_solver import decisions, students  # noqa: F401 - tiny students trained on it

SOLUTION_FIELDS = ("id", "answer", "abstained", "reason", "confidence", "program", "nodes_expanded", "programs_tried",
                   "ms", "trace")

GRADER_TABLE = [
    ("18", "18", True), ("18", "18.0", True), ("18", "17", False),  # integers
    ("2.5", "2.50", True), ("0.25", "1/4", True), ("2.5", "2.4", False),  # decimals
    ("\\frac{3}{4}", "3/4", True), ("\\frac{3}{4}", "0.75", True), ("\\frac{3}{4}", "4/3", False),  # fractions
    ("$18.90", "18.9", True), ("\\$1,200", "1200", True), ("1,200", "1200", True),  # money
    ("\\sqrt{2}", "sqrt(2)", True), ("\\frac{\\sqrt{3}}{2}", "sqrt(3)/2", True), ("3\\pi", "3*pi", True),  # LaTeX
    ("\\sqrt{2}", "2", False),
    ("12\\text{ cm}", "12", True), ("90^\\circ", "90", True), ("5\\%", "5", True), ("12\\text{ cm}", "13", False),
    ("1,-2", "-1", False), ("1,000", "1000", True),  # a list is not a number with a thousands separator
    ("7", None, False),  # an abstention is wrong
]


def test_the_grader_table():
    graded = grade_many([(g, p) for g, p, _ in GRADER_TABLE])
    wrong = [(g, p, want, got) for (g, p, want), got in zip(GRADER_TABLE, graded) if got.correct != want]
    assert not wrong
    assert not any(g.disagree for g in graded)  # math-verify and the exact sympy check agree on the table


def test_grading_needs_a_gold_answer():
    with pytest.raises(ValueError, match="no gold answer"):
        grade_many([(None, "3")])


def test_training_questions_are_listed_and_an_overlap_stops_evaluation(students, labelled):  # noqa: F811
    from mycelium.evaluation.evaluate import read_problems
    from mycelium.students.saved import read_trained_on

    trained = read_trained_on(students)
    store, _ = labelled
    train_questions = {json.loads(line)["question"] for line in store.get("l/training/C3/train.jsonl").decode().splitlines()}
    assert train_questions and {problem_id(q) for q in train_questions} <= trained
    problems, _ = read_problems(SAMPLE)
    with pytest.raises(ConfigError, match="in the students' training data"):
        check_overlap(problems, trained, drop=False)
    kept, seen = check_overlap(problems, trained, drop=True)
    assert seen and not {p.id for p in kept} & trained and len(kept) + len(seen) == len(problems)


# --- attribution on constructed cases --------------------------------------------------------------------------

TEXT = "Ann has 3 bags with 4 apples each. She eats 2 apples. How many apples are left?"
#       3 at 8-9, 4 at 20-21, 2 at 44-45


def teacher_program() -> Program:
    def text(s, e, name):
        return Pointer(kind="text", value=TEXT[s:e], span=(s, e), span_text=TEXT[s:e], name=name)
    nodes = [Node(index=0, step=0, template="T1", labels=["mul"], operands=[text(8, 9, "n0"), text(20, 21, "n1")],
                  canonical="n0 * n1", value="12"),
             Node(index=1, step=1, template="T2", labels=["add"],
                  operands=[Pointer(kind="node", value="12", node=0), text(44, 45, "n2")], canonical="r0 - n2", value="10")]
    return Program(problem_id="p" + "0" * 12, source="teacher", question=TEXT, answer="10", dataset="gsm8k",
                   nodes=nodes, answer_node=1, heartbeats=2, read_spans=[(0, 55)], match_spans=[(0, 55)])


def operand(s, e):
    return {"text": TEXT[s:e], "span": [s, e]}


RIGHT_PROGRAM = [{"canonical": "n0 * n1", "operands": [operand(8, 9), operand(20, 21)], "value": "12"},
                 {"canonical": "r0 - n2", "operands": [{"node": 0}, operand(44, 45)], "value": "10"}]
GOOD_TRACE = {"C1": {"spans": [[0, 80]]}, "C2": {"templates": {"T1": 0.9, "T2": 0.8}},
              "C4": {"mentions": [{"span": [8, 9], "role": "operand"}, {"span": [20, 21], "role": "operand"},
                                  {"span": [44, 45], "role": "operand"}]}}


def solution(program=RIGHT_PROGRAM, answer="10", abstained=False, reason=None, **trace) -> Solution:
    return Solution(id="q", answer=answer, abstained=abstained, reason=reason, confidence=0.5, program=program,
                    trace={**GOOD_TRACE, **trace})


@pytest.mark.parametrize("category, sol, correct, teacher", [
    ("TEACHER", solution(answer="9"), False, "an operand is not grounded"),
    ("C1 segmentation", solution(answer="9", C1={"spans": [[0, 30]]}), False, None),  # 2 at 44-45 not read
    ("C2 classification", solution(program=[], answer=None, abstained=True,
                                    reason="cannot decompose: no template is likely (C2 is flat)",
                                    C2={"templates": {}}), False, None),
    ("C4 roles", solution(answer="9", C4={"mentions": [{"span": [8, 9], "role": "operand"},
                                                       {"span": [20, 21], "role": "operand"},
                                                       {"span": [44, 45], "role": "unused"}]}), False, None),
    ("C3 extraction", solution(program=[{"canonical": "n0 + n1", "operands": [operand(8, 9), operand(20, 21)],
                                         "value": "7"}], answer="7"), False, None),
    ("C5 dependency", solution(program=[{"canonical": "n0 - n1", "operands": [operand(20, 21), operand(44, 45)],
                                         "value": "2"},
                                        {"canonical": "r0 * n0", "operands": [{"node": 0}, operand(8, 9)],
                                         "value": "6"}], answer="6"), False, None),
    ("C6 selection", solution(program=RIGHT_PROGRAM[:1] + [
        {"canonical": "r0 - n2", "operands": [{"node": 0}, operand(44, 45)], "value": "10"},
        {"canonical": "r1 * n0", "operands": [{"node": 1}, operand(8, 9)], "value": "30"}], answer="30"), False, None),
    ("execution", solution(answer="11"), False, None),  # the teacher's program, a wrong value
    ("abstained", solution(program=[], answer=None, abstained=True, reason="cannot decompose: no program computes"),
     False, None),
    (None, solution(), True, None),
])
def test_attribution_blames_the_first_disagreeing_component(category, sol, correct, teacher):
    blamed, _ = attribute(sol, teacher or teacher_program(), correct)
    assert blamed == category
    assert category is None or category in CATEGORIES


def test_the_top_rung_of_the_ladder_is_the_teacher_program():
    # the students prefer the wrong count, shape and pointers; classes: m0, m1, node0, node1
    ptr = np.full((2, 2, 4), 0.25)
    d = decisions([0.0, 0.9, 0.1], [[0.2, 0.8], [0.3, 0.7]], ptr, slots=(2, 2), mentions=2)
    y = {"n_nodes": 2, "shape": np.array([0, 1]), "pointers": np.array([[0, 1], [2, 0]])}  # r1 = shape1(r0, m0)
    top = next(iter(best_first(oracle(d, y, level=5, n_mentions=2), theta=0.9, width=3, budget=50)))
    assert top.program == [(0, (0, 1)), (1, (2, 0))]
    assert next(iter(best_first(oracle(d, y, level=2, n_mentions=2), 0.9, 3, 50))).count == 2  # the count alone


# --- end to end -------------------------------------------------------------------------------------------------

def test_evaluate_end_to_end_with_attribution_and_the_ladder(students, labelled, tiny_teacher, tmp_path):  # noqa: F811
    store, _ = labelled
    rows = [json.loads(line) for line in SAMPLE.read_text().splitlines()[20:26]]  # not among the 16 trained on
    data = write_jsonl(tmp_path / "test.jsonl", rows)
    run_capture(data, "t", store, CaptureConfig(n_computing_heads=2, calibration_problems=1, progress=False),
                IngestConfig(), teacher=tiny_teacher)
    analyze_run(store, "t")
    out = tmp_path / "eval"
    m = evaluate(students, data, out, tiny_teacher, SolverOptions(flat=0.0, budget=100),
                 EvalOptions(cot_limit=3, cot_max_new_tokens=6, cot_timed=1, cot_batch=2, labels_run="t",
                             progress=False), store=store)
    assert m["n"] == 6 and m["overlap"]["in_training"] == 0
    lines = [json.loads(x) for x in (out / "solutions.jsonl").read_text().splitlines()]
    assert len(lines) == 6 and sum(x["correct"] for x in lines) == round(m["solver"]["accuracy"] * 6)
    cot = m["baselines"]["same backbone, chain of thought"]
    assert cot["n"] == 3 and cot["timed"] == 1 and cot["speedup_mean"] > 0 and cot["batched_ms_per_problem"] > 0
    assert [json.loads(x)["batch"] for x in (out / "cot.jsonl").read_text().splitlines()] == [1, 2, 2]
    a = m["attribution"]
    assert sum(a["blamed"].values()) == a["wrong"] == 6 - sum(x["correct"] for x in lines)
    assert [r["rung"] for r in m["ladder"]] == list(LADDER)
    assert a["teacher_programs"] + sum(a["teacher_rejected"].values()) == 6
    for name in ("report.md", "metrics.json", "accuracy_by_group.png", "latency.png", "coverage_accuracy.png",
                 "attribution.png", "ladder.png"):
        assert (out / name).stat().st_size > 0, name
    assert "Oracle ladder" in (out / "report.md").read_text()
    assert not (out / "solutions.partial.jsonl").exists()

    # an interrupted evaluation resumes: the problems already solved (same weights, same options) are not redone
    partial = [{"key": None, "id": x["id"], "solution": {k: v for k, v in x.items() if k in SOLUTION_FIELDS},
                "rungs": None} for x in lines[:2]]
    key = _resume_key(students, SolverOptions(flat=0.0, budget=100), EvalOptions(labels_run=None))
    for row in partial:
        row["key"], row["solution"]["answer"] = key, "424242"  # marked: only a resumed line can say this
    (out / "solutions.partial.jsonl").write_text("".join(json.dumps(r) + "\n" for r in partial) + '{"cut off')
    evaluate(students, data, out, tiny_teacher, SolverOptions(flat=0.0, budget=100),
             EvalOptions(cot_limit=0, progress=False))
    again = [json.loads(x) for x in (out / "solutions.jsonl").read_text().splitlines()]
    assert [x["answer"] for x in again[:2]] == ["424242"] * 2 and len(again) == 6
    assert [x["answer"] for x in again[2:]] == [x["answer"] for x in lines[2:]]


def test_bad_rows_are_named_counted_and_skipped(tmp_path):
    from mycelium.evaluation.evaluate import read_problems

    path = tmp_path / "test.jsonl"
    path.write_text('{"question": "What is 1 + 1?", "answer": "#### 2"}\n{oops\n{"question": "What is 2 + 2?"}\n')
    problems, bad = read_problems(path)
    assert [p.question for p in problems] == ["What is 1 + 1?"]
    assert len(bad) == 2 and "test.jsonl" in bad[0] and ":2" in bad[0] and ":3" in bad[1]
