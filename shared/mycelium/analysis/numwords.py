"""Numbers in problem text: digits and words ("half", "twice", "a dozen", "three fifths").

Each mention is a character span with the set of values an operand grounded
there may take: "half" can be 1/2 or the divisor 2; "three fifths" is 3/5 (or
its parts 3 and 5); "twice" is 2; "a dozen" is 12.

>>> sorted(str(v) for m in mentions("She sold half as many") for v in m.values)
['1/2', '2']
>>> [(m.text, sorted(map(str, m.values))) for m in mentions("three fifths of 1,200 and two dozen")]
[('three fifths', ['3', '3/5', '5']), ('1,200', ['1200']), ('two dozen', ['24'])]
>>> sorted(str(v) for m in mentions("a 60% discount") for v in m.values)
['3/5', '60']
>>> [(m.text, sorted(map(str, m.values))) for m in mentions("$.25 an ounce, 50 cents a cup")]
[('.25', ['1/4']), ('50', ['1/2', '50'])]
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

UNITS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen".split())}
TENS = {w: 10 * i for i, w in enumerate("_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()) if i >= 2}
SCALES = {"hundred": 100, "thousand": 1000, "million": 10**6}
ORDINALS = {"half": 2, "halves": 2, "third": 3, "thirds": 3, "quarter": 4, "quarters": 4, "fourth": 4, "fourths": 4,
            "fifth": 5, "fifths": 5, "sixth": 6, "sixths": 6, "seventh": 7, "sevenths": 7, "eighth": 8, "eighths": 8,
            "ninth": 9, "ninths": 9, "tenth": 10, "tenths": 10}
MULTIPLIERS = {"twice": 2, "double": 2, "doubled": 2, "doubles": 2, "triple": 3, "tripled": 3, "triples": 3,
               "thrice": 3, "quadruple": 4, "quadrupled": 4, "pair": 2, "pairs": 2, "dozen": 12, "dozens": 12}

# 1,200.5 | 3.5 | .25 (as in "$.25")
_DIGITS = re.compile(r"(?<![\w.])\d{1,3}(?:,\d{3})+(?:\.\d+)?|(?<![\w.,])\d+(?:\.\d+)?|(?<![\w.,])\.\d+")
_WORD = re.compile(r"[A-Za-z]+")
_HUNDREDTHS = re.compile(r"\s*(%|percent\b|per cent\b|cents?\b)", re.IGNORECASE)


@dataclass(frozen=True)
class Mention:
    start: int
    end: int
    text: str
    values: frozenset[Fraction]

    @property
    def literal(self) -> Fraction:
        """The value as written ("60" of "60%"), else the smallest reading ("three fifths": 3/5)."""
        try:
            return Fraction(self.text.replace(",", ""))
        except (ValueError, ZeroDivisionError):
            return min(self.values)


def _cardinal(words: list[str]) -> tuple[int, int] | None:
    """Value and length of the number-word phrase at the start of ``words`` ("twenty five", "three hundred")."""
    total, current, used = 0, 0, 0
    for w in words:
        if w in UNITS:
            current += UNITS[w]
        elif w in TENS:
            current += TENS[w]
        elif w in SCALES and used:
            current = max(current, 1) * SCALES[w]
            if SCALES[w] >= 1000:
                total, current = total + current, 0
        else:
            break
        used += 1
    return (total + current, used) if used else None


def mentions(text: str) -> list[Mention]:
    """Every number mention in ``text``, in order."""
    out = []
    for m in _DIGITS.finditer(text):
        v = Fraction(m.group().replace(",", ""))
        # "60%" or "60 percent" is also the rate 0.6 that a calculation multiplies by; "50 cents" is also $0.50
        rate = _HUNDREDTHS.match(text, m.end()) is not None
        out.append(Mention(m.start(), m.end(), m.group(), frozenset({v, v / 100} if rate else {v})))
    words = [(m.start(), m.end(), m.group().lower()) for m in _WORD.finditer(text.replace("-", " "))]
    out = [*out]
    wout: list[Mention] = []
    i = 0
    while i < len(words):
        s, e, w = words[i]
        rest = [x[2] for x in words[i:i + 6]]
        card = _cardinal(rest)
        if card:
            value, n = card
            nxt = words[i + n][2] if i + n < len(words) else None
            if nxt in ORDINALS and value < ORDINALS[nxt] * 10:  # "three fifths"
                d = ORDINALS[nxt]
                wout.append(Mention(s, words[i + n][1], text[s:words[i + n][1]],
                                    frozenset({Fraction(value, d), Fraction(value), Fraction(d)})))
                i += n + 1
                continue
            if nxt in ("dozen", "dozens"):
                wout.append(Mention(s, words[i + n][1], text[s:words[i + n][1]], frozenset({Fraction(value * 12)})))
                i += n + 1
                continue
            end = words[i + n - 1][1]
            wout.append(Mention(s, end, text[s:end], frozenset({Fraction(value)})))
            i += n
            continue
        prev = words[i - 1][2] if i > 0 else None
        # "half", "a third", "one quarter" are fractions; "the fourth day" is an ordinal, not a number
        if w in ORDINALS and (w in ("half", "halves", "third", "thirds", "quarter", "quarters") or prev in ("a", "one")):
            d = ORDINALS[w]
            wout.append(Mention(s, e, text[s:e], frozenset({Fraction(1, d), Fraction(d)})))
        elif w in MULTIPLIERS:
            if w == "dozen" and prev == "a" and i > 1 and words[i - 2][2] == "half" and wout and wout[-1].text.lower() == "half":
                wout[-1] = Mention(words[i - 2][0], e, text[words[i - 2][0]:e], frozenset({Fraction(6)}))
            else:
                wout.append(Mention(s, e, text[s:e], frozenset({Fraction(MULTIPLIERS[w])})))
        elif w in ("percent", "percentage"):
            wout.append(Mention(s, e, text[s:e], frozenset({Fraction(100)})))
        i += 1
    return sorted(out + wout, key=lambda m: m.start)
