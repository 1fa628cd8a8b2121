"""Safe arithmetic: an allow-list tokenizer and a recursive-descent grammar that
builds sympy objects directly. Nothing is ever passed to eval, exec or sympify.

Grammar (``^`` and ``**`` are powers, right-associative; ``x``/``×``/``÷`` are
accepted as GSM8K writes them; ``20%`` is 20/100)::

    expr   := term (('+' | '-') term)*
    term   := unary (('*' | '/') unary)*
    unary  := ('-' | '+') unary | power
    power  := postfix (('^' | '**') unary)?
    postfix:= atom '%'?
    atom   := NUMBER | FUNC '(' expr (',' expr)* ')' | VAR | '(' expr ')'

Trees are built with ``evaluate=False`` so ``48/2`` stays a division (its
labels are the operations written, not the value). Values are computed only by
:func:`evaluate`, in a sandboxed child process with CPU-time and memory limits.

>>> parse("48/2").labels()
['inverse', 'mul']
>>> evaluate(["48/2", "0.2*50"]).values
['24', '10']
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import sympy
from sympy.core.function import AppliedUndef

from ..core.errors import MyceliumError
from ..core.sandbox import map_sandboxed

MAX_CHARS = 400
MAX_TOKENS = 200
MAX_DEPTH = 40
MAX_DIGITS = 40

FUNCTIONS = {
    "sqrt": sympy.sqrt, "abs": sympy.Abs, "floor": sympy.floor, "ceil": sympy.ceiling, "ceiling": sympy.ceiling,
    "factorial": sympy.factorial, "binomial": sympy.binomial,
    "log": sympy.log, "ln": sympy.log, "exp": sympy.exp, "sin": sympy.sin, "cos": sympy.cos, "tan": sympy.tan,
    "min": sympy.Min, "max": sympy.Max,
}
CONSTANTS = {"pi": sympy.pi, "π": sympy.pi, "e": sympy.E}

_TOKEN = re.compile(
    r"\s*(?:(?P<num>\d[\d,]*(?:\.\d+)?|\.\d+)|(?P<name>[A-Za-z_π][A-Za-z_0-9]*)|(?P<op>\*\*|[-+*/^()%,×÷]))"
)
# Inside a function call's parentheses a comma separates arguments: "binomial(12,18)" is two numbers.
_TOKEN_IN_CALL = re.compile(
    r"\s*(?:(?P<num>\d+(?:\.\d+)?|\.\d+)|(?P<name>[A-Za-z_π][A-Za-z_0-9]*)|(?P<op>\*\*|[-+*/^()%,×÷]))"
)


class ParseError(MyceliumError):
    """The text is not an expression of the safe grammar; ``reason`` says why."""

    def __init__(self, text: str, reason: str):
        self.text, self.reason = text, reason
        super().__init__(f"cannot parse {text[:60]!r}: {reason}")


def tokenize(text: str) -> list[tuple[str, str]]:
    """Allow-listed tokens (kind, text). Anything else is a ParseError."""
    if len(text) > MAX_CHARS:
        raise ParseError(text, f"longer than {MAX_CHARS} characters")
    out, pos = [], 0
    calls: list[bool] = []  # for each open parenthesis: is it a function call's?
    text = text.rstrip()
    while pos < len(text):
        m = (_TOKEN_IN_CALL if calls and calls[-1] else _TOKEN).match(text, pos)
        if not m or m.end() == pos:
            raise ParseError(text, f"character {text[pos:pos + 1]!r} at {pos} is not allowed")
        kind = m.lastgroup
        tok = m.group(kind)
        if kind == "num":
            if "," in tok and not re.fullmatch(r"\d{1,3}(,\d{3})+(\.\d+)?", tok):
                raise ParseError(text, f"malformed number {tok!r}")
            tok = tok.replace(",", "")
            if len(tok.replace(".", "")) > MAX_DIGITS:
                raise ParseError(text, f"number with more than {MAX_DIGITS} digits")
        if kind == "op":
            tok = {"×": "*", "÷": "/"}.get(tok, tok)
        if (kind == "name" and tok == "x" and out and (out[-1][0] == "num" or out[-1][1] == ")")
                and re.match(r"\s*[\d.($]", text[m.end():])):
            kind, tok = "op", "*"  # GSM8K's "0.2 x 50"; in "2x + 3" x stays a name
        if tok == "(":
            calls.append(bool(out) and out[-1][0] == "name")
        elif tok == ")" and calls:
            calls.pop()
        out.append((kind, tok))
        pos = m.end()
        if len(out) > MAX_TOKENS:
            raise ParseError(text, f"more than {MAX_TOKENS} tokens")
    if not out:
        raise ParseError(text, "empty")
    return out


class _Parser:
    def __init__(self, text: str, variables: bool):
        self.text, self.variables = text, variables
        self.toks = tokenize(text)
        self.i = 0
        self.depth = 0

    def peek(self) -> tuple[str, str] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, want: str | None = None) -> tuple[str, str]:
        tok = self.peek()
        if tok is None or (want is not None and tok[1] != want):
            raise ParseError(self.text, f"expected {want or 'more input'} at token {self.i}")
        self.i += 1
        return tok

    def enter(self):
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ParseError(self.text, f"nested deeper than {MAX_DEPTH}")

    def parse(self) -> sympy.Expr:
        e = self.expr()
        if self.peek() is not None:
            raise ParseError(self.text, f"unexpected {self.peek()[1]!r} at token {self.i}")
        return e

    def expr(self):
        self.enter()
        e = self.term()
        while (t := self.peek()) and t[1] in "+-" and t[0] == "op":
            self.take()
            rhs = self.term()
            e = sympy.Add(e, rhs if t[1] == "+" else sympy.Mul(-1, rhs, evaluate=False), evaluate=False)
        self.depth -= 1
        return e

    def term(self):
        e = self.unary()
        while t := self.peek():
            if t[0] == "op" and t[1] in ("*", "/"):
                self.take()
                rhs = self.unary()
                e = sympy.Mul(e, rhs if t[1] == "*" else sympy.Pow(rhs, -1, evaluate=False), evaluate=False)
            elif self.variables and t[0] == "name":  # "2x": implicit multiplication by a variable
                e = sympy.Mul(e, self.unary(), evaluate=False)
            else:
                break
        return e

    def unary(self):
        t = self.peek()
        if t and t[0] == "op" and t[1] in "+-":
            self.take()
            self.enter()
            inner = self.unary()
            self.depth -= 1
            if t[1] == "+":
                return inner
            return -inner if inner.is_Number else sympy.Mul(-1, inner, evaluate=False)  # "-1" is a literal
        return self.power()

    def power(self):
        base = self.postfix()
        t = self.peek()
        if t and t[0] == "op" and t[1] in ("^", "**"):
            self.take()
            self.enter()
            exp = self.unary()
            self.depth -= 1
            return sympy.Pow(base, exp, evaluate=False)
        return base

    def postfix(self):
        a = self.atom()
        t = self.peek()
        if t and t[1] == "%":
            self.take()
            return sympy.Mul(a, sympy.Pow(100, -1, evaluate=False), evaluate=False)
        return a

    def atom(self):
        kind, tok = self.take()
        if kind == "num":
            return sympy.Rational(tok) if "." in tok else sympy.Integer(tok)
        if kind == "op" and tok == "(":
            e = self.expr()
            self.take(")")
            return e
        if kind == "name":
            name = tok.lower()
            if self.peek() and self.peek()[1] == "(":
                if name not in FUNCTIONS:
                    raise ParseError(self.text, f"function {tok!r} is not allowed")
                self.take("(")
                args = [self.expr()]
                while self.peek() and self.peek()[1] == ",":
                    self.take(",")
                    args.append(self.expr())
                self.take(")")
                try:
                    return FUNCTIONS[name](*args, evaluate=False)
                except (TypeError, ValueError) as e:
                    raise ParseError(self.text, f"{name}: {e}") from None
            if name in CONSTANTS:
                return CONSTANTS[name]
            if self.variables and re.fullmatch(r"[A-Za-z](_?[0-9]+)?", tok):
                return sympy.Symbol(tok)
            raise ParseError(self.text, f"name {tok!r} is not allowed")
        raise ParseError(self.text, f"unexpected {tok!r}")


@dataclass(frozen=True)
class Parsed:
    text: str
    expr: sympy.Expr

    def labels(self) -> list[str]:
        return op_labels(self.expr)

    def numbers(self) -> list[str]:
        """The numeric literals as written (operands), in order of appearance in the text."""
        return [t for k, t in tokenize(self.text) if k == "num"]


def parse(text: str, variables: bool = False) -> Parsed:
    """Parse ``text`` with the safe grammar; raise ParseError if it is not an expression."""
    return Parsed(text, _Parser(text, variables).parse())


def _small_value(exp: sympy.Expr) -> sympy.Expr:
    """The value of an unevaluated exponent like ``1/3`` when that is cheap and bounded, else ``exp``.

    Only small integer atoms and no nested powers other than ``x**-1``: ``(9**9**9)`` stays as it is.
    """
    # Runs outside the sandbox (labels are pure tree walks): evaluate only what is bounded by construction,
    # sums and products of small integers and reciprocals; a function (factorial) or a power is never evaluated.
    if exp.is_Atom or exp.free_symbols or sympy.count_ops(exp) > 6:
        return exp
    nodes = list(sympy.preorder_traversal(exp))
    if not all(isinstance(n, (sympy.Add, sympy.Mul, sympy.Rational)) or (isinstance(n, sympy.Pow) and n.exp == -1)
               for n in nodes):
        return exp
    if any(abs(a) > 1000 for a in exp.atoms(sympy.Integer)):
        return exp
    return exp.doit()


def pow_label(exp: sympy.Expr) -> str:
    """Split ``Pow`` by exponent: sqrt / square / inverse / cube / frac_pow / pow_general."""
    exp = _small_value(exp)
    if exp == sympy.Rational(1, 2):
        return "sqrt"
    if exp == 2:
        return "square"
    if exp == -1:
        return "inverse"
    if exp == 3:
        return "cube"
    if exp.is_Rational and not exp.is_Integer:
        return "frac_pow"
    return "pow_general"


def op_labels(expr: sympy.Expr) -> list[str]:
    """Sorted set of operations in the tree: add, mul, neg, Pow subtypes, function names.

    ``Mul(-1, x)`` (how subtraction and negation are written) is ``neg``; a product
    of two or more other factors is ``mul``.
    """
    labels: set[str] = set()
    for node in sympy.preorder_traversal(expr):
        if isinstance(node, sympy.Add):
            labels.add("add")
        elif isinstance(node, sympy.Mul):
            factors = [a for a in node.args if a != -1]
            if len(factors) < len(node.args):
                labels.add("neg")
            if len(factors) >= 2:
                labels.add("mul")
        elif isinstance(node, sympy.Pow):
            labels.add(pow_label(node.exp))
        elif isinstance(node, AppliedUndef):
            continue  # f(x) in a MATH solution names a function; it is not an operation
        elif isinstance(node, (sympy.Function, sympy.Min, sympy.Max)):
            labels.add(type(node).__name__.lower())
    return sorted(labels)


@dataclass
class Evaluation:
    values: list[str | None] = field(default_factory=list)  # exact value as text, None if it failed
    errors: list[str | None] = field(default_factory=list)


def value_of(expr: sympy.Expr) -> tuple[str | None, str | None]:
    """(exact value as text, None) or (None, why not). Call it only inside a sandbox: doit() may hang."""
    try:
        v = expr.doit()
    except (ZeroDivisionError, ValueError, TypeError, ArithmeticError, AttributeError) as e:
        return None, f"{type(e).__name__}: {e}"
    if v.free_symbols or not v.is_number:
        return None, "has free symbols"
    try:
        v = sympy.nsimplify(v) if v.is_Float else v
        text = str(v) if v.is_Rational else str(sympy.N(v, 15))
    except (ValueError, ArithmeticError, TypeError) as e:  # e.g. an integer over Python's 4300-digit str limit
        return None, f"value not printable ({type(e).__name__}: {str(e)[:80]})"
    if text in ("zoo", "nan", "oo", "-oo"):
        return None, f"not finite ({text})"
    return text, None


def _eval_many(texts: list[str]) -> list[tuple[str | None, str | None]]:
    out = []
    for t in texts:
        try:
            out.append(value_of(parse(t).expr))
        except ParseError as e:
            out.append((None, e.reason))
    return out


def evaluate(texts: list[str], timeout_s: float = 2.0, mem_mb: int = 512) -> Evaluation:
    """Values of expressions, computed in a sandbox (one child for all; one each if that fails)."""
    pairs = map_sandboxed(_eval_many, list(texts), lambda err: (None, err), timeout_s=timeout_s, mem_mb=mem_mb)
    return Evaluation(values=[v for v, _ in pairs], errors=[e for _, e in pairs])
