"""The reader: step programs (annotations, canonical order, set targets), the step decoder on constructed cases,
the beam's pruning rules, training that resumes, and `solve --data` over hostile rows."""

import hashlib
import json
import re
from fractions import Fraction as F

import numpy as np
import pytest
import torch

from mycelium.programs.steps import NotAProgram, Step, StepProgram, canonical, from_annotations
from mycelium.solver.beam import STEP_CHECKS, STOP_CHECKS, beam_search
from mycelium.students.encode import Encoded
from mycelium.students.reader import Reader, ReaderConfig, candidates, collate, make_item, step_targets
from mycelium.students.reader_train import (Labelled, TrainOptions, evaluate_items, greedy, run_values,
                                            train)

# ---- step programs ---------------------------------------------------------------------------------------

NATALIA = "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. " \
          "How many clips did Natalia sell altogether in April and May?"


def test_annotations_become_steps_that_read_earlier_results():
    p = from_annotations(NATALIA, "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
                                  "Natalia sold 48+24 = <<48+24=72>>72 clips altogether.\n#### 72")
    assert p.steps == [Step("/", ("value", F(48)), ("value", F(2))), Step("+", ("value", F(48)), ("result", 0))]
    assert p.values() == [F(24), F(72)] and p.answer == 72


def test_a_rounded_result_is_the_exact_one_and_unused_steps_are_pruned():
    q = "A pizza costs 100 dollars for 3 people and a drink 7. What does each pay for the pizza, times 3?"
    p = from_annotations(q, "<<100/3=33.33>>33.33 each. <<7+1=8>>8 unrelated. <<33.33*3=100>>100\n#### 100")
    assert [s.op for s in p.steps] == ["/", "*"] and p.values() == [F(100, 3), F(100)]
    assert p.steps[1] == Step("*", ("value", F(3)), ("result", 0))  # commutative: the written number first


@pytest.mark.parametrize("solution, reason", [
    ("no calculations here\n#### 5", "no annotations"),
    ("<<2**3=8>>8\n#### 8", "not binary arithmetic"),
    ("<<2+3=6>>6\n#### 6", "an annotation does not compute"),
    ("<<2+3=5>>5\n#### 7", "the answer is not computed"),
])
def test_each_reason_for_no_program(solution, reason):
    with pytest.raises(NotAProgram) as e:
        from_annotations("She has 2 cats and 3 dogs.", solution)
    assert e.value.reason == reason


def test_canonical_order_is_topological_by_text_position_and_sorts_commutative_operands():
    q = "A box has 6 rows of 7 cans. A crate holds 4 boxes. Tom gave away 5 cans. How many cans are left?"
    # written in another order: 4 * (7 * 6) first, then the subtraction
    p = StepProgram([Step("*", ("value", F(7)), ("value", F(6))), Step("*", ("value", F(4)), ("result", 0)),
                     Step("-", ("result", 1), ("value", F(5)))], F(163))
    c = canonical(p, q)
    assert c.steps[0] == Step("*", ("value", F(6)), ("value", F(7)))  # 6 is written before 7
    assert c.steps[1] == Step("*", ("value", F(4)), ("result", 0))
    assert c.steps[2] == Step("-", ("result", 1), ("value", F(5)))  # not commutative: the order stays
    assert c.values()[-1] == 163
    # two independent steps: the one whose numbers come first in the text goes first
    q2 = "Ann has 3 red and 4 blue pens; Bo has 10 pencils and 2 erasers. How many in all?"
    p2 = StepProgram([Step("+", ("value", F(10)), ("value", F(2))), Step("+", ("value", F(3)), ("value", F(4))),
                      Step("+", ("result", 0), ("result", 1))], F(19))
    assert canonical(p2, q2).steps[0] == Step("+", ("value", F(3)), ("value", F(4)))


def test_set_targets_count_every_candidate_of_the_right_value_and_one_order_of_a_commutative_pair():
    q = "Sam has 3 red balls and 3 blue balls and gets twice as many. How many?"
    values = [c.value for c in candidates(q, ["2"])[0]]
    prog = StepProgram([Step("+", ("value", F(3)), ("value", F(3))), Step("*", ("result", 0), ("value", F(2)))], F(12))
    targets, chosen = step_targets(prog, values)
    threes = [i for i, v in enumerate(values) if v == 3]
    twos = [i for i, v in enumerate(values) if v == 2]
    assert len(threes) == 2 and len(twos) == 2  # "twice" and the constant 2
    assert {(i, j) for _, i, j in targets[0]} == {(threes[0], threes[0]), (threes[0], threes[1]), (threes[1], threes[1])}
    r0 = len(values)
    assert {(i, j) for _, i, j in targets[1]} == {(min(t, r0), max(t, r0)) for t in twos}
    assert chosen[0] == targets[0][0]


def test_a_reading_other_than_the_digits_is_a_candidate():
    values = {c.value for c in candidates("a 20% tip on half the bill", [])[0]}
    assert {F(20), F(1, 5), F(1, 2), F(2)} <= values


# ---- the decoder on constructed cases ---------------------------------------------------------------------

CASES = [  # (question, steps as (op, a, b) with values or ("r", k)) : a result read later, a reversed op, a × b
    ("Ann has 5 apples and buys 3 more. Then she doubles them. How many apples?",
     [("+", F(5), F(3)), ("*", ("r", 0), F(2))]),
    ("Tom gave away 4 of his 20 cards. How many cards are left?", [("-", F(20), F(4))]),
    ("A box has 6 rows of 7 cans. How many cans?", [("*", F(7), F(6))]),
]


def _encode(text: str, L: int = 2, d: int = 16) -> Encoded:
    """Word tokens with a fixed random vector per word (the same word, the same vector)."""
    spans = [m.span() for m in re.finditer(r"\w+|[^\w\s]", text)]
    feats = np.stack([[np.random.default_rng(int(hashlib.sha256(f"{l}{text[s:e]}".encode()).hexdigest()[:8], 16))
                       .standard_normal(d) for l in range(L)] for s, e in spans]).astype(np.float16)
    return Encoded(np.arange(len(spans)), np.asarray(spans), feats)


def _program(steps) -> StepProgram:
    ref = lambda x: ("result", x[1]) if isinstance(x, tuple) else ("value", x)  # noqa: E731
    out = [Step(op, ref(a), ref(b)) for op, a, b in steps]
    return StepProgram(out, StepProgram(out, F(0)).values()[-1])


def _cfg(**kw) -> ReaderConfig:
    return ReaderConfig(**({"backbone": "words", "d_in": 16, "layers": [0, 1], "constants": ["100"],
                            "formats": ["integer", "other"], "hidden": 32, "pair": 32, "adapter_layers": 1,
                            "dropout": 0.0, "max_steps": 4, "max_tokens": 64} | kw))


def test_the_decoder_learns_constructed_programs_and_decodes_them_step_by_step():
    cfg = _cfg()
    items = [make_item(q, _encode(q), cfg, canonical(_program(s), q), "integer") for q, s in CASES]
    model = Reader(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(150):
        loss, _ = model.loss(collate(items, cfg))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    batch = collate(items, cfg)
    decoded = greedy(model, batch)
    for (q, steps), it, prog in zip(CASES, items, decoded):
        C = batch["n_cand"]
        pad = [c.value for c in it.cand] + [F(0)] * (C - len(it.cand))
        assert run_values(prog, pad) == _program(steps).values()[-1], q
    ann, tom, box = decoded
    C = batch["n_cand"]
    assert ann[1][1] == C or ann[1][2] == C  # step 1 reads step 0's result slot
    vals = lambda it: [c.value for c in it.cand]  # noqa: E731
    assert vals(items[1])[tom[0][1]] == 20 and vals(items[1])[tom[0][2]] == 4  # reversed: 20 - 4
    assert box[0][1] <= box[0][2]  # commutative: one order
    m = evaluate_items(model, items, ["16", "16", "42"])
    assert m["step_top1"] == 1.0 and m["exact_match"] == 1.0 and m["answer_accuracy"] == 1.0


# ---- the beam's rules ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, step, dropped", [
    ("divides by zero", ("/", F(3), F(0), None, []), True),
    ("divides by zero", ("/", F(3), F(2), F(3, 2), []), False),
    ("does not compute", ("*", F(10**10), F(10**10), None, []), True),
    ("repeats a step", ("+", F(1), F(2), F(3), [("+", F(1), F(2))]), True),
    ("multiplies or divides by one", ("*", F(5), F(1), F(5), []), True),
    ("adds or subtracts zero", ("-", F(5), F(0), F(5), []), True),
    ("adds or subtracts zero", ("-", F(0), F(5), F(-5), []), False),
])
def test_each_step_check(name, step, dropped):
    assert STEP_CHECKS[name](*step) is dropped


@pytest.mark.parametrize("name, args, dropped", [
    ("a result is unused", ("integer", [(0, 0, 1), (0, 0, 1)], 3, F(2)), True),
    ("a result is unused", ("integer", [(0, 0, 1), (0, 3, 1)], 3, F(2)), False),
    ("not a whole count", ("integer", [(3, 0, 1)], 3, F(7, 2)), True),
    ("not a whole count", ("other", [(3, 0, 1)], 3, F(7, 2)), False),
    ("a negative count", ("integer", [(1, 0, 1)], 3, F(-2)), True),
])
def test_each_stop_check(name, args, dropped):
    assert STOP_CHECKS[name](*args) is dropped


class _Scripted:
    """A stand-in reader whose scores are fixed: the beam alone is under test."""

    def __init__(self, prefs):
        self.cfg = _cfg(max_steps=2)
        self.prefs = prefs  # per step: {(op, i, j): logp}, STOP at -inf until the last

    def start(self, batch):
        return {"q": torch.zeros(1, 4), "k": 0, "C": 3, "x": torch.zeros(1, 1)}

    def format(self, q):
        return torch.tensor([[5.0, 0.0]])  # integer

    def scores(self, ctx):
        n = ctx["x"].shape[0]
        logp = torch.full((n, 5, 5, 4), float("-inf"))
        for (op, i, j), v in self.prefs[ctx["k"]].items():
            logp[:, i, j, op] = v
        stop = torch.full((n,), float("-inf") if ctx["k"] == 0 else 0.0)
        return logp, stop

    def advance(self, ctx, op, i, j, go=None):
        return ctx | {"k": ctx["k"] + 1}


def test_the_beam_drops_what_cannot_compute_and_keeps_the_best_program_that_does():
    # values 6, 0, 3: the likeliest step divides by zero, the next 6/4 is not whole at STOP, then 6 * 3
    model = _Scripted([{(3, 0, 1): -0.1, (2, 0, 2): -1.0, (3, 0, 2): -0.5}, {}, {}])
    res = beam_search(model, {}, [F(6), F(0), F(3)], None, width=3)
    assert res.pruned["divides by zero"] == 1 and res.fmt == "integer"
    assert [f.value for f in res.finished] == [F(2), F(18)]  # 6/3 = 2 is likelier; both compute
    model = _Scripted([{(3, 0, 1): -0.1, (3, 2, 0): -0.2, (2, 0, 2): -1.0}, {}, {}])
    res = beam_search(model, {}, [F(6), F(0), F(3)], None, width=3)
    assert res.pruned["not a whole count"] == 1 and [f.value for f in res.finished] == [F(18)]


# ---- training that resumes, and the solver over hostile rows -------------------------------------------------

def _labelled():
    rows = [("Ann has 5 apples and buys 3 more. How many apples?", [("+", F(5), F(3))]),
            ("Tom had 20 cards and gave away 4. How many are left?", [("-", F(20), F(4))]),
            ("A box has 6 rows of 7 cans. How many cans?", [("*", F(6), F(7))]),
            ("Sue read 12 pages on Monday and 9 on Tuesday. How many pages?", [("+", F(12), F(9))])]
    out = [Labelled(f"p{k:012x}", q, str(_program(s).values()[-1]), canonical(_program(s), q), "train")
           for k, (q, s) in enumerate(rows)]
    out[-1].split = "val"
    return out


def test_an_interrupted_training_resumes_from_its_checkpoint(tiny_teacher, tmp_path):
    opts = TrainOptions(epochs=1, batch_size=2, hidden=32, layers=[1, 3], min_constant_count=1, progress=False,
                        patience=10)
    first = train(_labelled(), tiny_teacher, tmp_path / "r", opts)
    assert (tmp_path / "r" / "checkpoint.pt").is_file() and len(first["curve"]) == 1
    opts.epochs = 3  # the run was cut off after epoch 1 of 3: it continues at epoch 2
    second = train(_labelled(), tiny_teacher, tmp_path / "r", opts)
    assert [c["epoch"] for c in second["curve"]] == [1, 2, 3]
    assert second["curve"][0] == first["curve"][0]
    assert second["curve"][2]["loss"] < second["curve"][0]["loss"]


def test_solve_data_over_hostile_rows_gives_one_result_or_one_named_error_per_row(tiny_teacher, tmp_path, capsys,
                                                                                monkeypatch):
    from mycelium.cli import main
    from mycelium.teacher import model as teacher_model

    train(_labelled(), tiny_teacher, tmp_path / "reader",
          TrainOptions(epochs=1, batch_size=2, hidden=32, layers=[1, 3], min_constant_count=1, progress=False))
    monkeypatch.setattr(teacher_model, "load_teacher", lambda *_a, **_k: tiny_teacher)
    rows = [{"question": "What is the colour of the sky?", "answer": "0"},
            {"question": "Add these up: " + " and ".join(str(i) for i in range(300)) + ".", "answer": "1"},
            {"question": "She walked " + "very " * 1500 + "far, 3 miles and then 4 more. How far?", "answer": "7"},
            {"question": f"A number is {'9' * 400}. Add 1 to it.", "answer": "1"},
            {"question": "Ann has 5 apples and buys 3 more. How many apples?", "answer": "8"}]
    data = tmp_path / "hostile.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows[:2]) + "\n{not json\n" +
                    json.dumps({"answer": "no question"}) + "\n" + "\n".join(json.dumps(r) for r in rows[2:]) + "\n")
    capsys.readouterr()
    rc = main(["solve", "--models", str(tmp_path / "reader"), "--data", str(data), "--json"])
    out, err = capsys.readouterr()
    results = [json.loads(line) for line in out.splitlines()]
    assert rc == 0 and len(results) == len(rows) and "Traceback" not in err
    assert all(("answer" in r and (r["answer"] is not None or r["reason"])) for r in results)
    assert results[0]["abstained"] and results[0]["reason"] == "no number in the problem"
    assert results[1]["trace"]["mentions_left_out"] > 0
    skipped = [line for line in err.splitlines() if line.startswith("skipped:")]
    assert len(skipped) == 2 and all("hostile.jsonl:" in line for line in skipped)
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (answered|abstained|failed|bad rows)", err.splitlines()[-1])}
    assert counts["answered"] + counts["abstained"] == 5 and counts["failed"] == 0 and counts["bad rows"] == 2


def test_a_problem_that_fails_is_a_named_abstention_and_the_next_one_is_solved():
    from mycelium.solver.solve import FAILED, Question, Solution, solve_safely

    class Fragile:
        def solve(self, q):
            if "boom" in q.text:
                raise IndexError("list index out of range")
            return Solution(id=q.id, answer="3", abstained=False, reason=None, confidence=1.0)

    bad, good = (solve_safely(Fragile(), Question(id=i, text=t)) for i, t in (("a", "boom 1"), ("b", "1 + 2")))
    assert bad.abstained and bad.reason == f"{FAILED}IndexError: list index out of range" and bad.id == "a"
    assert good.answer == "3"


def test_train_reader_on_a_dataset_s_annotations_writes_a_reader_that_solve_uses(tiny_teacher, tmp_path, capsys,
                                                                                 monkeypatch):
    from mycelium.cli import main
    from mycelium.teacher import model as teacher_model

    monkeypatch.setattr(teacher_model, "load_teacher", lambda *_a, **_k: tiny_teacher)
    rows = [{"question": f"Ann has {a} apples and buys {b} more. How many apples does she have?",
             "answer": f"She has {a}+{b} = <<{a}+{b}={a + b}>>{a + b} apples.\n#### {a + b}"}
            for a in range(3, 11) for b in range(2, 7)]
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "reader"
    assert main(["train-reader", "--data", str(data), "--out", str(out), "--work", str(tmp_path / "work"),
                 "--epochs", "1", "--val-share", "0.3", "--feature-cache", str(tmp_path / "cache"), "--no-progress"]) == 0
    assert {p.name for p in out.iterdir()} == {"model.safetensors", "config.json", "provenance.json", "metrics.json",
                                               "trained_on.txt", "curve.png"}
    assert (tmp_path / "work" / "checkpoint.pt").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train_programs"] + metrics["val_programs"] == len(rows) and metrics["val_programs"] > 0
    capsys.readouterr()
    assert main(["solve", "--models", str(out), "Ann has 4 apples and buys 3 more. How many apples?"]) == 0
    assert "answer" in capsys.readouterr().out


# ---- a backbone that learns: the top K layers trained with the reader ----------------------------------------

def test_the_untrained_top_gives_the_backbone_s_own_hidden_states(tiny_teacher):
    from mycelium.students.encode import frozen_features

    text = "Tom had 20 cards and gave away 4. How many are left?"
    full = frozen_features(tiny_teacher, [text], 0, progress=False, layers=(1, 2, 3))[text]
    cfg = ReaderConfig(backbone="b", d_in=32, layers=[1, 3], constants=[], formats=["integer"], hidden=16,
                       train_layers=2, depth=3)
    assert cfg.stored_layers() == [1]  # layer 3 is computed by the trained top from hidden state 1
    model = Reader(cfg, tiny_teacher.model).eval()
    item = make_item(text, Encoded(full.ids, full.offsets, full.features[:, :1]), cfg)
    with torch.no_grad():
        mixed = model.features(collate([item], cfg))[0]  # [T, 2, d]: hidden states 1 (stored) and 3 (the top's)
    assert torch.allclose(mixed[:, 1], torch.from_numpy(full.features[:, 2].astype(np.float32)), atol=2e-2)
    assert torch.equal(mixed[:, 0], torch.from_numpy(full.features[:, 0].astype(np.float32)))


@pytest.mark.parametrize("lora_rank", [0, 4])
def test_trained_top_layers_learn_save_load_and_resume(tiny_teacher, tmp_path, lora_rank):
    from safetensors.torch import load_file

    from mycelium.students.reader_train import load

    opts = TrainOptions(epochs=1, batch_size=2, hidden=32, layers=[1, 3], min_constant_count=1, progress=False,
                        patience=10, train_layers=1, lora_rank=lora_rank, top_lr=1e-2)
    first = train(_labelled(), tiny_teacher, tmp_path / "r", opts)
    opts.epochs = 2
    second = train(_labelled(), tiny_teacher, tmp_path / "r", opts)
    assert [c["epoch"] for c in second["curve"]] == [1, 2] and second["curve"][0] == first["curve"][0]
    saved = load_file(str(tmp_path / "r" / "model.safetensors"))
    top = {k: v for k, v in saved.items() if k.startswith("top.")}
    if lora_rank:  # the adapters alone: the frozen base weights are the backbone's, copied again on load
        assert top and all("lora_" in k for k in top)
    else:
        base = dict(tiny_teacher.model.get_decoder().layers[-1].named_parameters())
        assert not torch.allclose(top["top.0.mlp.down_proj.weight"].float(), base["mlp.down_proj.weight"].float())
    model = load(tmp_path / "r", tiny_teacher)
    assert model.cfg.train_layers == 1 and model.cfg.lora_rank == lora_rank


# ---- the reader's oracle ladder and attribution --------------------------------------------------------------

def test_the_ladder_s_operand_rung_decodes_the_gold_program_whatever_the_model_and_blame_names_the_error():
    from mycelium.evaluation.reader_ladder import RUNGS, blame, reader_ladder
    from mycelium.programs.steps import OPS

    cfg = _cfg()
    labelled = [Labelled(f"p{k}", q, str(_program(s).values()[-1]), canonical(_program(s), q), "test")
                for k, (q, s) in enumerate(CASES)]
    torch.manual_seed(0)
    res = reader_ladder(Reader(cfg), labelled, {q: _encode(q) for q, _ in CASES})  # untrained: random choices
    assert res["gold_programs"] == 3 and res["ladder"]["gold program"] == 1.0
    assert res["ladder"][RUNGS[-1]] == 1.0  # operations and problem values given: one wiring is left, and it is right
    assert sum(res["blame"].values()) == round(3 * (1 - res["ladder"]["reader"]))
    ann, tom = (make_item(q, _encode(q), cfg, canonical(_program(s), q)) for q, s in CASES[:2])
    val = lambda it, v: next(i for i, c in enumerate(it.cand) if c.value == v)  # noqa: E731
    W = len(tom.cand)
    sub, add = OPS.index("-"), OPS.index("+")
    assert blame(tom, [(add, val(tom, 4), val(tom, 20))], F(16), W) == "C2 operations"
    assert blame(tom, [(sub, val(tom, 20), val(tom, 100))], F(16), W) == "C3 operands"
    assert blame(tom, [], F(16), W) == "abstained"
    W = len(ann.cand)
    assert blame(ann, [(add, val(ann, 5), val(ann, 3))], F(16), W) == "C1/C6 step count"  # stopped at 8


def test_a_variant_re_samples_the_numbers_a_program_reads_and_recomputes_it():
    from mycelium.programs.augment import step_variants
    from mycelium.students.reader_train import augmented

    q = "Ann has 5 apples and buys 3 more. Then she doubles them. How many apples?"
    prog = canonical(_program(CASES[0][1]), q)
    out = step_variants(q, prog, 3, "0")
    assert len(out) == 3 and len({t for t, _ in out}) == 3
    for text, p in out:
        a, b = (F(n) for n in re.findall(r"\d+", text))
        assert "doubles" in text and p.answer == (a + b) * 2 and p.leaves()[:2] == [a, b]
    stated = "Ann has 5 apples and buys 3 more, so 8. Then she doubles them. How many apples?"
    assert step_variants(stated, canonical(_program(CASES[0][1]), stated), 3, "0") == []  # the text states 5 + 3
    twice = "Ann has 5 apples and Bob has 5 pears. Ann buys 3 more. How many apples?"
    single = canonical(_program([("+", F(5), F(3))]), twice)
    assert all("5 pears" in t and "Ann has 5 " in t for t, _ in step_variants(twice, single, 3, "0"))  # 5 is held twice
    lab = [Labelled("p1", q, "16", prog, "train")]
    assert [v.split for v in augmented(lab, 2)] == ["train", "train"] and augmented(lab, 2)[0].id != "p1"
