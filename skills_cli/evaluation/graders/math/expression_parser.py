"""Stage 5a: a LaTeX subset parsed by recursive descent into tuples like ("add", left, right)."""

from __future__ import annotations

import cmath
import math
import re


class Unsupported(Exception):
    """The expression uses notation the evaluator does not handle (the symbolic fallback may)."""


class Prose(Exception):
    """The text is words, not mathematics; it can only match another text."""


_TOKEN_RE = re.compile(r"\s*(?:(?P<num>\d+(?:\.\d*)?|\.\d+)|(?P<cmd>\\[a-zA-Z]+)|(?P<word>[a-zA-Z]+)|(?P<sym>\\.|\S))")
_GREEK = frozenset(
    "alpha beta gamma delta epsilon varepsilon zeta eta theta vartheta iota kappa lambda mu nu xi omicron rho "
    "varrho sigma tau upsilon phi varphi chi psi omega Gamma Delta Theta Lambda Xi Sigma Upsilon Phi Psi Omega".split()
)


def _cot(z: complex) -> complex:
    return 1 / cmath.tan(z)


def _sec(z: complex) -> complex:
    return 1 / cmath.cos(z)


def _csc(z: complex) -> complex:
    return 1 / cmath.sin(z)


FUNCTIONS = {
    "sin": cmath.sin,
    "cos": cmath.cos,
    "tan": cmath.tan,
    "cot": _cot,
    "sec": _sec,
    "csc": _csc,
    "arcsin": cmath.asin,
    "arccos": cmath.acos,
    "arctan": cmath.atan,
    "sinh": cmath.sinh,
    "cosh": cmath.cosh,
    "tanh": cmath.tanh,
    "ln": cmath.log,
    "log": cmath.log,  # natural, as sympy and math-verify read it
    "exp": cmath.exp,
}
_INVERSE_FUNCTIONS = {"sin": "arcsin", "cos": "arccos", "tan": "arctan"}
_MULTIPLY = frozenset({"*", "\\cdot", "\\times"})
_DIVIDE = frozenset({"/", "\\div"})
_CLOSING = {"(": ")", "{": "}", "[": "]"}
_MAX_EXPRESSION_LENGTH = 2000


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens = []
    for match in _TOKEN_RE.finditer(text):
        kind = match.lastgroup
        value = match.group(kind)
        if kind == "word":
            tokens.extend(_word_tokens(value))
        else:
            tokens.append((kind, value))
    return tokens


def _word_tokens(word: str) -> list[tuple[str, str]]:
    """`sin` and `pi` are names; `xy` is x times y; four or more letters of anything else is prose."""
    if word in FUNCTIONS or word in ("sqrt", "pi"):
        return [("cmd", "\\" + word)]
    if len(word) >= 4:
        raise Prose(word)
    return [("var", letter) for letter in word]


class _ExpressionParser:
    """Recursive descent over tokens; builds tuples like ("add", left, right) for `_evaluate`."""

    def __init__(self, text: str):
        self.tokens = _tokenize(text)
        self.position = 0
        self.inside_abs = False

    def parse(self):
        node = self.sum()
        if self.position != len(self.tokens):
            raise Unsupported(f"unexpected {self.peek()[1]!r}")
        return node

    def peek(self) -> tuple[str, str]:
        return self.tokens[self.position] if self.position < len(self.tokens) else ("end", "")

    def take(self) -> tuple[str, str]:
        token = self.peek()
        self.position += 1
        return token

    def expect(self, text: str) -> None:
        if self.take()[1] != text:
            raise Unsupported(f"expected {text!r}")

    def sum(self):
        node = self.product()
        while self.peek()[1] in ("+", "-"):
            operator = "add" if self.take()[1] == "+" else "sub"
            node = (operator, node, self.product())
        return node

    def product(self):
        node = self.signed()
        while True:
            text = self.peek()[1]
            if text in _MULTIPLY:
                self.position += 1
                node = ("mul", node, self.signed())
            elif text in _DIVIDE:
                self.position += 1
                node = ("div", node, self.signed())
            elif self.starts_factor():
                node = ("mul", node, self.power())  # implicit multiplication: 2x, 3\sqrt{2}, (x+1)(x-1)
            else:
                return node

    def signed(self):
        text = self.peek()[1]
        if text == "-":
            self.position += 1
            return ("neg", self.signed())
        if text == "+":
            self.position += 1
            return self.signed()
        return self.power()

    def starts_factor(self) -> bool:
        kind, text = self.peek()
        if kind in ("num", "var"):
            return True
        if kind == "cmd":
            return text[1:] in FUNCTIONS or text[1:] in _GREEK or text in ("\\frac", "\\sqrt", "\\pi", "\\binom")
        return text in _CLOSING or (text == "|" and not self.inside_abs)

    def power(self):
        node = self.postfix(self.atom())
        while self.peek()[1] == "^":
            self.position += 1
            node = self.postfix(("pow", node, self.script()))
        return node

    def postfix(self, node):
        while self.peek()[1] in ("!", "%"):
            node = ("fact", node) if self.take()[1] == "!" else ("div", node, ("const", 100 + 0j))
        return node

    def script(self):
        """The argument of `^`, `\\frac`, `\\sqrt`: a brace group, else a single character (TeX's rule)."""
        kind, text = self.peek()
        if text == "{":
            self.position += 1
            node = self.sum()
            self.expect("}")
            return node
        if kind == "num" and len(text) > 1 and not text.startswith("."):
            self.tokens[self.position] = ("num", text[1:])  # `\frac12` is 1/2, `x^23` is x^2 * 3
            return ("const", complex(int(text[0])))
        if text in ("-", "+"):
            self.position += 1
            inner = self.script()
            return ("neg", inner) if text == "-" else inner
        return self.atom()

    def atom(self):
        kind, text = self.take()
        if kind == "num":
            if self.peek()[1] == "_":
                raise Prose("a base-b numeral like 2516_8 only matches the same digits")
            return ("const", complex(float(text)))
        if kind == "var":
            return self.variable(text)
        if text in _CLOSING:
            return self.group(text)
        if text == "|" and not self.inside_abs:
            self.inside_abs = True
            node = self.sum()
            self.expect("|")
            self.inside_abs = False
            return ("abs", node)
        if kind == "cmd":
            return self.command(text[1:])
        raise Unsupported(f"unexpected {text!r}")

    def group(self, opening: str):
        inside_abs, self.inside_abs = self.inside_abs, False
        node = self.sum()
        self.expect(_CLOSING[opening])
        self.inside_abs = inside_abs
        return node

    def variable(self, name: str):
        if self.peek()[1] == "_":
            self.position += 1
            return ("var", f"{name}_{self.subscript_text()}")
        if name == "e":
            return ("const", complex(math.e))
        if name == "i":
            return ("const", 1j)
        return ("var", name)

    def subscript_text(self) -> str:
        kind, text = self.take()
        if text != "{":
            return text[0] if kind == "num" else text
        parts = []
        while self.peek()[1] != "}":
            if self.peek()[0] == "end":
                raise Unsupported("unclosed subscript")
            parts.append(self.take()[1])
        self.position += 1
        return "".join(parts)

    def command(self, name: str):
        if name == "frac":
            return ("div", self.script(), self.script())
        if name == "sqrt":
            if self.peek()[1] == "[":
                self.position += 1
                index = self.sum()
                self.expect("]")
                return ("pow", self.script(), ("div", ("const", 1 + 0j), index))
            return ("sqrt", self.script())
        if name == "binom":
            return ("binom", self.script(), self.script())
        if name == "pi":
            return ("const", complex(math.pi))
        if name in _GREEK:
            return self.variable(name)
        if name in FUNCTIONS:
            return self.function(name)
        raise Unsupported(f"\\{name}")

    def function(self, name: str):
        exponent = base = None
        if self.peek()[1] == "^":
            self.position += 1
            exponent = self.script()
        if self.peek()[1] == "_" and name == "log":
            self.position += 1
            base = self.script()
        if exponent == ("neg", ("const", 1 + 0j)) and name in _INVERSE_FUNCTIONS:
            name, exponent = _INVERSE_FUNCTIONS[name], None  # \sin^{-1} x is arcsin x
        node = ("func", name, self.function_argument())
        if base is not None:
            node = ("div", node, ("func", "log", base))
        return ("pow", node, exponent) if exponent is not None else node

    def function_argument(self):
        """`\\sin(x)`, `\\sin{x}`, or `\\sin 2x` (up to the next operator or function)."""
        if self.peek()[1] in ("(", "{"):
            return self.atom()
        node = self.power()
        while self.starts_factor() and not self.starts_function():
            node = ("mul", node, self.power())
        return node

    def starts_function(self) -> bool:
        kind, text = self.peek()
        return kind == "cmd" and text[1:] in FUNCTIONS


def parse_expression(text: str):
    if len(text) > _MAX_EXPRESSION_LENGTH:
        raise Unsupported("too long")
    return _ExpressionParser(text).parse()
