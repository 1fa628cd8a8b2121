"""Rewrite simple LaTeX arithmetic into the safe grammar's plain syntax.

``\\frac{48}{2} \\cdot 3`` -> ``((48)/(2))*3``. The result goes through
:func:`mycelium.mathlang.safe_math.parse`, so the tree keeps the operations as written
(latex2sympy evaluates numbers: ``\\frac{48}{2}`` would become ``24`` with no
division left). Anything this does not know raises ParseError, and the caller
falls back to the LaTeX grammar parser.

>>> latex_to_plain(r"\\frac{48}{2}\\cdot 3")
'((48)/(2))*3'
>>> latex_to_plain(r"2x+\\sqrt{16}")
'2*x+sqrt(16)'
>>> latex_to_plain(r"\\boxed{120^\\circ}.")
'(120)'
"""

from __future__ import annotations

import re

from .safe_math import FUNCTIONS, ParseError

# Layout that changes no value: sizing, spacing, a trailing full stop, degrees (120^\circ is 120).
_DROP = re.compile(r"\\left|\\right|\\[,;!: ]|\\displaystyle|\$|\^\{\\circ\}|\^\\circ|\.\s*$")
_SIMPLE = {r"\cdot": "*", r"\times": "*", r"\div": "/", r"\pi": "pi", r"\dfrac": r"\frac", r"\tfrac": r"\frac"}
_ATOM = re.compile(r"\d+(?:\.\d+)?|[A-Za-z_]+|\S")


def _group(text: str, i: int) -> tuple[str, int]:
    """The content of the brace group opening at text[i] and the index after it."""
    if i >= len(text) or text[i] != "{":
        if i < len(text) and not text[i].isspace():
            return text[i], i + 1  # \frac12 style single tokens
        raise ParseError(text, "expected '{'")
    depth = 0
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i + 1:j], j + 1
    raise ParseError(text, "unbalanced braces")


def _rewrite(text: str, depth: int = 0) -> str:
    if depth > 20:
        raise ParseError(text, "nested too deep")
    out, i = [], 0
    while i < len(text):
        if text.startswith(r"\frac", i):
            num, i = _group(text, i + 5)
            den, i = _group(text, i)
            out.append(f"(({_rewrite(num, depth + 1)})/({_rewrite(den, depth + 1)}))")
        elif text.startswith(r"\boxed", i):  # the answer's box: its content
            inner, i = _group(text, i + 6)
            out.append(f"({_rewrite(inner, depth + 1)})")
        elif text.startswith(r"\binom", i):
            n, i = _group(text, i + 6)
            k, i = _group(text, i)
            out.append(f"binomial({_rewrite(n, depth + 1)},{_rewrite(k, depth + 1)})")
        elif text.startswith(r"\sqrt", i):
            i += 5
            root = None
            if i < len(text) and text[i] == "[":
                j = text.index("]", i)
                root, i = text[i + 1:j], j + 1
            arg, i = _group(text, i)
            inner = _rewrite(arg, depth + 1)
            out.append(f"sqrt({inner})" if root is None else f"({inner})^(1/({_rewrite(root, depth + 1)}))")
        elif text[i] == "^":
            arg, i = _group(text, i + 1)
            out.append(f"^({_rewrite(arg, depth + 1)})")
        elif text[i] in "{}":
            out.append("(" if text[i] == "{" else ")")
            i += 1
        elif text[i] == "\\":
            raise ParseError(text, f"LaTeX command at {i} is not plain arithmetic")
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def latex_to_plain(text: str) -> str:
    for k, v in _SIMPLE.items():
        text = text.replace(k, v)
    plain = _rewrite(_DROP.sub(" ", text))
    # implicit multiplication: "2x", "3(4)", ")(" , "x y" -> explicit "*"
    atoms = _ATOM.findall(plain)
    out: list[str] = []
    for a in atoms:
        if out:
            prev = out[-1]
            ends_atom = prev[0].isdigit() or prev[0].isalpha() or prev == ")"
            starts_atom = a[0].isdigit() or a[0].isalpha() or a == "("
            is_call = a == "(" and prev.lower() in FUNCTIONS
            if ends_atom and starts_atom and not is_call:
                out.append("*")
        out.append(a)
    return "".join(out)
