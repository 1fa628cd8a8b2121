"""Execute programs in the sandbox: canonical node expressions over named quantities, in node order.

A node's expression is parsed by the safe grammar (variables allowed: ``n0``, ``r3``), its names are
replaced by exact values (``n<i>`` the problem's numbers, ``r<k>`` earlier nodes' results), and sympy
evaluates it in a child process with CPU-time and memory limits, many programs per child.

>>> execute([(["n0*n1", "r0-n2"], {"n0": "3", "n1": "4", "n2": "2"})])
[['12', '10']]
"""

from __future__ import annotations

from fractions import Fraction

from ..core.sandbox import map_sandboxed

Spec = tuple[list[str], dict[str, str]]  # (canonical node expressions, quantity name -> value)


def exact(text: str | None):
    """A value as an exact Fraction when it is rational text ("12", "3/4", "2.5"), else None."""
    if text is None:
        return None
    try:
        return Fraction(text.replace(",", ""))
    except (ValueError, ZeroDivisionError):
        return None


def same_value(a: str | None, b: str | None, rel: float = 1e-9) -> bool:
    """Two values as text are the same number: exactly when both are rational, else within ``rel``."""
    if a is None or b is None:
        return False
    fa, fb = exact(a), exact(b)
    if fa is not None and fb is not None:
        return fa == fb
    try:
        x, y = float(a), float(b)
    except ValueError:
        return a == b
    return abs(x - y) <= rel * max(1.0, abs(y))


def _sympy_value(text: str):
    import sympy

    frac = exact(text)
    return sympy.Rational(frac.numerator, frac.denominator) if frac is not None else sympy.Float(text, 30)


def partials(expr) -> list:
    """The intermediate results a person computes on the way to ``expr``'s value, left to right: each sum's and
    product's running partial results (``48/6*2``: 48, 48/6, 48/6*2) and those inside its arguments."""
    import sympy

    out = []
    if isinstance(expr, (sympy.Add, sympy.Mul)):
        args = list(expr.args)
        for a in args:
            out += partials(a)
        for i in range(2, len(args)):
            out.append(type(expr)(*args[:i]))
    elif isinstance(expr, sympy.Pow):
        out += partials(expr.base) + partials(expr.exp)
    if expr.args:
        out.append(expr)
    return out


def _run(spec: Spec, with_partials: bool = False) -> list:
    import sympy

    from ..mathlang.safe_math import ParseError, parse, value_of

    nodes, quantities = spec
    env = {sympy.Symbol(k): _sympy_value(v) for k, v in quantities.items()}
    out: list = []
    for k, canonical in enumerate(nodes):  # over a program's nodes (a handful), in order
        try:
            symbolic = parse(canonical, variables=True).expr
            expr = symbolic.subs(env)
        except (ParseError, TypeError, ValueError):
            out.append((None, []) if with_partials else None)
            continue
        value, _ = value_of(expr)
        out.append((value, [value_of(p.subs(env))[0] for p in partials(symbolic)]) if with_partials else value)
        if value is not None:
            env[sympy.Symbol(f"r{k}")] = _sympy_value(value)
    return out


def _run_many(specs: list[Spec]) -> list[list[str | None]]:
    return [_run(s) for s in specs]


def _run_many_partials(specs: list[Spec]) -> list[list[tuple]]:
    return [_run(s, with_partials=True) for s in specs]


def execute(specs: list[Spec], timeout_s: float = 5.0) -> list[list[str | None]]:
    """Each program's node values (None where a node does not compute; every node None where the program's
    own child hit a limit), one child for all programs, one each if that child fails."""
    out = map_sandboxed(_run_many, specs, lambda err: None, timeout_s=timeout_s,
                        batch_timeout_s=timeout_s + 0.2 * len(specs))
    return [values if values is not None else [None] * len(spec[0]) for values, spec in zip(out, specs)]


def execute_with_partials(specs: list[Spec], timeout_s: float = 5.0) -> list[list[tuple[str | None, list]]]:
    """As ``execute``, each node as (value, the values of its ``partials``)."""
    out = map_sandboxed(_run_many_partials, specs, lambda err: None, timeout_s=timeout_s,
                        batch_timeout_s=timeout_s + 0.2 * len(specs))
    return [values if values is not None else [(None, [])] * len(spec[0]) for values, spec in zip(out, specs)]
