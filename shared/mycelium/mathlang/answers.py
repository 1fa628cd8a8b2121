"""Final-answer extraction from a chain of thought, and grading with math-verify.

Grading runs in a sandboxed subprocess (math-verify's own signal timeout is off;
the process timeout is on), so a pathological answer cannot hang a stage.

>>> extract_answer("so 3 + 4 = 7. The answer is \\\\boxed{7}.")
'7'
>>> extract_answer("48/2 = 24 ...\\n#### 72")
'72'
"""

from __future__ import annotations

import re

from ..core.sandbox import run_sandboxed

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")
_HASHES = re.compile(r"####\s*([^\n]+)")
_ANSWER_IS = re.compile(r"answer is[:\s]*([^\n]+)", re.IGNORECASE)


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``), braces matched."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start) + 1
    depth = 1
    for j in range(i, len(text)):
        c = text[j]
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return text[i:j].strip()
    return None  # unbalanced: no answer rather than a wrong one


_LATEX_NOISE = re.compile(r"\\text\{[^{}]*\}|\\mbox\{[^{}]*\}|\^\{?\\circ\}?|\\[!,;% ]|\{,\}|\\\$|\$|%")


def clean_number(s: str) -> str:
    """A number as text without what only typesets it: "$1,200." -> "1200"; "\\$18.90" -> "18.90"; "10{,}000"
    -> "10000"; "5\\%" -> "5"; "90^\\circ" -> "90"; "12\\text{ cm}" -> "12"."""
    return _LATEX_NOISE.sub("", s).replace(",", "").strip().rstrip(".")


_THOUSANDS = re.compile(r"[^,]*\d{1,3}(?:,\d{3})+(?:\.\d+)?[^,]*")


def plain_answer(text: str) -> str | None:
    """The answer without typesetting (``clean_number``), or None when its commas are not thousands separators
    (``1,-2`` is a list of two answers, not -1)."""
    t = text.replace("{,}", ",")
    if "," in t and not _THOUSANDS.fullmatch(t):
        return None
    return clean_number(t)


def extract_answer(cot: str) -> str | None:
    """The CoT's final answer: last \\boxed{}, else '#### x', else 'answer is x', else last number."""
    boxed = last_boxed(cot)
    if boxed:
        return boxed
    m = _HASHES.findall(cot)
    if m:
        return clean_number(m[-1])
    m = _ANSWER_IS.findall(cot)
    if m:
        nums = _NUMBER.findall(m[-1])
        return clean_number(nums[0]) if nums else m[-1].strip()
    nums = _NUMBER.findall(cot)
    return clean_number(nums[-1]) if nums else None


def verify_equal(gold: str, pred: str) -> bool:
    """math-verify: gold parsed first, its own timeout off (call it in the sandbox: the process timeout is on)."""
    import logging

    from math_verify import parse, verify

    logging.getLogger("math_verify").setLevel(logging.ERROR)  # "timeout disabled": the sandbox is the timeout
    from math_verify.parser import ExprExtractionConfig, LatexExtractionConfig

    configs = [LatexExtractionConfig(), ExprExtractionConfig()]
    wrap = lambda s: s if re.search(r"(?<!\\)\$", s) or "\\" not in s else f"${s}$"  # noqa: E731 - unescaped $
    g = parse(wrap(gold), extraction_config=configs, parsing_timeout=None)
    p = parse(wrap(pred), extraction_config=configs, parsing_timeout=None)
    return bool(g and p and verify(g, p, timeout_seconds=None))


def grade(gold: str | None, pred: str | None, timeout_s: float = 5.0) -> tuple[bool | None, str | None]:
    """(correct, note). ``None`` when there is no gold or no prediction, or grading failed."""
    if gold is None:
        return None, "no gold answer"
    if pred is None:
        return False, "no answer in CoT"
    if plain_answer(gold) is not None and plain_answer(gold) == plain_answer(pred):
        return True, None
    result = run_sandboxed(verify_equal, gold, pred, timeout_s=timeout_s)
    if not result.ok:
        return None, f"grading failed: {result.error}"
    return result.value, None
