"""Loaders: the three formats, stable ids, and a table of malformed rows."""

import json

import pytest

from mycelium.records.problems import Problem
from mycelium.records.datasets import problem_id, read_dataset
from mycelium.core.errors import BadRowError

from ..conftest import shared_data, write_jsonl

GOOD_GSM8K = {"question": "Ann has 3 apples and buys 4. How many now?", "answer": "3+4=<<3+4=7>>7\n#### 7"}


def test_gsm8k_row(tmp_path):
    (p,) = read_dataset(write_jsonl(tmp_path / "g.jsonl", [GOOD_GSM8K]))
    assert isinstance(p, Problem)
    assert p.answer == "7" and p.solution == "3+4=<<3+4=7>>7" and p.source.dataset == "gsm8k"
    assert p.source.line == 1 and p.id == problem_id(GOOD_GSM8K["question"])


def test_math_row_with_and_without_answer(tmp_path):
    rows = [
        {"problem": "What is $1+1$?", "solution": "It is $\\boxed{2}$.", "answer": "2", "subject": "Algebra", "level": 1},
        {"problem": "Find $x$ if $2x=\\frac{1}{2}$.", "solution": "So $x=\\boxed{\\frac{1}{4}}$.", "type": "Algebra",
         "level": "Level 3"},
    ]
    a, b = read_dataset(write_jsonl(tmp_path / "m.jsonl", rows))
    assert (a.answer, a.level, a.subject) == ("2", 1, "Algebra")
    assert (b.answer, b.level, b.subject) == ("\\frac{1}{4}", 3, "Algebra")


def test_plain_row_and_numeric_answer(tmp_path):
    (p,) = read_dataset(write_jsonl(tmp_path / "p.jsonl", [{"question": "2*3?", "answer": 6}]))
    assert p.answer == "6" and p.solution is None and p.source.dataset == "plain"


def test_ids_are_stable_content_hashes():
    assert problem_id("a  b\nc") == problem_id("a b c")
    assert problem_id("a b c") != problem_id("a b d")
    assert problem_id("x").startswith("p") and len(problem_id("x")) == 13


MALFORMED = [
    ("truncated json", b'{"question": "How many', "invalid JSON"),
    ("not an object", b"[1, 2, 3]", "JSON list"),
    ("missing answer", json.dumps({"question": "Q?"}).encode(), "field 'answer'"),
    ("question wrong type", json.dumps({"question": 5, "answer": "#### 5"}).encode(), "field 'question'"),
    ("empty question", json.dumps({"question": "  ", "answer": "1"}).encode(), "is empty"),
    ("gsm8k empty final", json.dumps({"question": "Q?", "answer": "2+2=4\n####  "}).encode(), "empty after '####'"),
    ("math without answer", json.dumps({"problem": "P?", "solution": "no box"}).encode(), "no 'answer'"),
    ("math bad level", json.dumps({"problem": "P?", "solution": "$\\boxed{1}$", "level": "hard"}).encode(), "level"),
    ("non-utf8", b'{"question": "caf\xe9?", "answer": "1"}', "not UTF-8"),
    ("gsm8k without ####", json.dumps({"question": "Q?", "answer": "2+2=<<2+2=4>>4\nSo 4."}).encode(), "has no '####"),
    ("plain empty answer", json.dumps({"question": "Q?", "answer": "  "}).encode(), "answer is empty"),
    ("plain NaN answer", b'{"question": "Q?", "answer": NaN}', "not a finite number"),
]


@pytest.mark.parametrize("name,raw,reason", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_rows_name_file_line_reason_and_reading_goes_on(tmp_path, name, raw, reason):
    path = write_jsonl(tmp_path / "bad.jsonl", [GOOD_GSM8K, raw, {"question": "Other?", "answer": "#### 1"}])
    items = list(read_dataset(path))
    assert [type(i).__name__ for i in items] == ["Problem", "BadRowError", "Problem"]
    err = items[1]
    assert err.file == str(path) and err.line == 2
    assert reason in err.reason, err.reason
    assert str(err).startswith(f"{path}:2: ")


def test_blank_lines_are_not_rows_but_line_numbers_stay_true(tmp_path):
    path = tmp_path / "b.jsonl"
    path.write_text("\n" + json.dumps(GOOD_GSM8K) + "\n\n{bad\n")
    good, bad = read_dataset(path)
    assert good.source.line == 2 and bad.line == 4


def test_over_long_problem_is_a_bad_row(tmp_path):
    path = write_jsonl(tmp_path / "l.jsonl", [GOOD_GSM8K, {"question": "word " * 50, "answer": "#### 1"}])
    items = list(read_dataset(path, token_counter=lambda s: len(s.split()), max_tokens=20))
    assert isinstance(items[0], Problem) and isinstance(items[1], BadRowError)
    assert "50 tokens, over the teacher's budget of 20" in items[1].reason


@pytest.mark.parametrize("parts,n,dataset", [(("gsm8k", "train.jsonl"), 7473, "gsm8k"),
                                             (("math", "train_pool.jsonl"), 911, "math"),
                                             (("math500", "test.jsonl"), 500, "math")])
def test_real_datasets_load_without_bad_rows(parts, n, dataset):
    items = list(read_dataset(shared_data(*parts)))
    assert len(items) == n
    assert all(isinstance(i, Problem) and i.source.dataset == dataset and i.answer for i in items)
