"""The label and merge stages on a tiny captured run: programs kept by execution, examples, no split leakage."""

import json
from collections import defaultdict
from fractions import Fraction

import pytest

from mycelium.cli import main
from mycelium.core.config import AggregateConfig, CaptureConfig, DiscoverConfig, IngestConfig, LabelConfig, MergeConfig
from mycelium.core.errors import RunNotFoundError
from mycelium.core.store import LocalStore
from mycelium.programs.build import matches_gold
from mycelium.records.programs import COMPONENTS, REASONS, Example, LabelRecord
from mycelium.stages.aggregate import AggregateStage
from mycelium.stages.capture import run_capture
from mycelium.stages.discover import DiscoverStage
from mycelium.stages.label import LabelStage
from mycelium.stages.merge import MergeStage, split_of
from mycelium.stages.runner import run_stage

from ..conftest import SAMPLE, analyze_run, reduce_run


@pytest.fixture(scope="module")
def labelled(tmp_path_factory, tiny_teacher):
    store = LocalStore(tmp_path_factory.mktemp("label") / "store")
    run_capture(SAMPLE, "l", store, CaptureConfig(n_computing_heads=2, calibration_problems=1, progress=False),
                IngestConfig(limit=16), teacher=tiny_teacher)
    analyze_run(store, "l")
    with pytest.raises(RunNotFoundError, match="mycelium discover"):  # no templates yet: nothing is labelled
        run_stage(LabelStage(store, "l", LabelConfig(progress=False)), progress=False)
    reduce_run(AggregateStage, store, "l", AggregateConfig())
    reduce_run(DiscoverStage, store, "l", DiscoverConfig(min_size=2))
    summary = run_stage(LabelStage(store, "l", LabelConfig(augment=3, progress=False)), progress=False, workers=2)
    reduce_run(MergeStage, store, "l", MergeConfig(val_share=0.3))
    return store, summary


def records(store):
    return [LabelRecord.model_validate_json(store.get(k)) for k in store.list("l/labels/")]


def test_every_problem_is_kept_or_rejected_with_a_known_reason(labelled):
    store, summary = labelled
    recs = records(store)
    assert len(recs) == summary.n_in == 16 and summary.failed == 0
    kept = [r for r in recs if r.kept]
    assert summary.counters["kept"] == len(kept) >= 8  # the bundled sample's annotated arithmetic is right
    assert all(r.reason in REASONS for r in recs if not r.kept)
    problems = {json.loads(line)["id"]: json.loads(line) for line in store.get("l/problems/part-00000.jsonl").decode().splitlines()}
    for r in kept:
        p = r.program
        assert matches_gold(p.nodes[p.answer_node].value, problems[r.problem_id]["answer"])
        assert all(n.template and n.template.startswith("T") for n in p.nodes)


def test_merge_splits_by_problem_and_a_variant_follows_its_parent(labelled):
    store, _ = labelled
    split_of_problem = defaultdict(set)
    counts = defaultdict(int)
    for c in COMPONENTS:
        for split in ("train", "val"):
            for line in store.get(f"l/training/{c}/{split}.jsonl").decode().splitlines():
                ex = json.loads(line)
                Example.model_validate({k: v for k, v in ex.items() if k != "split"})
                assert ex["split"] == split == split_of(ex["parent_id"] or ex["problem_id"], 0.3)
                split_of_problem[ex["parent_id"] or ex["problem_id"]].add(split)
                counts[(c, split, ex["provenance"]["source"])] += 1
                assert ex["provenance"]["lineage"]["label"] and ex["provenance"]["dataset_file"] == "sample_problems.jsonl"
    assert all(len(s) == 1 for s in split_of_problem.values())  # no problem (nor its variants) on both sides
    assert {"train", "val"} == set.union(*split_of_problem.values())
    stats = store.get_json("l/training/stats.json")
    assert stats["examples"] == {f"{c}/{s}/{src}": n for (c, s, src), n in sorted(counts.items())}
    assert any(src == "augmented" for (_, _, src) in counts)


def test_adding_data_never_moves_a_problem_across_the_split():
    ids = [f"p{i:012x}" for i in range(2000)]
    before = {i: split_of(i, 0.1) for i in ids[:1000]}
    assert all(split_of(i, 0.1) == s for i, s in before.items())  # the split reads the id alone
    assert 0.05 < sum(s == "val" for s in before.values()) / 1000 < 0.15


def test_rerun_skips_and_a_new_discover_makes_labels_stale(labelled, tmp_path):
    import shutil

    store = LocalStore(tmp_path / "copy")
    shutil.copytree(labelled[0].root, store.root)
    again = run_stage(LabelStage(store, "l", LabelConfig(augment=3, progress=False)), progress=False, workers=1)
    assert again.skipped == {"already done": 16}
    reduce_run(DiscoverStage, store, "l", DiscoverConfig(min_size=3))  # another operating point
    merged = reduce_run(MergeStage, store, "l", MergeConfig(val_share=0.3))
    assert merged.n_in == 0 and sum(merged.skipped.values()) == 16  # every label is now stale, none is merged


def test_cli_label_merge_and_show_the_program(labelled, capsys):
    store, _ = labelled
    assert main(["label", "--run", "l", "--store", str(store.root), "--no-progress", "--augment", "3"]) == 0
    assert main(["merge", "--run", "l", "--store", str(store.root), "--val-share", "0.3"]) == 0
    out = capsys.readouterr().out
    assert "programs that execute to the dataset's answer:" in out and "C3/train/teacher" in out
    kept = next(r for r in records(store) if r.kept)
    assert main(["show", kept.problem_id, "--run", "l", "--store", str(store.root)]) == 0
    assert "program: " in capsys.readouterr().out


def test_a_variant_with_another_problem_s_text_is_dropped(labelled, tmp_path):
    import shutil

    store = LocalStore(tmp_path / "copy")
    shutil.copytree(labelled[0].root, store.root)
    recs = [r for r in records(store) if r.kept and r.variants]
    twin = next(r for r in records(store) if r.kept and r.problem_id != recs[0].problem_id)
    key = f"l/examples/{recs[0].problem_id}.jsonl"  # make a variant's text that of another problem
    lines = [json.loads(x) for x in store.get(key).decode().splitlines()]
    victim = next(x["problem_id"] for x in lines if x["parent_id"])
    for x in lines:
        if x["problem_id"] == victim:
            x["problem_id"] = twin.problem_id
    from mycelium.core.lineage import read_commit
    from mycelium.core.keys import RunKeys
    from mycelium.core.store import json_bytes
    import hashlib

    body = "".join(json.dumps(x) + "\n" for x in lines).encode()
    store.put(key, body)
    commit = read_commit(store, RunKeys("l"), "label", recs[0].problem_id)
    commit.outputs[key] = hashlib.sha256(body).hexdigest()
    store.put(RunKeys("l").commit("label", recs[0].problem_id), json_bytes(commit.model_dump(mode="json")))
    before = store.get_json("l/training/stats.json")["problems"].get("variant examples dropped: another problem's text", 0)
    store.delete(RunKeys("l").commit("merge", "run"))  # merge again over the changed examples
    reduce_run(MergeStage, store, "l", MergeConfig(val_share=0.3))
    stats = store.get_json("l/training/stats.json")
    assert stats["problems"]["variant examples dropped: another problem's text"] == before + len(COMPONENTS)
    for c in COMPONENTS:
        for split in ("train", "val"):
            ids = [json.loads(x) for x in store.get(f"l/training/{c}/{split}.jsonl").decode().splitlines()]
            assert not [x for x in ids if x["problem_id"] == twin.problem_id and x["parent_id"]]


def test_every_kept_program_computes_its_answer_with_the_values_the_reader_reads(labelled):
    """The reader's targets keep the value the teacher read from each mention ("half" as 2 where the program
    divides by 2): every kept program and variant, as steps over the reader's candidates, computes its answer."""
    from mycelium.programs.steps import from_program
    from mycelium.students.reader import candidates, step_targets
    from mycelium.students.reader_train import fit_constants, run_programs, run_values

    store, _ = labelled
    programs, _ = run_programs(store, "l")
    kept = [r for r in records(store) if r.kept]
    assert len(programs) == len(kept) + sum(len(r.variants) for r in kept if split_of(r.problem_id, 0.1) == "train")
    constants = fit_constants(programs, 1)
    for p in programs:
        values = [c.value for c in candidates(p.question, constants)[0]]
        targets, chosen = step_targets(p.program, values)  # raises if an operand's value is no candidate's
        assert run_values(chosen, values) == p.program.answer
        assert matches_gold(str(p.program.answer), p.answer), p.id
    by_id = {r.problem_id: r for r in kept}
    for p in programs:  # the values are the teacher's: each leaf is a value some operand of the program read
        rec = by_id.get(p.id)
        if rec:
            read = {Fraction(o.value) for n in rec.program.nodes for o in n.operands}
            assert set(from_program(rec.program).leaves()) <= read | {Fraction(c) for c in constants}
