"""Finding a CoT's arithmetic, number words and clause spans in problem text."""

from fractions import Fraction

import pytest

from mycelium.mathlang.expressions import find_expressions, label_expressions
from mycelium.analysis.numwords import mentions
from mycelium.analysis.text import clause_spans


def test_gsm8k_annotations_and_their_echo_are_one_computation():
    cot = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nShe sold 48+24 = <<48+24=72>>72 in all."
    found = find_expressions(cot)
    assert [(f.kind, f.text, f.result_text) for f in found] == [("annotation", "48/2", "24"), ("annotation", "48+24", "72")]
    assert cot[found[0].start:found[0].end] == "<<48/2=24>>"


def test_inline_arithmetic_with_dollars_commas_and_x():
    cot = "Weng earns 12/60 = $0.2 per minute. Working 50 minutes, she earned 0.2 x 50 = $10. Then 1,200 - 200 = 1,000."
    found = find_expressions(cot)
    assert [(f.kind, f.text, f.result_text) for f in found] == [
        ("inline", "12/60", "0.2"), ("inline", "0.2 x 50", "10"), ("inline", "1,200 - 200", "1000")]
    assert [l.value for l in label_expressions(found)] == ["1/5", "10", "1000"]


def test_words_with_x_are_not_multiplication():
    assert find_expressions("She had 6 boxes = 6 things and 3 xylophones.") == []


def test_latex_equations_in_math_solutions():
    cot = r"We have $2x+3=11$, so $x=4$. Then $$\frac{8}{2}\cdot 3 = 12.$$ Finally \[\sqrt{16}=4\]."
    found = find_expressions(cot)
    assert [f.kind for f in found] == ["latex", "latex", "latex"]
    labelled = label_expressions(found)
    assert labelled[0].ok and "add" in labelled[0].labels
    assert labelled[0].labels == ("add", "mul") and labelled[0].sympy == "2*x + 3" and found[0].result_text == "11"
    # "12." ends the sentence: not a plain number, so no stated result; the value is still computed
    assert labelled[1].ok and labelled[1].value == "12" and found[1].result_text is None
    assert labelled[2].labels == ("sqrt",) and labelled[2].value == "4"


def test_unparseable_latex_is_kept_with_a_reason():
    (found,) = find_expressions(r"So $\frac{1}{2} + \unknownmacro{3}$ holds.")
    (lab,) = label_expressions([found])
    assert not lab.ok and lab.reason


@pytest.mark.parametrize("text,expected", [
    ("She sold half as many", [("half", {Fraction(1, 2), 2})]),
    ("twice as much", [("twice", {2})]),
    ("a dozen eggs", [("dozen", {12})]),
    ("three fifths of them", [("three fifths", {Fraction(3, 5), 3, 5})]),
    ("triple the price", [("triple", {3})]),
    ("twenty-five apples and 1,200 pears", [("twenty-five", {25}), ("1,200", {1200})]),
    ("half a dozen", [("half a dozen", {6})]),
    ("a quarter of 60%", [("quarter", {Fraction(1, 4), 4}), ("60", {60, Fraction(3, 5)})]),
    ("on the fourth day", []),
    ("3.5 hours", [("3.5", {Fraction(7, 2)})]),
])
def test_number_mentions(text, expected):
    got = [(m.text, set(m.values)) for m in mentions(text)]
    assert got == [(t, set(map(Fraction, v))) for t, v in expected]
    for m in mentions(text):
        assert text[m.start:m.end] == m.text


def test_clause_spans_split_at_punctuation_and_conjunctions():
    t = "Betty has half of the money. Her parents gave her $15, and her grandparents twice as much. How much more?"
    assert [t[s:e] for s, e in clause_spans(t)] == [
        "Betty has half of the money.", "Her parents gave her $15,", "and her grandparents twice as much.", "How much more?"]


def test_latex_keeps_the_operations_as_written():
    found = find_expressions(r"So $\frac{48}{2} = 24$ and $5-3=2$ and $\sqrt[3]{27}+2\cdot 4=11$ and $\binom{5}{2}=10$.")
    got = [(l.labels, l.value, l.numbers) for l in label_expressions(found)]
    assert got == [(("inverse", "mul"), "24", ("48", "2")), (("add", "neg"), "2", ("5", "3")),
                   (("add", "frac_pow", "inverse", "mul"), "11", ("27", "1", "3", "2", "4")),
                   (("binomial",), "10", ("5", "2"))]


def test_long_sums_without_a_result_do_not_backtrack():
    import time

    line = " + ".join(str(i) for i in range(3, 400)) + " apples"
    t0 = time.perf_counter()
    assert find_expressions(line + " = 7 =\n" + line) == []
    assert time.perf_counter() - t0 < 0.5


@pytest.mark.parametrize("cot,expected", [
    ("x = 1.5 + 2 = 3.5", [("1.5 + 2", "3.5")]),
    ("So 1/2 * 1/2 = 1/4 of it.", [("1/2 * 1/2", "1/4")]),
    ("( 3 + 4 ) * 2 = 14", [("( 3 + 4 ) * 2", "14")]),
    ("and 5 + 3 = 1.5 + 2 more", []),
])
def test_inline_results(cot, expected):
    assert [(f.text, f.result_text) for f in find_expressions(cot)] == expected


def test_clauses_do_not_split_numbers():
    t = "It costs $1,200. She pays 2.5 times, and more."
    assert [t[s:e] for s, e in clause_spans(t)] == ["It costs $1,200.", "She pays 2.5 times,", "and more."]
