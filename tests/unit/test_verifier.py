"""The verifier and the reader's loop: pass@beam and the rankings counted on the same beams, a verifier that
learns to prefer the right candidate of constructed beams, set targets over a problem's right programs, and
the loop's labels (a second right program joins the teacher's; val and test are never labelled)."""

import hashlib
import json
import re
from fractions import Fraction as F

import numpy as np
import pytest
import torch

from mycelium.programs.steps import OPS, Step, StepProgram, canonical, from_slots, key
from mycelium.students.encode import Encoded
from mycelium.students.reader import candidates
from mycelium.students.reader_data import Labelled
from mycelium.students.verifier import FACTS, Verifier, VerifierConfig, collate, make_item
from mycelium.students.verifier_train import auc, choose, pass_at_beam, ranking_metrics, score


def _encode(text: str, d: int = 16) -> Encoded:
    """Word tokens with a fixed random vector per word, one layer."""
    spans = [m.span() for m in re.finditer(r"\w+|[^\w\s]", text)]
    feats = np.stack([[np.random.default_rng(int(hashlib.sha256(text[s:e].encode()).hexdigest()[:8], 16))
                       .standard_normal(d)] for s, e in spans]).astype(np.float16)
    return Encoded(np.arange(len(spans)), np.asarray(spans), feats)


def _cand(value, correct, logp=-1.0, mass=None, steps=((0, 0, 1),)):
    return {"value": str(value), "logp": logp, "mass": float(np.exp(logp)) if mass is None else mass,
            "steps": [list(s) for s in steps], "correct": correct}


# ---- counting --------------------------------------------------------------------------------------------------

def test_pass_at_beam_and_every_choice_are_counted_on_the_same_beams():
    records = [{"candidates": [_cand(1, False, -0.1), _cand(2, True, -0.9)]},   # right second
               {"candidates": [_cand(3, True, -0.2), _cand(4, False, -0.3)]},   # right first
               {"candidates": [_cand(5, False, -0.2)]},                          # none right
               {"candidates": []}]                                               # nothing finished
    scores = [[-2.0, 3.0], [0.5, 1.0], [0.0], []]
    m = ranking_metrics(records, scores)
    assert m["n"] == 4 and m["pass_at_beam"] == pass_at_beam(records) == 0.5
    assert m["top1_beam"] == 0.25  # problem 2 alone
    assert m["top1_verifier"] == 0.25  # problem 1 gained, problem 2 lost
    # weighted: mass x sigmoid(score); problem 1: 0.905*0.12 < 0.41*0.95 (right); problem 2: 0.82*0.62 < 0.74*0.73
    assert m["top1_weighted"] == 0.25
    assert choose(records[1]["candidates"], scores[1], "weighted") == 1 and choose([], [], "verifier") is None
    with pytest.raises(ValueError):
        choose(records[0]["candidates"], scores[0], "vote")


def test_auc_is_the_chance_a_right_candidate_outscores_a_wrong_one_with_ties_half():
    assert auc([3, 2, 1], [True, False, False]) == 1.0
    assert auc([1, 2, 3], [True, False, False]) == 0.0
    assert auc([1, 1], [True, False]) == 0.5
    assert auc([0.9, 0.1, 0.5, 0.5], [True, False, True, False]) == pytest.approx(0.875)
    assert auc([1, 2], [True, True]) is None


# ---- a verifier on constructed beams ---------------------------------------------------------------------------

def _beams(n: int, seed: int):
    """Two kinds of problem ('buys b more': a + b is right; 'gave away b': a - b is); the beam holds both
    candidates, the wrong one first half of the time, with the same scores either way."""
    rng = np.random.default_rng(seed)
    items, records = [], []
    for k in range(n):
        a, b = int(rng.integers(20, 90)), int(rng.integers(2, 19))
        gives = k % 2 == 0
        q = (f"Tom had {a} cards and gave away {b}. How many cards are left?" if gives else
             f"Ann has {a} apples and buys {b} more. How many apples?")
        values = [c.value for c in candidates(q, [])[0]]
        ia, ib = values.index(F(a)), values.index(F(b))
        plus = _cand(a + b, not gives, steps=[(OPS.index("+"), ia, ib)])
        minus = _cand(a - b, gives, steps=[(OPS.index("-"), ia, ib)])
        beam = [plus, minus] if (k // 2) % 2 == 0 else [minus, plus]
        beam[0]["logp"], beam[1]["logp"] = -0.5, -1.0
        beam[0]["mass"], beam[1]["mass"] = float(np.exp(-0.5)), float(np.exp(-1.0))
        items.append(make_item(q, _encode(q), beam, [], 3))
        records.append({"candidates": beam})
    return items, records


def test_a_verifier_trained_on_constructed_beams_prefers_the_right_candidate():
    torch.manual_seed(0)
    train_items, _ = _beams(48, 0)
    test_items, test_records = _beams(16, 1)
    f = np.array([x for it in train_items for x in it.facts])
    cfg = VerifierConfig(backbone="words", d_in=16, layers=[0], hidden=32, dropout=0.0, max_tokens=64,
                         mean=f.mean(0).tolist(), std=(f.std(0) + 1e-6).tolist())
    model = Verifier(cfg)
    before = ranking_metrics(test_records, score(model, test_items))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(60):
        for k in range(0, len(train_items), 16):
            loss = model.loss(collate(train_items[k:k + 16], cfg))
            opt.zero_grad()
            loss.backward()
            opt.step()
    after = ranking_metrics(test_records, score(model, test_items))
    assert after["top1_beam"] == before["top1_beam"] == 0.5  # the baseline: beam order, the same beams
    assert after["top1_verifier"] == 1.0 and after["auc"] == 1.0 and after["pass_at_beam"] == 1.0


def test_the_program_facts_see_mentions_left_out_and_the_value_s_shape():
    q = "Ann has 5 apples, 3 pears and 2 plums. How many apples and pears?"
    beam = [_cand(8, True, -0.5, steps=[(0, 0, 1)]), _cand(F(5, 2), False, -1.0, steps=[(3, 0, 2)])]
    item = make_item(q, _encode(q), beam, [], 1)
    facts = [dict(zip(FACTS, f)) for f in item.facts]
    assert facts[0]["share of mentions used"] == pytest.approx(2 / 3) and facts[0]["mentions left out"] == 1
    assert facts[0]["whole"] == 1 and facts[1]["whole"] == 0 and facts[1]["log p below the best"] == -0.5
    assert facts[0]["steps +"] == 1 and facts[1]["steps /"] == 1
    words = [q[s:e] for s, e in _encode(q).offsets]
    marked = {words[t] for t in np.nonzero(item.marks[0] == 1)[0]}
    left_out = {words[t] for t in np.nonzero(item.marks[0] == 2)[0]}
    assert marked == {"5", "3"} and left_out == {"2"}


# ---- programs from beams, set targets, the loop's labels ----------------------------------------------------------

def test_a_beam_s_slot_steps_become_a_canonical_program_and_equivalent_ones_share_a_key():
    q = "Ann has 5 apples and buys 3 more. Then she doubles them. How many apples?"
    values = [c.value for c in candidates(q, ["2"])[0]]
    i5, i3, i2 = values.index(F(5)), values.index(F(3)), len(values) - 1
    C = len(values)
    p = from_slots([(0, i3, i5), (2, C, i2)], values, q)  # (3 + 5) * 2, written the other way round
    # canonical: the written numbers in text order ("doubles" is a 2 in the text, before any result)
    assert p.steps == [Step("+", ("value", F(5)), ("value", F(3))), Step("*", ("value", F(2)), ("result", 0))]
    assert p.answer == 16 and key(p) == key(from_slots([(0, i5, i3), (2, i2, C)], values, q))
    assert key(p) != key(from_slots([(2, i5, i2), (0, C, i3), (0, C + 1, i3)], values, q))


def _teacher_program(q):
    return canonical(StepProgram([Step("+", ("value", F(5)), ("value", F(3)))], F(8)), q)


def test_the_loop_adds_a_second_right_program_for_a_problem_the_teacher_had_and_never_labels_val_or_test():
    from mycelium.stages.reader_loop import right_programs

    q = "Ann has 5 apples and buys 3 more, then gets 4 and gives 4 back. How many apples?"
    values = [c.value for c in candidates(q, [])[0]]
    i5, i3, i4 = values.index(F(5)), values.index(F(3)), values.index(F(4))
    C = len(values)
    labelled = {"t": Labelled("t", q, "8", _teacher_program(q), "train"),
                "v": Labelled("v", q, "8", _teacher_program(q), "val")}
    right = [(0, i3, i5)]  # the teacher's program (3 + 5): already in the set
    other = [(0, i5, i4), (0, C, i3), (1, C + 1, i4)]  # 5 + 4 + 3 - 4: another right program
    wrong = [(1, i5, i3)]
    beam = [_cand(8, True, steps=right), _cand(8, True, steps=other), _cand(2, False, steps=wrong)]
    meta = {"constants": [], "readings": 3}
    records = {"t": {"split": "train", "candidates": beam} | meta,
               "v": {"split": "val", "candidates": beam} | meta,        # a val problem: measured, never labelled
               "x": {"split": "test", "candidates": beam} | meta,       # not among the labelled train problems
               "v2": {"split": "train", "candidates": beam} | meta}     # a beam claiming train for an unknown id
    sets = right_programs(records, labelled)
    assert set(sets) == {"t"} and len(sets["t"]) == 1
    assert [s.op for s in sets["t"][0].steps] == ["+", "+", "-"] and sets["t"][0].answer == 8
    # the next round finds the same program again: nothing new
    assert right_programs(records, labelled, sets) == sets
    # a val problem's beam is not labelled even when its line says train
    records["v"]["split"] = "train"
    assert set(right_programs(records, labelled)) == {"t"}


def test_a_set_target_is_the_marginal_likelihood_of_a_problem_s_right_programs():
    from mycelium.students.reader import Reader, ReaderConfig, collate as rcollate, make_item as ritem

    cfg = ReaderConfig(backbone="words", d_in=16, layers=[0], constants=[], formats=["integer", "other"],
                       hidden=32, pair=32, adapter_layers=1, dropout=0.0, max_steps=4, max_tokens=64)
    q = "Ann has 5 apples and buys 3 more, then gets 4 and gives 4 back. How many apples?"
    enc = _encode(q)
    one = _teacher_program(q)
    two = canonical(StepProgram([Step("+", ("value", F(5)), ("value", F(4))), Step("+", ("result", 0), ("value", F(3))),
                                 Step("-", ("result", 1), ("value", F(4)))], F(8)), q)
    torch.manual_seed(0)
    model = Reader(cfg).eval()
    a, b = ritem(q, enc, cfg, one, "integer"), ritem(q, enc, cfg, two, "integer")
    la, _ = model.loss(rcollate([a], cfg))
    lb, _ = model.loss(rcollate([b], cfg))
    fmt = lambda x: x - 0.2 * torch.nn.functional.cross_entropy(  # noqa: E731 - the format head's share
        model.format(model.start(rcollate([a], cfg))["q"]), torch.tensor([0]))
    na, nb = fmt(la) * 2, fmt(lb) * 4  # −log p of each program (the loss is per step: 2 and 4 steps with STOP)
    a.group = b.group = "p"
    lg, _ = model.loss(rcollate([a, b], cfg))
    expected = -torch.logsumexp(torch.stack([-na, -nb]), 0) / 3  # over their mean number of steps
    assert float(fmt(lg)) == pytest.approx(float(expected), rel=1e-4)
    assert float(fmt(lg)) * 3 < min(float(na), float(nb))  # the set is likelier than either program


def test_a_group_s_items_stay_in_one_batch():
    import random

    from mycelium.students.reader_train import _batches

    class It:
        def __init__(self, g, t):
            self.group, self.features = g, [0] * t

    items = [It(f"g{k}", 5 + k % 3) for k in range(20) for _ in range(3)] + [It(None, 6) for _ in range(10)]
    batches = _batches(items, 4, random.Random(0))
    assert sum(map(len, batches)) == len(items)
    where = {}
    for n, b in enumerate(batches):
        for it in b:
            if it.group is not None:
                where.setdefault(it.group, set()).add(n)
    assert all(len(v) == 1 for v in where.values())


# ---- the loop end to end, on a tiny backbone -----------------------------------------------------------------------

def _problems(n: int):
    from mycelium.records.datasets import split_of

    rows = []
    for k in range(n):
        a, b = 3 + k % 9, 2 + k % 5
        q = f"Ann has {a} apples and buys {b} more. How many apples does she have?" if k % 2 else \
            f"Tom had {a + b} cards and gave away {b}. How many cards are left?"
        prog = StepProgram([Step("+", ("value", F(a)), ("value", F(b)))], F(a + b)) if k % 2 else \
            StepProgram([Step("-", ("value", F(a + b)), ("value", F(b)))], F(a))
        pid = f"p{k:04d}"
        rows.append(Labelled(pid, q, str(prog.answer), canonical(prog, q), split_of(pid, 0.25)))
    return rows


def test_the_reader_loop_runs_rounds_with_its_verifier_and_writes_the_table(tiny_teacher, tmp_path):
    from mycelium.solver.read import ReaderOptions, ReaderSolver
    from mycelium.solver.solve import Question
    from mycelium.stages.reader_loop import ReaderLoop, ReaderLoopConfig
    from mycelium.students.reader_train import TrainOptions, train

    labelled = _problems(40)
    assert {p.split for p in labelled} == {"train", "val"}
    start = tmp_path / "start"
    train(labelled, tiny_teacher, start, TrainOptions(epochs=1, batch_size=8, hidden=32, layers=[1, 3],
                                                      min_constant_count=1, progress=False))
    cfg = ReaderLoopConfig(rounds=1, min_gain=0.0, width=4, fold_epochs=1, epochs=1, verifier_epochs=1,
                           progress=False)
    loop = ReaderLoop(tmp_path / "loop", start, labelled, tiny_teacher, cfg)
    rows = loop.run()
    assert [r["round"] for r in rows][:1] == [0] and len(rows) in (1, 2)
    for name in ("rounds.json", "rounds.md", "rounds.png", "best.json"):
        assert (tmp_path / "loop" / name).is_file()
    r0 = rows[0]
    assert r0["val_n"] == sum(p.split == "val" for p in labelled)
    assert r0["train_beams"] == sum(p.split == "train" for p in labelled)
    assert 0 <= r0["val_reader"] <= r0["val_pass_at_beam"] and r0["val_verifier"] <= r0["val_pass_at_beam"]
    # every beam line that teaches is a train problem's, beamed by the fold reader that did not train on it
    from mycelium.stages.reader_loop import fold_of
    from mycelium.solver.beams import read_beams, reader_digest

    for j in (0, 1):
        path = tmp_path / "loop" / "r0" / "beams-train" / f"beams-{reader_digest(tmp_path / 'loop' / 'r0' / f'fold{j}')}.jsonl"
        lines = read_beams(path)
        assert lines and all(r["split"] == "train" and fold_of(pid) != j for pid, r in lines.items())
    programs = [json.loads(line) for line in (tmp_path / "loop" / "r0" / "programs.jsonl").read_text().splitlines()]
    assert all(dict((p.id, p.split) for p in labelled)[r["id"]] == "train" for r in programs)
    # a solver over the round's reader finds the verifier beside it and records every choice from one beam
    solver = ReaderSolver(tmp_path / "loop" / "r0" / "reader", tiny_teacher, ReaderOptions(width=4))
    assert solver.verifier is not None
    sol = solver.solve(Question(id="q", text="Ann has 4 apples and buys 3 more. How many apples does she have?"))
    if not sol.abstained:
        assert set(sol.trace["choice"]) == {"beam", "verifier", "weighted", "by"}
        assert all("verifier" in b for b in sol.trace["beam"])
    # resumable: a second run reads every row back and trains nothing
    mtime = (tmp_path / "loop" / "r0" / "verifier" / "model.safetensors").stat().st_mtime_ns
    assert loop.run() == rows
    assert (tmp_path / "loop" / "r0" / "verifier" / "model.safetensors").stat().st_mtime_ns == mtime
