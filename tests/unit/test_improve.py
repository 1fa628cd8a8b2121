"""The self-improving loop: student labels verified by execution, the teacher's mop-up, round merges, the stop rule."""

import json

import pytest

from mycelium.core.config import ImproveConfig, LabelConfig, MergeConfig
from mycelium.core.keys import RunKeys
from mycelium.programs.execute import execute
from mycelium.programs.build import matches_gold
from mycelium.records.datasets import dataset_row, read_dataset
from mycelium.records.problems import Problem, Source
from mycelium.records.programs import Example, LabelRecord
from mycelium.solver.verified import VERIFIED, first_correct, student_program
from mycelium.stages.improve import Loop
from mycelium.stages.rounds import decide

from ..conftest import SAMPLE, analyze_run, reduce_run, unlabelled_train_rows, write_jsonl


def _problem(question: str, answer: str = "33", dataset: str = "gsm8k") -> Problem:
    return Problem(id="p0123456789ab", question=question, answer=answer, solution="3*14 = 42\n42-9 = 33",
                   source=Source(file="x.jsonl", line=1, dataset=dataset))


@pytest.mark.parametrize("row", [
    {"question": "Sam has 3 bags of 14 pens. He gives away 9. How many are left?", "answer": "3*14=42\n42-9=33\n#### 33"},
    {"problem": "Find $x$ if $2x = 6$.", "solution": "$x = \\boxed{3}$", "answer": "3", "subject": "Algebra", "level": 2},
    {"question": "What is 2 + 5?", "answer": "7", "solution": "2 + 5 = 7"},
])
def test_a_problem_is_written_back_as_a_row_of_its_own_format(tmp_path, row):
    (first,) = read_dataset(_write(tmp_path / "a.jsonl", [row]))
    (again,) = read_dataset(_write(tmp_path / "b.jsonl", [dataset_row(first)]))
    assert again.model_dump(exclude={"source"}) == first.model_dump(exclude={"source"})
    assert again.source.dataset == first.source.dataset


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_a_student_program_is_pruned_renamed_and_executes_to_the_answer():
    q = "Marisol bakes 3 trays of muffins with 14 muffins on each tray. She gives 9 muffins to her neighbors."
    three, fourteen, nine = (q.index("3"), q.index("3") + 1), (q.index("14"), q.index("14") + 2), (q.index("9 m"), q.index("9 m") + 1)
    nodes = [  # as Solution.program has them: node 1 is dead (the answer does not read it)
        {"canonical": "n5 * n7", "operands": [{"text": "3", "span": three, "value": "3"},
                                              {"text": "14", "span": fourteen, "value": "14"}], "value": "42"},
        {"canonical": "n7 + 2", "operands": [{"text": "14", "span": fourteen, "value": "14"}, {"const": "2"}],
         "value": "16"},
        {"canonical": "r0 - n9", "operands": [{"node": 0}, {"text": "9", "span": nine, "value": "9"}], "value": "33"},
    ]
    program = student_program(_problem(q), nodes, ["T1", "T2", "T3"])
    assert program.source == "student" and program.pruned == 1 and len(program.nodes) == 2
    assert [n.canonical for n in program.nodes] == ["n0 * n1", "r0 - n2"]
    assert [n.template for n in program.nodes] == ["T1", "T3"]
    assert program.nodes[1].operands[0].node == 0 and program.answer_node == 1
    quantities = {name: p.value for name, p in program.quantities.items()}
    (values,) = execute([([n.canonical for n in program.nodes], quantities)])
    assert values == ["42", "33"] and matches_gold(values[-1], "33")
    # the verifier takes the most probable program whose value is the answer, and says its rank
    computed = [(None, nodes[:2], "16"), (None, nodes, "33")]
    assert first_correct(computed, "33") == (1, nodes) and first_correct(computed[:1], "33") is None


def test_the_stop_rule():
    r0 = {"round": 0, "val_accuracy": 0.10}
    assert decide([r0], rounds=0, min_gain=0.01) == (False, "0 round(s) done")
    assert decide([r0], rounds=2, min_gain=0.01) == (True, "")
    gained = {"round": 1, "val_accuracy": 0.13, "gain": 0.03}
    assert decide([r0, gained], rounds=2, min_gain=0.01)[0]
    flat = {"round": 1, "val_accuracy": 0.105, "gain": 0.005}
    go, why = decide([r0, flat], rounds=2, min_gain=0.01)
    assert not go and "less than the minimum 0.01" in why
    assert not decide([r0, {"round": 1, "students": {"kept": 0}}], rounds=2, min_gain=0.0)[0]  # nothing new
    assert not decide([r0, {**gained, "round": 2}], rounds=2, min_gain=0.0)[0]


def test_a_new_option_at_its_default_keeps_the_outputs_made_before_it_current():
    from mycelium.core.config import digest

    old = {k: v for k, v in LabelConfig().model_dump(mode="json", exclude={"progress"}).items() if k != "templates_run"}
    assert LabelConfig().hash() == digest({**old, "_class": "LabelConfig"})
    assert LabelConfig(templates_run="r").hash() != LabelConfig().hash()
    assert MergeConfig(round=1).hash() != MergeConfig().hash()


@pytest.fixture(scope="module")
def loop(tiny_teacher, tmp_path_factory):
    """A run of 12 sample problems and 2 whose reference solution computes nothing, labelled and merged."""
    from mycelium.core.config import AggregateConfig, CaptureConfig, DiscoverConfig, IngestConfig
    from mycelium.core.store import LocalStore
    from mycelium.stages.aggregate import AggregateStage
    from mycelium.stages.capture import run_capture
    from mycelium.stages.discover import DiscoverStage
    from mycelium.stages.label import LabelStage
    from mycelium.stages.merge import MergeStage
    from mycelium.stages.runner import run_stage

    tmp = tmp_path_factory.mktemp("loop")
    rows = [json.loads(line) for line in SAMPLE.read_text().splitlines()[:12]] + unlabelled_train_rows(2, 0.3)
    store = LocalStore(tmp / "store")
    run_capture(write_jsonl(tmp / "data.jsonl", rows), "l", store,
                CaptureConfig(n_computing_heads=2, calibration_problems=1, progress=False), IngestConfig(),
                teacher=tiny_teacher)
    analyze_run(store, "l")
    reduce_run(AggregateStage, store, "l", AggregateConfig())
    reduce_run(DiscoverStage, store, "l", DiscoverConfig(min_size=2))
    run_stage(LabelStage(store, "l", LabelConfig(progress=False)), progress=False)
    reduce_run(MergeStage, store, "l", MergeConfig(val_share=0.3))
    cfg = ImproveConfig(rounds=2, min_gain=0.0, mop_up_limit=1, mop_up_max_new_tokens=16, mop_up_batch=4, epochs=1,
                        batch_size=8, hidden=32, adapter_layers=1, part_size=4, progress=False)
    loop = Loop(store, "l", cfg, models_root=tmp_path_factory.mktemp("rounds"), teacher=tiny_teacher)
    return loop, loop.run()


def test_the_loop_runs_rounds_asks_the_teacher_only_about_failures_and_records_them(loop):
    loop, report = loop
    rows, n = report["rounds"], len(loop.problems)
    assert rows[0]["round"] == 0 and rows[0]["teacher_calls"] == n + len(loop.val) == 14
    assert report["teacher_calls"] == sum(r["teacher_calls"] for r in rows)
    assert report["teacher_calls_if_every_problem_every_round"] == 14 + 2 * n
    # two problems without a program and one teacher call a round: both rounds ask, so both train
    assert [r["round"] for r in rows] == [0, 1, 2] and report["stopped"] == "2 round(s) done"
    assert [r["teacher_calls"] for r in rows[1:]] == [1, 1] and all("val_accuracy" in r for r in rows)
    store = loop.store
    teacher_kept = {r.problem_id for r in map(lambda k: LabelRecord.model_validate_json(store.get(k)),
                                              store.list("l/labels/")) if r.kept}
    asked_before: set[str] = set()
    for row in rows[1:]:
        k = row["round"]
        asked = set(loop._mop_up_problems(k))
        assert len(asked) == row["mop_up"]["asked"] <= 1 and row["teacher_calls"] == len(asked)
        assert not asked & (teacher_kept | asked_before)  # only problems nothing had a program for, never twice
        assert asked <= set(loop.problems)  # never a val problem
        asked_before |= asked
        assert row["students"]["tried"] == n and row["students"]["failed"] == 0
        for key in store.list(f"l/rounds/r{k}/labels/"):
            rec = LabelRecord.model_validate_json(store.get(key))
            gold = loop.problem_by_id[rec.problem_id].answer
            if rec.kept:  # a student label is a program that executes to the dataset's answer
                p = rec.program
                (values,) = execute([([x.canonical for x in p.nodes], {q: v.value for q, v in p.quantities.items()})])
                assert matches_gold(values[-1], gold)
                lines = store.get(f"l/rounds/r{k}/examples/{rec.problem_id}.jsonl").decode().splitlines()
                exs = [Example.model_validate_json(x) for x in lines]
                assert {e.component for e in exs} == set(VERIFIED) and {e.provenance.source for e in exs} == {"student"}
            else:
                assert rec.reason == "no student program computes the answer"
    assert (loop.store.get(RunKeys("l")("rounds", "improve.png"))[:4] == b"\x89PNG")
    assert "| round | val accuracy |" in store.get("l/rounds/improve.md").decode()


def test_a_round_merge_takes_one_source_per_problem_and_keeps_val_the_teachers(loop):
    loop, report = loop
    k = max(r["round"] for r in report["rounds"] if "val_accuracy" in r)
    assert k == 2
    sources: dict[str, set] = {}
    for c in ("C1", "C2", "C3", "C4", "C5", "C6"):
        for split in ("train", "val"):
            for line in loop.store.get(f"l/rounds/r{k}/training/{c}/{split}.jsonl").decode().splitlines():
                e = json.loads(line)
                kind = "mop-up" if e["provenance"]["run"] != "l" else e["provenance"]["source"].replace("augmented", "teacher")
                sources.setdefault(e.get("parent_id") or e["problem_id"], set()).add(kind)
                if split == "val":
                    assert kind == "teacher"  # the loop never labels a val problem
    assert all(len(s) == 1 for s in sources.values())
    stats = loop.store.get_json(f"l/rounds/r{k}/training/stats.json")
    assert stats["round"] == k and sum(stats["problems_by_source"].values()) == len(sources)


def test_an_interrupted_loop_resumes_without_redoing_what_is_current(loop):
    loop, report = loop
    models = loop.models_root / "r0" / "C3" / "model.safetensors"
    before = models.stat().st_mtime_ns
    asked = {k: sorted(loop.store.list(f"l.mopup-r{k}/commits/capture/")) for k in (1, 2)}
    captured = {key: loop.store.get(key) for keys in asked.values() for key in keys}
    again = Loop(loop.store, "l", loop.cfg, models_root=loop.models_root, teacher=loop._teacher).run()
    assert models.stat().st_mtime_ns == before  # not retrained
    # the teacher was not asked again: the mop-up runs hold the same captures, made once
    assert {k: sorted(loop.store.list(f"l.mopup-r{k}/commits/capture/")) for k in (1, 2)} == asked
    assert all(loop.store.get(key) == blob for key, blob in captured.items()) and captured
    assert [r["val_accuracy"] for r in again["rounds"] if "val_accuracy" in r] == \
        [r["val_accuracy"] for r in report["rounds"] if "val_accuracy" in r]
    assert again["teacher_calls"] == report["teacher_calls"]  # nobody was asked twice


def test_a_round_s_verifier_learns_from_the_reader_s_beams_of_the_round_s_problems(loop, tiny_teacher, tmp_path):
    from fractions import Fraction as F

    from mycelium.programs.steps import Step, StepProgram, canonical
    from mycelium.stages.verifier_round import beams_part, round_beams, row, train_verifier
    from mycelium.students.reader_data import Labelled
    from mycelium.students.reader_train import TrainOptions, train

    loop, _ = loop
    programs = []
    for k in range(12):
        q = f"Ann has {3 + k} apples and buys {2 + k % 4} more. How many apples does she have?"
        programs.append(Labelled(f"a{k}", q, str(5 + k + k % 4), canonical(StepProgram(
            [Step("+", ("value", F(3 + k)), ("value", F(2 + k % 4)))], F(5 + k + k % 4)), q), "val" if k < 3 else "train"))
    train(programs, tiny_teacher, tmp_path / "reader", TrainOptions(epochs=1, batch_size=4, hidden=32, layers=[1, 3],
                                                                    min_constant_count=1, progress=False))
    cfg = loop.cfg.model_copy(update={"verifier": True, "reader": str(tmp_path / "reader"), "beam": 4,
                                      "verifier_epochs": 1})
    v = Loop(loop.store, "l", cfg, models_root=tmp_path / "rounds", teacher=tiny_teacher)
    for split in ("train", "val"):
        for i in v.parts(split):
            assert beams_part(v, 0, split, i)["beams"] == len(v.part(split, i))
            assert beams_part(v, 0, split, i)["beams"] == "already done"
    train_beams, val_beams = round_beams(v, 0, "train"), round_beams(v, 0, "val")
    assert set(train_beams) == set(v.problems) and set(val_beams) == set(v.val)
    assert all(r["split"] == "val" for r in val_beams.values())  # measured with their answers, never taught
    m = train_verifier(v, 0, tmp_path / "verifier")
    assert m["val"]["n"] == len(v.val) and m["train_beams"] == sum(bool(r["candidates"]) for r in train_beams.values())
    assert row(v, 0) is None  # not uploaded yet: the round's table has no verifier until the job uploads it
    for f in (tmp_path / "verifier").iterdir():
        v.store.put(v.keys.model("verifier", f.name, 0), f.read_bytes())
    assert row(v, 0)["n"] == len(v.val)
