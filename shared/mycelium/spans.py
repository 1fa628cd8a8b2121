"""Character span <-> token range, from exact tokenizer offsets (never estimated).

>>> tokens_covering([(0, 3), (3, 4), (4, 9)], 2, 5)
(0, 3)
"""

from __future__ import annotations

import re

import numpy as np


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
