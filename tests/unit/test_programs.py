"""Programs from hand-made steps: a kept one, each rejection reason, the examples, and augmentation."""

from fractions import Fraction
from types import SimpleNamespace

import numpy as np
import pytest

from mycelium.core.config import LabelConfig
from mycelium.programs.augment import shift_of, variants
from mycelium.programs.build import Rejected, build_program
from mycelium.programs.examples import answer_format, targets
from mycelium.records.analysis import Embedding, ExpressionRecord, MappedSpan, Operand, StepRecord
from mycelium.records.datasets import problem_id
from mycelium.records.problems import Problem, Source

Q = "Natalia sold 48 clips in April, and half as many clips in May. How many clips did she sell in all?"
SIGNALS = SimpleNamespace(heartbeats=2)
CFG = LabelConfig(progress=False)


def problem(answer="72", question=Q):
    return Problem(id=problem_id(question), question=question, answer=answer,
                   source=Source(file="train.jsonl", line=1, dataset="gsm8k"))


def text(number, question=Q, word=None):
    at = question.index(word or number)
    return Operand(text=number, source="word" if word else "text", span=(at, at + len(word or number)),
                   span_text=word or number)


def expr(text_, value, operands, ok=True, kind="annotation", labels=("mul",)):
    return ExpressionRecord(kind=kind, text=text_, char_start=0, char_end=len(text_), result_text=value, ok=ok,
                            sympy=text_, labels=list(labels), value=value if ok else None, operands=operands)


def step(index, *expressions, mapped=()):
    return StepRecord(problem_id=problem_id(Q), dataset="gsm8k", index=index, token_start=index, token_end=index + 1,
                      char_start=0, char_end=1, text="", expressions=list(expressions), labels=["mul"],
                      mapped_spans=[MappedSpan(start=s, end=e, text=Q[s:e], score=1.0) for s, e in mapped],
                      embedding=Embedding.from_array(np.zeros(4)))


def natalia_steps():
    half = expr("48/2", "24", [text("48"), text("2", word="half")], labels=("inverse", "mul"))
    total = expr("48+24", "72", [text("48"), Operand(text="24", source="step", step=0, expression=0)], labels=("add",))
    return [step(0, half, mapped=[(0, 30)]), step(1, total, mapped=[(31, 62)])]


def test_a_program_that_computes_the_answer_is_kept_with_typed_operands():
    p = build_program(problem(), natalia_steps(), SIGNALS, CFG)
    assert [n.canonical for n in p.nodes] == ["n0 / n1", "n0 + r0"]
    assert [n.value for n in p.nodes] == ["24", "72"] and p.answer_node == 1 and p.pruned == 0
    assert [o.ref for o in p.nodes[1].operands] == [f"text:{Q.index('48')}-{Q.index('48') + 2}", "node:0"]
    assert p.quantities["n1"].span_text == "half" and p.quantities["n1"].value == "2"
    for n in p.nodes:  # every pointer names the characters it reads
        for o in n.operands:
            if o.kind == "text":
                assert Q[o.span[0]:o.span[1]] == o.span_text
    assert p.read_spans == [(0, 30), (31, 62)] and p.heartbeats == 2


def reject(steps, answer="72", cfg=CFG):
    with pytest.raises(Rejected) as r:
        build_program(problem(answer), steps, SIGNALS, cfg)
    return r.value.reason


def test_each_rejection_reason_has_its_case():
    half, total = natalia_steps()[0].expressions[0], natalia_steps()[1].expressions[0]
    assert reject(natalia_steps(), answer=None) == "no gold answer"
    assert reject([step(0)]) == "no expressions"
    broken = expr("48/2", None, [], ok=False)
    assert reject([step(0, broken), step(1, total)]) == "a calculation does not compute"  # total reads it
    stray = expr("48*37", "1776", [text("48"), Operand(text="37", source="constant")])
    assert reject([step(0, stray)]) == "an operand is not grounded"
    integral = expr(r"\int_0^1 x\,dx", "1/2", [], kind="latex", labels=("integral",))
    assert reject([step(0, integral)], answer="1/2") == "a node is beyond the safe grammar"
    lies = expr("48/2", "25", [text("48"), text("2", word="half")])  # the CoT's value is not what it computes
    assert reject([step(0, lies)], answer="25") == "a calculation does not compute"
    assert reject(natalia_steps(), answer="24") == "answer computed but not at the sink"
    assert reject(natalia_steps(), answer="73") == "wrong final value"


def test_nodes_the_answer_does_not_read_are_pruned():
    side = expr("48*3", "144", [text("48"), Operand(text="3", source="constant")])
    half, total = natalia_steps()
    steps = [half, step(1, side), step(2, total.expressions[0])]  # total reads expression 0; the side one is 1
    p = build_program(problem(), steps, SIGNALS, CFG.model_copy(update={"constants": (3,)}))
    assert p.pruned == 1 and [n.canonical for n in p.nodes] == ["n0 / n1", "n0 + r0"]
    assert [n.step for n in p.nodes] == [0, 2]


def test_the_examples_of_a_program():
    t = targets(build_program(problem(), natalia_steps(), SIGNALS, CFG))
    assert t["C5"].edges == [(0, 1)] and t["C5"].order == [0, 1]
    assert t["C6"].format == "integer" and t["C6"].answer_node == 1
    assert t["C3"].nodes[1].operands[1] == "node:0" and t["C3"].quantities["n0"] == (13, 15)
    roles = {m.text: m.role for m in t["C4"].mentions}
    assert roles == {"48": "operand", "half": "operand"}
    assert [c.role for c in t["C4"].clauses][-1] == "question"
    assert t["C2"].heartbeats == 2 and sum(t["C2"].templates.values()) == 2


@pytest.mark.parametrize("answer, fmt", [("72", "integer"), ("-3", "integer"), ("2.5", "decimal"),
                                         (r"\frac{3}{4}", "fraction"), ("3/4", "fraction"), (r"2\sqrt{3}", "radical"),
                                         ("x^2+1", "expression"), ("(1,2)", "other"), ("1,200", "integer")])
def test_answer_formats(answer, fmt):
    assert answer_format(answer) == fmt


def test_augmentation_keeps_the_structure_and_moves_only_numbers():
    q = "A shop has 48 apples in 6 crates. It sells 2 crates. How many apples are left?"
    per = expr("48/6", "8", [text("48", q), text("6", q)], labels=("inverse", "mul"))
    sold = expr("8*2", "16", [Operand(text="8", source="step", step=0, expression=0), text("2", q)])
    left = expr("48-16", "32", [text("48", q), Operand(text="16", source="step", step=1, expression=1)],
                labels=("add", "neg"))
    p = build_program(problem("32", q), [step(0, per), step(1, sold), step(2, left)], SIGNALS, CFG)
    found, tried, rejected = variants(p, 10, 8, seed=1)
    assert found and tried >= len(found)
    for v in found:
        assert v.parent_id == p.problem_id and v.source == "augmented" and v.problem_id == problem_id(v.question)
        assert [n.canonical for n in v.nodes] == [n.canonical for n in p.nodes]
        assert [[o.kind for o in n.operands] for n in v.nodes] == [[o.kind for o in n.operands] for n in p.nodes]
        for n in v.nodes:
            for o in n.operands:
                if o.kind == "text":
                    assert v.question[o.span[0]:o.span[1]] == o.span_text == o.value
        per_crate = Fraction(v.nodes[0].value)
        assert per_crate.denominator == 1 and per_crate > 0  # the division still comes out even
        assert Fraction(v.answer) == Fraction(v.quantities["n0"].value) - per_crate * Fraction(v.quantities["n2"].value)
    assert sum(rejected.values()) + len(found) == tried


def test_a_word_number_and_an_ambiguous_number_are_not_resampled():
    p = build_program(problem(), natalia_steps(), SIGNALS, CFG)
    found, _, _ = variants(p, 3, 4)
    assert all("half" in v.question for v in found) and all("48" not in v.question for v in found)
    q = "Tom has 5 red and 5 blue pens. He buys 4 more red pens. How many red pens now?"
    add = expr("5+4", "9", [text("5", q), text("4", q)], labels=("add",))
    found, _, rejected = variants(build_program(problem("9", q), [step(0, add)], SIGNALS, CFG), 3, 4)
    assert all(v.question.count(" 5 ") == 2 for v in found)  # the 5 shared with "blue" stays


def test_shift_maps_offsets_through_rewritten_numbers():
    shift = shift_of([(10, 12, "1234"), (20, 21, "")])
    assert [shift(p) for p in (5, 10, 11, 12, 19, 20, 21, 30)] == [5, 10, 10, 14, 21, 22, 22, 31]


def test_a_division_inside_a_node_must_still_come_out_even():
    q = "A shop puts 48 apples into 6 crates. It sells 2 crates. How many apples does it sell?"
    node = expr("48/6*2", "16", [text("48", q), text("6", q), text("2", q)], labels=("inverse", "mul"))
    p = build_program(problem("16", q), [step(0, node)], SIGNALS, CFG)
    found, _, rejected = variants(p, 10, 8, seed=3)
    assert found and rejected["a division no longer comes out even"] > 0
    for v in found:
        n = {o.name: Fraction(o.value) for o in v.nodes[0].operands}
        assert (n["n0"] / n["n1"]).denominator == 1


def test_one_mention_read_two_ways_is_never_rewritten():
    q = "A coat costs 100 dollars with a 60% discount. A hat costs 50 dollars with the same discount. What is the total?"
    coat = expr("100*0.6", "60", [text("100", q), Operand(text="0.6", source="text", span=(q.index("60"), q.index("60") + 2),
                                                          span_text="60")])
    hat = expr("50*60/100", "30", [text("50", q), text("60", q), Operand(text="100", source="constant")])
    total = expr("60+30", "90", [Operand(text="60", source="step", step=0, expression=0),
                                 Operand(text="30", source="step", step=1, expression=1)], labels=("add",))
    p = build_program(problem("90", q), [step(0, coat), step(1, hat), step(2, total)], SIGNALS, CFG)
    assert len({o.name for n in p.nodes for o in n.operands if o.kind == "text" and o.span_text == "60"}) == 2
    found, _, _ = variants(p, 5, 20, seed=0)  # both 60% shares stay whole for one pair of prices in 25
    assert found and all("60% discount" in v.question for v in found)
    for v in found:  # what the program computes is what the rewritten text says
        coat_price, hat_price = (int(v.question.split(" costs ")[i].split()[0]) for i in (1, 2))
        assert Fraction(v.answer) == Fraction(coat_price * 6, 10) + Fraction(hat_price * 60, 100)


def test_no_variant_when_the_text_states_an_intermediate_result_or_a_computation_was_pruned():
    q = "Tom buys 3 packs of 4 pens, so he has 12 pens. He gives away 5. How many pens does he have?"
    packs = expr("3*4", "12", [text("3", q), text("4", q)])
    left = expr("12-5", "7", [Operand(text="12", source="step", step=0, expression=0), text("5", q)], labels=("add", "neg"))
    p = build_program(problem("7", q), [step(0, packs), step(1, left)], SIGNALS, CFG)
    assert variants(p, 3, 4) == ([], 0, {"the text states an intermediate result": 1})
    read12 = expr("12-5", "7", [text("12", q), text("5", q)], labels=("add", "neg"))
    p = build_program(problem("7", q), [step(0, packs), step(1, read12)], SIGNALS, CFG)
    assert p.pruned == 1 and variants(p, 3, 4) == ([], 0, {"the CoT computes what the program skips": 1})
