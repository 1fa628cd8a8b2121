"""The solver: the search on hand-made distributions, honesty by construction, abstaining, on tiny students."""

import json

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from mycelium.records.programs import COMPONENTS
from mycelium.solver.search import Decisions, SearchStats, best_first
from mycelium.solver.solve import Question, Solver, SolverOptions, format_accepts
from mycelium.stages.train import run_train
from mycelium.students.train import TrainOptions

from .test_label_stage import labelled  # noqa: F401 - the tiny run, labelled and merged


def decisions(count, shapes, pointers, slots=(2, 1), mentions=2, constants=0) -> Decisions:
    return Decisions(count=np.log(np.asarray(count) + 1e-12), shapes=np.log(np.asarray(shapes) + 1e-12),
                     shape_slots=list(slots), pointers=np.log(np.asarray(pointers) + 1e-12), n_mentions=mentions,
                     n_constants=constants)


def one_node(ptr0, ptr1):
    """One node of shape 0 ({} op {}), two mentions; classes [m0, m1, node0]."""
    return decisions([0.0, 1.0], [[1.0, 0.0]], [[ptr0 + [0.0], ptr1 + [0.0]]])


def test_a_confident_problem_is_one_pass():
    stats = SearchStats()
    found = list(best_first(one_node([0.97, 0.03], [0.02, 0.98]), theta=0.9, width=3, budget=100, stats=stats))
    assert [c.program for c in found] == [[(0, (0, 1))]]
    assert stats.branched == 0 and stats.expanded == 5  # count, shape, two slots, complete


def test_a_low_confidence_decision_branches_in_order_of_probability():
    stats = SearchStats()
    found = list(best_first(one_node([0.6, 0.4], [0.02, 0.98]), theta=0.9, width=3, budget=100, stats=stats))
    assert [c.program for c in found] == [[(0, (0, 1))], [(0, (1, 1))]]
    assert found[0].cost < found[1].cost and stats.branched == 1


def test_a_node_no_later_node_reads_is_pruned_and_nodes_read_only_earlier_nodes():
    # two nodes; node 1 prefers to read mentions only, which would leave node 0 dangling
    ptr = np.zeros((2, 2, 2 + 2))
    ptr[0, 0, 0] = ptr[0, 1, 1] = 1.0
    ptr[1, 0, :] = [0.5, 0.1, 0.4, 0.0]  # m0 (prunes), node 0 (kept)
    ptr[1, 1, :] = [0.0, 0.9, 0.0, 0.1]  # m1; node 1 itself is never allowed
    d = Decisions(count=np.log([1e-9, 1e-9, 1.0]), shapes=np.log([[1.0, 1e-9], [1.0, 1e-9]]), shape_slots=[2, 1],
                  pointers=np.log(ptr + 1e-12), n_mentions=2, n_constants=0)
    stats = SearchStats()
    found = list(best_first(d, theta=0.95, width=3, budget=100, stats=stats))
    assert found and all(any(p == 2 for p in c.program[1][1]) for c in found)  # node 1 reads node 0
    assert stats.pruned >= 1 and all(p != 3 for c in found for _, ps in c.program for p in ps)


def test_the_answer_format_prunes_a_non_integer_count():
    assert format_accepts("integer", "12") and not format_accepts("integer", "7/2")
    assert format_accepts("fraction", "7/2") and format_accepts("decimal", "2.5")


def test_the_solver_reads_a_question_and_nothing_else():
    with pytest.raises(ValidationError):
        Question(id="p1", text="What is 2 + 3?", answer="5")  # the type has no field for it


@pytest.fixture(scope="module")
def students(labelled, tiny_teacher, tmp_path_factory):  # noqa: F811
    store, _ = labelled
    out = tmp_path_factory.mktemp("students")
    run_train(store, "l", out, tiny_teacher, list(COMPONENTS), opts=TrainOptions(epochs=1, batch_size=8, progress=False),
              hidden=32, adapter_layers=1)
    return out


def test_poisoned_answers_and_solutions_give_identical_outputs(students, tiny_teacher, tmp_path, capsys, monkeypatch):
    import mycelium.teacher.model as teacher_model
    from mycelium.cli.solving import solve

    from ..conftest import SAMPLE

    rows = [json.loads(line) for line in SAMPLE.read_text().splitlines()[:4]]
    poisoned = [{**r, "answer": "#### 99999", "solution": "The answer is 99999."} for r in rows]
    monkeypatch.setattr(teacher_model, "load_teacher", lambda *_a, **_k: tiny_teacher)
    outputs = []
    for name, data in (("clean", rows), ("poisoned", poisoned)):
        path = tmp_path / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in data))
        args = type("A", (), dict(text=None, data=str(path), format="auto", limit=None, models=str(students),
                                  backbone=None, json=True, theta=0.9, budget=200, width=3, max_programs=24, vote=1, fuse=0.0,
                                  beam=10))()
        assert solve(args) == 0
        lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
        outputs.append([{k: v for k, v in x.items() if k != "ms"} for x in lines])
    assert len(outputs[0]) == 4 and outputs[0] == outputs[1]
    assert all(x["answer"] != "99999" for x in outputs[1])


def test_a_flat_template_distribution_abstains(students, tiny_teacher):
    solver = Solver(students, tiny_teacher, SolverOptions(flat=0.2))
    q = Question(id="q", text="Tom has 3 apples and buys 4 more. How many apples does Tom have?")
    with torch.no_grad():
        solver.models["C2"].templates.bias.fill_(-20.0)  # every template improbable: C2 is flat
    sol = solver.solve(q)
    assert sol.abstained and sol.answer is None and "C2 is flat" in sol.reason and sol.trace["C2"]["templates"] == {}
    with pytest.raises(TypeError, match="reads a Question"):
        solver.solve({"id": "q", "text": q.text, "answer": "7"})


def test_a_solution_carries_its_trace(students, tiny_teacher):
    sol = Solver(students, tiny_teacher, SolverOptions(flat=0.0)).solve(
        Question(id="q", text="Tom has 3 apples and buys 4 more. How many apples does Tom have?"))
    assert {"C1", "C2", "C4", "C5", "C6"} <= set(sol.trace) and sol.nodes_expanded > 0
    if not sol.abstained:
        assert sol.program and sol.program[-1]["value"] == sol.answer
        assert all("span" in o or "node" in o or "const" in o for n in sol.program for o in n["operands"])


def test_programs_with_the_same_answer_pool_their_probability():
    from mycelium.solver.search import Candidate
    from mycelium.solver.solve import _vote

    c = lambda p: Candidate(-np.log(p), [], 1)  # noqa: E731
    computed = [(c(0.4), ["a"], "7"), (c(0.3), ["b"], "12"), (c(0.25), ["c"], "12.0")]
    cand, nodes, value, confidence = _vote(computed)
    assert value == "12" and nodes == ["b"] and confidence == pytest.approx(0.55)
    assert _vote(computed[:1])[2:] == ("7", pytest.approx(0.4))  # one program: the first that computes


def test_the_other_students_reweight_the_operand_pointers():
    from mycelium.solver.solve import fused_pointers

    # two mentions, two nodes, no constants: classes [m0, m1, node0, node1]; C3 itself is indifferent
    out = {"C3": {"n_mentions": 2}, "C1": {"tags": torch.tensor([[5.0, 5.0, -5.0, -5.0]])},  # C1 reads m0 only
           "C4": {"roles": torch.tensor([[[4.0, 0.0, 0.0], [4.0, 0.0, 0.0]]])},  # both operands
           "C5": {"edges": torch.tensor([[[0.0, 6.0], [0.0, 0.0]]])}}  # node 1 reads node 0
    fused = fused_pointers(np.zeros((2, 2, 4)), out, [(0, 2), (2, 4)], weight=1.0)
    assert (fused[:, :, 0] > fused[:, :, 1]).all()  # m0, which C1 marked as read, over m1
    assert fused[1, 0, 2] > -0.01 and fused[0, 0, 2] == 0.0  # node 1 may read node 0 (C5); node 0 cannot
