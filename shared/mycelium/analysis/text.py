"""Where things are in text: token ranges of character spans, and the text's own layout.

Token geometry comes from exact tokenizer offsets (never estimated from character ratios); layout is
lines, sentences, clauses and word starts.

>>> tokens_covering([(0, 3), (3, 4), (4, 9)], 2, 5)
(0, 3)
>>> [("Ann has 3 apples, and Bo has 2."[s:e]) for s, e in clause_spans("Ann has 3 apples, and Bo has 2.")]
['Ann has 3 apples,', 'and Bo has 2.']
"""

from __future__ import annotations

import re

import numpy as np

_SENTENCE_START = re.compile(r"(?:^|\n|(?<=[.!?])\s+)(?=\S)")


def tokens_covering(offsets: list[tuple[int, int]], start: int, end: int) -> tuple[int, int]:
    """Token range [i, j) of the tokens that overlap characters [start, end)."""
    if not offsets or end <= start:
        return 0, 0
    arr = np.asarray(offsets)
    i = int(np.searchsorted(arr[:, 1], start, side="right"))
    j = int(np.searchsorted(arr[:, 0], end, side="left"))
    return i, max(i, j)


def line_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of the non-empty lines of ``text`` (a worked solution's steps)."""
    return [(m.start(), m.end()) for m in re.finditer(r"[^\n]*\S[^\n]*", text)]


def sentence_starts(text: str) -> np.ndarray:
    """Character offsets where a sentence or a line begins (its first non-space character); 0 always."""
    return np.unique([0] + [m.end() for m in _SENTENCE_START.finditer(text)])


def word_starts(text: str, offsets: np.ndarray) -> np.ndarray:
    """[T] bool: token t begins a word (it starts the text, follows whitespace, or begins with it)."""
    space = np.zeros(len(text) + 1, dtype=bool)
    idx = [m.start() for m in re.finditer(r"\s", text)]
    space[idx] = True
    s = offsets[:, 0]
    return (s == 0) | space[np.maximum(s - 1, 0)] | space[s]


# Punctuation breaks a clause only when a space or the end follows: "$1,200" and "2.5" stay whole.
_CLAUSE_BREAK = re.compile(r"[.;:!?,](?:\s+|$)|\n+|\s+(?=(?:and|but|then|so|while|if|because|after|before|when|which)\b)",
                           re.IGNORECASE)


def clause_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of clauses: split at punctuation and at conjunctions, whitespace trimmed."""
    spans, start = [], 0
    for m in _CLAUSE_BREAK.finditer(text):
        if m.start() > start:
            spans.append((start, m.start() + (1 if text[m.start()] in ".;:!?," else 0)))
        start = m.end()
    if start < len(text):
        spans.append((start, len(text)))
    out = []
    for s, e in spans:
        seg = text[s:e]
        ls = len(seg) - len(seg.lstrip())
        rs = len(seg.rstrip())
        if rs > ls:
            out.append((s + ls, s + rs))
    return out
