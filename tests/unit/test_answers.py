"""Answer extraction, math-verify grading and the sandbox it runs in."""

import time

import pytest

from mycelium.mathlang.answers import extract_answer, grade, last_boxed
from mycelium.core.sandbox import run_sandboxed


@pytest.mark.parametrize("cot,expected", [
    ("So the total is \\boxed{42}.", "42"),
    ("first \\boxed{1} then \\boxed{\\frac{3}{4}}", "\\frac{3}{4}"),
    ("48/2 = <<48/2=24>>24 clips\n#### 1,024", "1024"),
    ("The answer is $5.50.", "5.50"),
    ("She has 3 apples, then 7 apples.", "7"),
    ("no numbers here", None),
    ("unbalanced \\boxed{3", "3"),  # falls back to the last number, never to a half-parsed box
])
def test_extract_answer(cot, expected):
    assert extract_answer(cot) == expected


def test_last_boxed_matches_braces():
    assert last_boxed("x \\boxed{\\sqrt{2}+{1}} y") == "\\sqrt{2}+{1}"
    assert last_boxed("nothing") is None


@pytest.mark.parametrize("gold,pred,correct", [
    ("72", "72", True),
    ("72", "72.0", True),
    ("0.5", "\\frac{1}{2}", True),
    ("\\frac{1}{4}", "0.25", True),
    ("\\sqrt{2}", "\\sqrt{2}", True),
    ("72", "73", False),
    ("10", None, False),
])
def test_grade_with_math_verify(gold, pred, correct):
    assert grade(gold, pred)[0] is correct


def test_grade_without_gold_is_unknown():
    assert grade(None, "3") == (None, "no gold answer")


def _spin():
    while True:
        pass


def _alloc():
    return len(bytearray(4 * 2**30))


def test_sandbox_returns_values_and_errors():
    assert run_sandboxed(divmod, 7, 2).value == (3, 1)
    r = run_sandboxed(divmod, 1, 0)
    assert not r.ok and "ZeroDivisionError" in r.error


def test_sandbox_stops_runaway_code_within_its_limit():
    t0 = time.perf_counter()
    r = run_sandboxed(_spin, timeout_s=1.0)
    assert not r.ok and time.perf_counter() - t0 < 5
    r = run_sandboxed(_alloc, mem_mb=256)
    assert not r.ok and "memory" in r.error


def test_a_list_is_not_a_number_with_thousands_separators():
    from mycelium.mathlang.answers import grade, plain_answer

    assert plain_answer("1,000") == "1000" and plain_answer("1,-2") is None
    assert grade("1,200", "1200") == (True, None)
    assert grade("1,-2", "1-2")[0] is not True  # not the same answer once the comma is dropped
