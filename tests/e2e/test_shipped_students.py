"""The shipped reader (`make students`, committed under shared/mycelium/data/students/): it loads on the embedded
backbone, stays within the weights budget with its provenance and metrics beside it, and solves bundled problems
from their text alone, better than the trivial baseline on the same problems."""

import json

import pytest

from mycelium.cli.main import SHIPPED
from mycelium.evaluation.evaluate import last_number, read_problems
from mycelium.evaluation.grading import exact_equal
from mycelium.solver.read import ReaderSolver, reader_dir
from mycelium.solver.solve import Question

from ..conftest import SAMPLE

pytestmark = pytest.mark.e2e


def test_the_shipped_students_are_small_and_say_where_they_come_from():
    reader = reader_dir(SHIPPED)
    assert reader is not None, f"no shipped reader in {SHIPPED} (run `make students`)"
    total = sum(p.stat().st_size for p in SHIPPED.rglob("*") if p.is_file())
    assert total <= 25 * 2**20
    prov = json.loads((reader / "provenance.json").read_text())
    metrics = json.loads((reader / "metrics.json").read_text())
    assert prov["source"] and prov["train_problems"] > 1000
    assert 0 < metrics["val"]["answer_accuracy"] <= 1 and metrics["val_programs"] > 100
    assert not (reader / "checkpoint.pt").exists()  # the resumable state stays out of the shipped set


def test_the_shipped_reader_solves_bundled_problems_from_their_text(embedded_teacher):
    solver = ReaderSolver(reader_dir(SHIPPED), embedded_teacher)
    problems, _ = read_problems(SAMPLE)
    sols = [solver.solve(Question(id=p.id, text=p.question)) for p in problems]
    assert all(s.answer is not None or s.reason for s in sols)
    right = sum(s.answer is not None and bool(exact_equal(p.answer, s.answer)) for p, s in zip(problems, sols))
    trivial = sum(bool(exact_equal(p.answer, last_number(p.question) or "")) for p in problems)
    assert right >= max(3, 2 * trivial), (right, trivial)
    solved = next(s for p, s in zip(problems, sols) if s.answer is not None and exact_equal(p.answer, s.answer))
    assert solved.program and all("value" in n for n in solved.program) and solved.trace["beam"]


def test_the_shipped_verifier_sits_beside_the_reader_with_its_metric_and_ranks_the_same_beams(embedded_teacher):
    from mycelium.solver.read import ReaderOptions, verifier_dir

    reader = reader_dir(SHIPPED)
    where = verifier_dir(reader)
    assert where is not None, f"no shipped verifier beside {reader} (run `make verifier`)"
    metrics = json.loads((where / "metrics.json").read_text())
    v = metrics["val"]  # its metric beside the baseline (beam order), on the same val beams
    assert v["n"] > 100 and 0 < v["top1_beam"] <= v["pass_at_beam"] and v["top1_verifier"] <= v["pass_at_beam"]
    assert 0.5 < v["auc"] <= 1 and metrics["train_beams"] > 1000
    solver = ReaderSolver(reader, embedded_teacher, ReaderOptions(choice="verifier"))
    alone = ReaderSolver(reader, embedded_teacher, verifier=None)
    problems, _ = read_problems(SAMPLE)
    for p in problems[:6]:
        q = Question(id=p.id, text=p.question)
        s, a = solver.solve(q), alone.solve(q)
        if s.abstained:
            continue
        # the same beam: the reader alone answers with its first candidate; the verifier's pick is recorded
        assert [b["value"] for b in s.trace["beam"]] == [b["value"] for b in a.trace["beam"]]
        assert a.answer == s.trace["beam"][0]["value"] or a.answer == str(s.trace["beam"][0]["value"])
        assert s.answer == s.trace["beam"][s.trace["choice"]["verifier"]]["value"]
