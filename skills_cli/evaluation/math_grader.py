"""Grade math answers: pull the final answer out of a model's output and decide whether it equals the expected one.

Public API (other code depends on these names):

- `extract_answer(text, regex=None)`: the content of the last `\\boxed{...}` (also `\\boxed 5` and `\\fbox{...}`),
  with nested braces matched; else group 1 of the last match of `regex`; else None. Never raises.
- `math_equal(predicted, expected, timeout=2.0)`: True when the two answers are mathematically the same.
- `grade(text, expected, regex=None, timeout=2.0)`: both of the above, as a `GradeResult` whose `error` says when a
  timeout, a refused input or an exception made the grade "incorrect" (graded answers never raise).

How two answers are compared, cheapest stage first; each stage either decides or hands the pair on:

1. Normalized strings. Formatting noise is removed from both sides (`$`, `\\left`/`\\right`, `\\dfrac`, spacing
   commands, `\\text{}` wrappers and trailing units, degrees, currency, thousands separators, trailing dots).
2. Multiple-choice letters (`\\text{(C)}` vs `C`).
3. Numbers: integers, decimals, fractions, mixed numbers, percents, scientific notation, compared exactly as
   rationals; a decimal approximation is accepted within a relative 1e-6.
4. Structures: tuples and intervals element-wise in order (bracket kinds must agree), sets and bare lists of
   solutions (`1, 2` vs `2, 1`, `1 \\pm \\sqrt{2}`) as unordered collections, unions of intervals, matrices;
   `x = 3` vs `3`; equations and inequalities up to a constant factor.
5. Expressions: a small LaTeX evaluator (pure Python, complex floats) computes both sides at a few fixed
   pseudo-random points of their variables; agreement to 1e-8 decides. This settles radicals, pi expressions,
   complex numbers and polynomial identities in tens of microseconds, without sympy.
6. Symbolic fallback, only for notation the evaluator does not know (sums, floors, primes, ...): math-verify's
   `parse` + `verify` (sympy), in a worker process, under a time limit.

Why a worker process: sympy can run for minutes (`\\frac` towers, `9^{9^{9}}`, long polynomials), and math-verify's
own timeouts use SIGALRM, which only works in the main thread and cannot interrupt a long C-level big-integer
operation. A child process can always be killed, from any thread. The worker (`python math_grader.py
--symbolic-worker`) is started on first need, answers one JSON line per request, and is killed and replaced when
a request overruns; calls from several threads take turns. One comparison never spends more than `timeout`
seconds of symbolic work in total (the worker's start-up, paid once, is not counted). Inputs that are obviously
explosive (power towers, huge exponents or factorials, very long expressions) are refused before any symbolic
work. A timeout, a refusal or an exception grades the pair as incorrect and is reported in `GradeResult.error`.

sympy and math_verify are imported only inside the worker, so importing this module stays cheap.
"""

from __future__ import annotations

import atexit
import cmath
import json
import math
import os
import re
import select
import subprocess
import sys
import threading
import time
import zlib
from dataclasses import dataclass
from fractions import Fraction

__all__ = ["GradeResult", "extract_answer", "grade", "math_equal"]


@dataclass(frozen=True)
class GradeResult:
    """The grade of one model output: the extracted answer, whether it is correct, and what went wrong, if anything."""

    predicted_answer: str | None
    correct: bool
    error: str | None = None


class _GradingError(Exception):
    """A comparison that could not finish (timeout, refused input, broken worker); it grades as incorrect."""


# ---------------------------------------------------------------------------------------------------------------
# Extraction
# ---------------------------------------------------------------------------------------------------------------

_BOX_COMMANDS = ("\\boxed", "\\fbox")


def extract_answer(text: str | None, regex: str | None = None) -> str | None:
    """The last boxed answer in `text`; else group 1 of the last `regex` match; else None. Never raises."""
    if not isinstance(text, str):
        return None
    boxed = _last_boxed_content(text)
    if boxed is not None:
        return boxed
    if regex:
        return _last_regex_match(text, regex)
    return None


def _last_boxed_content(text: str) -> str | None:
    start = max(text.rfind(command) for command in _BOX_COMMANDS)
    if start < 0:
        return None
    command = next(c for c in _BOX_COMMANDS if text.startswith(c, start))
    position = start + len(command)
    if position < len(text) and (text[position].isalpha()):
        return None  # `\boxedsomething` is another command, not a box
    while position < len(text) and text[position] in " \t":
        position += 1
    if position < len(text) and text[position] == "{":
        return _braced_content(text, position)
    # `\boxed 5`: the argument runs to the next space or `$` (TeX would take one token; models mean the answer).
    match = re.match(r"[^\s$]+", text[position:])
    return match.group(0).rstrip(".,;") if match else None


def _braced_content(text: str, open_index: int) -> str | None:
    """The text inside the brace group opening at `open_index`; None when the group never closes (truncated)."""
    depth = 0
    for index in range(open_index, len(text)):
        char = text[index]
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return text[open_index + 1 : index].strip()
    return None


def _last_regex_match(text: str, regex: str) -> str | None:
    try:
        matches = list(re.finditer(regex, text))
    except (re.error, TypeError):
        return None
    if not matches:
        return None
    last = matches[-1]
    answer = last.group(1) if last.re.groups else last.group(0)
    return answer.strip() if answer is not None else None


# ---------------------------------------------------------------------------------------------------------------
# Public comparison entry points
# ---------------------------------------------------------------------------------------------------------------


def math_equal(predicted: str | None, expected: str, timeout: float = 2.0) -> bool:
    """True when `predicted` and `expected` are the same answer; errors and timeouts count as not equal."""
    return _compare(predicted, expected, timeout)[0]


def grade(text: str | None, expected: str, regex: str | None = None, timeout: float = 2.0) -> GradeResult:
    """Extract the answer from a model output and compare it with `expected`."""
    predicted = extract_answer(text, regex)
    if predicted is None:
        return GradeResult(predicted_answer=None, correct=False)
    correct, error = _compare(predicted, expected, timeout)
    return GradeResult(predicted_answer=predicted, correct=correct, error=error)


_MAX_ANSWER_LENGTH = 20_000


def _compare(predicted, expected, timeout: float) -> tuple[bool, str | None]:
    """(equal, error): never raises, so one odd answer cannot crash an evaluation run."""
    if predicted is None or expected is None:
        return False, None
    predicted, expected = str(predicted), str(expected)
    if max(len(predicted), len(expected)) > _MAX_ANSWER_LENGTH and predicted.strip() != expected.strip():
        # Every stage is linear in the length, but a 1 MB "answer" is a runaway generation, not an answer.
        return False, f"refused: answer of {max(len(predicted), len(expected))} characters"
    try:
        return _Judge(timeout).answers_equal(predicted, expected), None
    except _GradingError as error:
        return False, str(error)
    except Exception as error:  # a grader bug must cost one answer, not the run
        return False, f"{type(error).__name__}: {error}"


# ---------------------------------------------------------------------------------------------------------------
# Normalization: remove formatting noise so equal answers become equal strings
# ---------------------------------------------------------------------------------------------------------------

_UNICODE_REPLACEMENTS = {
    "\u2212": "-",
    "\u2013": "-",
    "\u00d7": "\\times ",
    "\u00b7": "\\cdot ",
    "\u22c5": "\\cdot ",
    "\u00f7": "\\div ",
    "\u03c0": "\\pi ",
    "\u221a": "\\sqrt",
    "\u221e": "\\infty ",
    "\u00b0": "^\\circ",
    "\u2264": "\\leq ",
    "\u2265": "\\geq ",
    "\u2260": "\\neq ",
    "\u222a": "\\cup ",
    "\u00a0": " ",
    "\uff0c": ",",
    "\u00b2": "^2",
    "\u00b3": "^3",
}
_UNICODE_RE = re.compile("|".join(re.escape(key) for key in _UNICODE_REPLACEMENTS))

# `10,\!080` and `14{,}916` are how MATH writes thousands; they are never list separators.
_LATEX_THOUSANDS_RE = re.compile(r"(?<=\d)(?:\{,\}|,\\!)\s*(?=\d{3}(?!\d))")
_SIZING_RE = re.compile(r"\\(?:left|right|[bB]igg?[lrm]?)(?![a-zA-Z])\.?")
_THIN_SPACE_RE = re.compile(r"(?<!\\)\\[,;: ]|\\q?quad(?![a-zA-Z])|~")
_COMMAND_ALIASES = [
    (re.compile(r"\\[dtc]frac(?![a-zA-Z])"), r"\\frac"),
    (re.compile(r"\\[dt]binom(?![a-zA-Z])"), r"\\binom"),
    (re.compile(r"\\(?:le|leqslant)(?![a-zA-Z])"), r"\\leq"),
    (re.compile(r"\\(?:ge|geqslant)(?![a-zA-Z])"), r"\\geq"),
    (re.compile(r"\\ne(?![a-zA-Z])"), r"\\neq"),
    (re.compile(r"\\lt(?![a-zA-Z])"), "<"),
    (re.compile(r"\\gt(?![a-zA-Z])"), ">"),
    (re.compile(r"<="), r"\\leq "),
    (re.compile(r">="), r"\\geq "),
    (re.compile(r"!="), r"\\neq "),
    (re.compile(r"\\(?:displaystyle|textstyle|mathstrut|!)"), ""),
    (re.compile(r"\\%"), "%"),
    (re.compile(r"\\?\$"), ""),
]
_PERCENT_WORD_RE = re.compile(r"(?<=[\d}])\s*(?:percentage|percent|pct)\b", re.IGNORECASE)
_DEGREE_RE = re.compile(r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|\\circ|\\degree(?![a-zA-Z])")
_TEXT_COMMAND_RE = re.compile(
    r"\\(?:text|textbf|textit|textrm|textnormal|textsf|texttt|mathrm|mathbf|mathit|mathsf|mathtt|mbox|"
    r"hbox|operatorname)\s*\{([^{}]*)\}"
)
_REALS_RE = re.compile(r"^\\mathbb\s*\{?\s*R\s*\}?$|^\\R$")
_CONNECTIVE_TEXT_RE = re.compile(r"\s*(?:and|or)\s*", re.IGNORECASE)
_CONNECTIVE_WORD_RE = re.compile(r"\s*\b(?:and|or)\b\s*")
_UNIT_EXPONENT_RE = re.compile(r"\s*\^\s*\{?\s*[23]\s*\}?")
# `137 1/2` is a mixed number; squashing the space would make it 1371/2.
_SPACED_MIXED_NUMBER_RE = re.compile(r"^(-?\d+) (\d+)/(\d+)$")
_PLAIN_THOUSANDS_RE = re.compile(r"[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_SPACE_RE = re.compile(r"(\\[a-zA-Z]+)\s+(?=[a-zA-Z])|\s+")
_SINGLE_CHAR_SCRIPT_RE = re.compile(r"([\^_])\{(\w)\}")
_SINGLE_DIGIT_SQRT_RE = re.compile(r"\\sqrt\{(\d)\}")
_ELEMENT_OF_RE = re.compile(r"^[a-zA-Z](?:_\w)?\\in(?![a-zA-Z])")
_APPROX_RE = re.compile(r"\\approx|\\sim(?![a-zA-Z])")
_KNOWN_WORDS = frozenset(
    "sin cos tan cot sec csc arcsin arccos arctan sinh cosh tanh ln log exp sqrt pi frac mod".split()
)


def _normalize(answer: str) -> str:
    """A canonical spelling of one answer: noise removed, spaces squashed (kept only after a command name)."""
    text = _strip_delimiters(answer)
    text = _UNICODE_RE.sub(lambda match: _UNICODE_REPLACEMENTS[match.group(0)], text)
    text = _LATEX_THOUSANDS_RE.sub("", text)
    text = _SIZING_RE.sub("", text)
    text = _THIN_SPACE_RE.sub(" ", text)
    for pattern, replacement in _COMMAND_ALIASES:
        text = pattern.sub(replacement, text)
    text = _PERCENT_WORD_RE.sub("%", text)
    text = _DEGREE_RE.sub("", text)
    text = _REALS_RE.sub(r"(-\\infty,\\infty)", text)
    text = _unwrap_text_commands(text)
    text = _keep_exact_side_of_approximation(text)
    text = " ".join(text.split())
    text = _SPACED_MIXED_NUMBER_RE.sub(r"\1\\frac{\2}{\3}", text)
    text = _drop_trailing_unit_words(text)
    text = _CONNECTIVE_WORD_RE.sub(",", text) if (" and " in text or " or " in text) else text
    if _PLAIN_THOUSANDS_RE.fullmatch(text):
        text = text.replace(",", "")
    text = _SPACE_RE.sub(lambda match: match.group(1) + " " if match.group(1) else "", text)
    text = _SINGLE_CHAR_SCRIPT_RE.sub(r"\1\2", text)
    text = _SINGLE_DIGIT_SQRT_RE.sub(r"\\sqrt\1", text)
    text = _ELEMENT_OF_RE.sub("", text)
    return _strip_trailing_punctuation(text)


def _strip_delimiters(text: str) -> str:
    """Remove math-mode delimiters and a box around the whole answer (golds are sometimes stored boxed)."""
    text = text.strip()
    for _ in range(3):
        before = text
        text = text.strip().strip("$").strip()
        for opening, closing in (("\\(", "\\)"), ("\\[", "\\]")):
            if text.startswith(opening) and text.endswith(closing):
                text = text[len(opening) : -len(closing)].strip()
        if text.startswith(_BOX_COMMANDS):
            inner = _last_boxed_content(text)
            if inner is not None and text.rstrip(". ").endswith("}"):
                text = inner
        if text == before:
            break
    return text


def _unwrap_text_commands(text: str) -> str:
    """`\\text{ and }` becomes a list comma, a trailing `\\text{cm}^2` (a unit) is dropped, others keep their words."""
    for _ in range(5):  # nested wrappers (`\text{\textbf{A}}`) unwrap from the inside out
        match = _TEXT_COMMAND_RE.search(text)
        if match is None:
            return text
        text = _replace_text_command(text, match)
    return text


def _replace_text_command(text: str, match: re.Match) -> str:
    content = match.group(1)
    before, after = text[: match.start()], text[match.end() :]
    if _CONNECTIVE_TEXT_RE.fullmatch(content):
        return f"{before},{after}"
    trailing = _UNIT_EXPONENT_RE.sub("", after, count=1) if after.lstrip().startswith("^") else after
    is_trailing_unit = not trailing.strip(" .") and any(char.isdigit() or char == "}" for char in before)
    if is_trailing_unit and re.search(r"[a-zA-Z]", content) and not re.fullmatch(r"\s*[a-zA-Z]\s*", content):
        return before.rstrip()
    return f"{before}{content}{after}"


def _keep_exact_side_of_approximation(text: str) -> str:
    """`\\frac{\\sqrt3}{3} \\approx 0.577` keeps the exact left side; `x \\approx 11` keeps the value."""
    parts = _APPROX_RE.split(text)
    if len(parts) < 2:
        return text
    left = parts[0].strip()
    if not left or _SIMPLE_LHS_RE.fullmatch(left.replace(" ", "")):
        return parts[-1].strip()
    return left


def _drop_trailing_unit_words(text: str) -> str:
    """`125 miles` -> `125`, `10 cm^2` -> `10`: words after a value are units (split, no regex, so no backtracking)."""
    words = text.split(" ")
    while len(words) > 1 and _looks_like_unit(words[-1]) and not words[-2].endswith(("\\", "=")):
        previous = " ".join(words[:-1])
        if not any(char.isdigit() for char in previous) or re.search(r"\\[a-zA-Z]+$", previous):
            break
        words.pop()
    return " ".join(words)


def _looks_like_unit(word: str) -> bool:
    core = _UNIT_EXPONENT_RE.sub("", word).rstrip(".")
    return len(core) >= 2 and core.isalpha() and core.isascii() and core.lower() not in _KNOWN_WORDS


def _strip_trailing_punctuation(text: str) -> str:
    text = text.strip()
    while text and (text[-1] in ".,;:" or text.endswith("\\")) and not text.endswith("\\\\"):
        text = text[:-1].rstrip()
    return text


# ---------------------------------------------------------------------------------------------------------------
# Numbers: exact rationals, with a tolerance only for decimal approximations
# ---------------------------------------------------------------------------------------------------------------

_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
_SIGNED_NUMBER = rf"[-+]?{_NUMBER}"
_DECIMAL_RE = re.compile(rf"({_SIGNED_NUMBER})(?:[eE]([-+]?\d+))?")
_SCIENTIFIC_RE = re.compile(rf"({_SIGNED_NUMBER})(?:\\times|\\cdot|\*)10\^(?:\{{([-+]?\d+)\}}|(\d))")
_FRACTION_RE = re.compile(rf"([-+]?)\\frac(?:\{{({_SIGNED_NUMBER})\}}|(\d))(?:\{{({_SIGNED_NUMBER})\}}|(\d))")
_SLASH_RE = re.compile(rf"({_SIGNED_NUMBER})/({_SIGNED_NUMBER})")
_MIXED_RE = re.compile(r"([-+]?)(\d+)\\frac(?:\{(\d+)\}|(\d))(?:\{(\d+)\}|(\d))")
_REPEATING_DECIMAL_RE = re.compile(r"([-+]?)(\d*)\.(\d*)\\overline\{?(\d+)\}?")
_INFINITY_RE = re.compile(r"([-+]?)\\infty")
_RELATIVE_TOLERANCE = 1e-6
_ABSOLUTE_TOLERANCE = 1e-9


@dataclass(frozen=True)
class _Number:
    """A literal number. `approximate` marks decimals, which may be rounded; `percent` marks a trailing %."""

    value: Fraction | float  # `50%` has the value 1/2
    approximate: bool = False
    percent: bool = False

    def readings(self) -> tuple:
        # `50%` may be meant as 0.5 or as the 50 that a question asking "what percent" wants.
        return (self.value, self.value * 100) if self.percent else (self.value,)


def _parse_number(text: str) -> _Number | None:
    """The literal number `text` spells, or None when it is anything else."""
    if not text or len(text) > 200:
        return None
    percent = text.endswith("%")
    body = text[:-1] if percent else text
    value = _parse_rational(body)
    if value is None:
        return None
    if percent:
        value = value / 100
    return _Number(value=value, approximate="." in body or "e" in body.lower(), percent=percent)


def _parse_rational(text: str) -> Fraction | float | None:
    match = _DECIMAL_RE.fullmatch(text)
    if match:
        exponent = int(match.group(2) or 0)
        return Fraction(match.group(1)) * Fraction(10) ** exponent if abs(exponent) <= 400 else None
    match = _FRACTION_RE.fullmatch(text)
    if match:
        return _signed_ratio(match.group(1), match.group(2) or match.group(3), match.group(4) or match.group(5))
    match = _SLASH_RE.fullmatch(text)
    if match:
        return _signed_ratio("", match.group(1), match.group(2))
    match = _MIXED_RE.fullmatch(text)
    if match:
        fraction = _signed_ratio("", match.group(3) or match.group(4), match.group(5) or match.group(6))
        if fraction is None or fraction >= 1:
            return None  # `2\frac{5}{3}` is not a mixed number; leave it to the evaluator (a product)
        magnitude = int(match.group(2)) + fraction
        return -magnitude if match.group(1) == "-" else magnitude
    match = _SCIENTIFIC_RE.fullmatch(text)
    if match:
        exponent = int(match.group(2) or match.group(3))
        return Fraction(match.group(1)) * Fraction(10) ** exponent if abs(exponent) <= 400 else None
    match = _REPEATING_DECIMAL_RE.fullmatch(text)
    if match:
        return _repeating_decimal(*match.groups())
    match = _INFINITY_RE.fullmatch(text)
    if match:
        return -math.inf if match.group(1) == "-" else math.inf
    return None


def _repeating_decimal(sign: str, whole: str, fixed: str, repeated: str) -> Fraction:
    """`0.1\\overline{6}` = 1/6: the repeated block over 99..9, shifted past the fixed digits."""
    value = Fraction(int(whole or 0)) + Fraction(int(fixed or 0), 10 ** len(fixed))
    value += Fraction(int(repeated), (10 ** len(repeated) - 1) * 10 ** len(fixed))
    return -value if sign == "-" else value


def _signed_ratio(sign: str, numerator: str, denominator: str) -> Fraction | None:
    denominator_value = Fraction(denominator)
    if denominator_value == 0:
        return None
    ratio = Fraction(numerator) / denominator_value
    return -ratio if sign == "-" else ratio


def _numbers_equal(predicted: _Number, expected: _Number) -> bool:
    approximate = predicted.approximate or expected.approximate
    return any(_values_close(a, b, approximate) for a in predicted.readings() for b in expected.readings())


def _values_close(a: Fraction | float, b: Fraction | float, approximate: bool) -> bool:
    if a == b:
        return True
    if not approximate or math.isinf(a) or math.isinf(b):
        return False  # exact forms must match exactly: 1000000 and 1000001 are different answers
    if isinstance(a, Fraction) and isinstance(b, Fraction) and a.denominator == 1 and b.denominator == 1:
        return False
    difference = abs(a - b)
    return difference <= _RELATIVE_TOLERANCE * max(abs(a), abs(b)) or difference <= _ABSOLUTE_TOLERANCE


# ---------------------------------------------------------------------------------------------------------------
# Structure: tuples, intervals, sets, bare lists, unions, matrices
# ---------------------------------------------------------------------------------------------------------------

_SCAN_RE = re.compile(r"\\begin\{[^{}]*\}|\\end\{[^{}]*\}|\\[a-zA-Z]+|\\.|.", re.DOTALL)
_OPENERS = frozenset({"(", "[", "{", "\\{"})
_CLOSERS = frozenset({")", "]", "}", "\\}"})
_MATRIX_RE = re.compile(r"\\begin\{([pbvBV]?matrix|array)\}(?:\{[^{}]*\})?(.*)\\end\{\1\}", re.DOTALL)
_PLUS_MINUS_RE = re.compile(r"\\(?:pm|mp)(?![a-zA-Z])")


@dataclass(frozen=True)
class _Node:
    """One parsed answer: a scalar text, or a collection of child nodes.

    kind: "scalar" | "tuple" (ordered, `brackets` e.g. "(]") | "set" | "list" (bare `a, b`) | "plusminus" (the
    values of `a \\pm b`, compared like a set) | "union" | "matrix".
    """

    kind: str
    text: str = ""
    items: tuple = ()
    brackets: str = ""


def _scan_tokens(text: str) -> list[str]:
    return _SCAN_RE.findall(text)


def _depth_change(token: str) -> int:
    if token in _OPENERS or token.startswith("\\begin"):
        return 1
    if token in _CLOSERS or token.startswith("\\end"):
        return -1
    return 0


def _split_top_level(text: str, separators: frozenset) -> list[str]:
    """Split at separator tokens outside any brackets or environments."""
    parts, current, depth = [], [], 0
    for token in _scan_tokens(text):
        if depth == 0 and token in separators:
            parts.append("".join(current))
            current = []
            continue
        depth += _depth_change(token)
        current.append(token)
    parts.append("".join(current))
    return parts


def _split_top_level_tokens(text: str) -> list[str]:
    """The tokens of `text` that sit outside any brackets."""
    tokens, depth = [], 0
    for token in _scan_tokens(text):
        change = _depth_change(token)
        if depth == 0 and change == 0:
            tokens.append(token)
        depth += change
    return tokens


def _outer_group_spans_all(text: str) -> bool:
    """True when the bracket opening `text` closes at its very end: `(1,2)` yes, `(a+1)(b+2)` no."""
    depth = 0
    tokens = _scan_tokens(text)
    for index, token in enumerate(tokens):
        depth += _depth_change(token)
        if depth == 0:
            return index == len(tokens) - 1
    return False


def _parse_structure(text: str) -> _Node:
    text = text.strip()
    matrix = _parse_matrix(text)
    if matrix is not None:
        return matrix
    union = [part for part in _split_top_level(text, frozenset({"\\cup"})) if part]
    if len(union) > 1:
        return _Node("union", items=tuple(_parse_structure(part) for part in union))
    if text.startswith("\\{") and text.endswith("\\}") and _outer_group_spans_all(text):
        return _Node("set", items=_parse_items(text[2:-2]))
    if text.startswith("{") and text.endswith("}") and _outer_group_spans_all(text):
        parts = _split_items(text[1:-1])  # `{1, 3}`: a set whose backslashes got lost
        return _Node("set", items=_parse_items(text[1:-1])) if len(parts) > 1 else _parse_structure(text[1:-1])
    if text[:1] in "([" and text[-1:] in ")]" and _outer_group_spans_all(text):
        parts = _split_items(text[1:-1])
        if len(parts) > 1:
            return _Node("tuple", items=tuple(_parse_structure(part) for part in parts), brackets=text[0] + text[-1])
    parts = _split_items(text)
    if len(parts) > 1:
        return _Node("list", items=tuple(_parse_structure(part) for part in parts))
    return _scalar_or_plus_minus(text)


def _split_items(text: str) -> list[str]:
    return [part for part in _split_top_level(text, frozenset({",", ";"})) if part.strip()]


def _parse_items(text: str) -> tuple:
    items = []
    for part in _split_items(text):
        node = _parse_structure(part)
        # `\{1 \pm \sqrt{5}, -2\}` holds three values: a \pm item contributes both of its values.
        items.extend(node.items if node.kind == "plusminus" else (node,))
    return tuple(items)


def _scalar_or_plus_minus(text: str) -> _Node:
    """`1 \\pm \\sqrt{2}` is the set of its two values (at most three `\\pm`, eight values)."""
    if not _PLUS_MINUS_RE.search(text) or len(_PLUS_MINUS_RE.findall(text)) > 3:
        return _Node("scalar", text=text)
    values = [text]
    while any(_PLUS_MINUS_RE.search(value) for value in values):
        values = [
            _PLUS_MINUS_RE.sub(sign, value, count=1).replace("=+", "=") for value in values for sign in ("+", "-")
        ]
    values = [value[1:] if value.startswith("+") else value for value in values]
    return _Node("plusminus", items=tuple(_Node("scalar", text=value) for value in values))


def _parse_matrix(text: str) -> _Node | None:
    if "\\begin" not in text:
        return None
    if text[:1] in "([" and text[-1:] in ")]" and _outer_group_spans_all(text):
        text = text[1:-1]  # `[\begin{array}..\end{array}]` and `(\begin{pmatrix}..\end{pmatrix})`
    match = _MATRIX_RE.fullmatch(text)
    if match is None:
        return None
    rows = [row for row in _split_top_level(match.group(2), frozenset({"\\\\"})) if row.strip()]
    cells = tuple(
        _Node("tuple", items=tuple(_Node("scalar", text=c.strip()) for c in _split_top_level(row, frozenset("&"))))
        for row in rows
    )
    return _Node("matrix", items=cells)


# ---------------------------------------------------------------------------------------------------------------
# Relations: `x = 3`, `y = 2x + 3`, `x \leq 5`
# ---------------------------------------------------------------------------------------------------------------

_NAME = r"(?:[a-zA-Z]{1,4}|\\[a-zA-Z]+)(?:_(?:\{[^{}]*\}|\w))?'*"
# What may stand left of `=` in an answer that is just a value: x, a_{37}, f(x), (p,q), |AB|, \angle ABC,
# \frac{NO}{BO}, V_1:V_2. A left side with numbers or operators (`7 = 11a+c`, `a + 3z = 0`) is an equation.
_SIMPLE_LHS_RE = re.compile(
    rf"{_NAME}(?:\({_NAME}(?:,{_NAME})*\))?|\({_NAME}(?:,{_NAME})*\)|\|[A-Za-z]+\|"
    rf"|m?\\angle ?[A-Za-z]{{1,3}}|\\overline\{{[A-Za-z]{{1,3}}\}}|\\frac\{{{_NAME}\}}\{{{_NAME}\}}|{_NAME}:{_NAME}"
)
_VARIABLE_RE = re.compile(r"(?:[a-zA-Z](?:_\w)?|\\[a-zA-Z]+)(?:\([a-zA-Z]\))?")
_RELATION_TOKENS = {"=": "=", "<": "<", ">": ">", "\\leq": "\\leq", "\\geq": "\\geq", "\\neq": "\\neq"}
# `a > b` is stored as `b < a`, so that each relation has one spelling.
_FLIPPED_RELATIONS = {">": "<", "\\geq": "\\leq"}


@dataclass(frozen=True)
class _Relation:
    left: str
    operator: str
    right: str


def _relation_chain(text: str) -> tuple[list[str], list[str]]:
    """`a < x \\leq b` -> (["a", "x", "b"], ["<", "\\leq"]): the parts between top-level relation operators."""
    parts, operators, current, depth = [], [], [], 0
    for token in _scan_tokens(text):
        if depth == 0 and token in _RELATION_TOKENS:
            parts.append("".join(current).strip())
            operators.append(token)
            current = []
            continue
        depth += _depth_change(token)
        current.append(token)
    parts.append("".join(current).strip())
    return parts, operators


def _split_relation(text: str) -> _Relation | None:
    """The single top-level relation in `text`, or None (none, or a chain like `1 < x < 2`)."""
    parts, operators = _relation_chain(text)
    if len(operators) > 1 and set(operators) == {"="} and _SIMPLE_LHS_RE.fullmatch(parts[0]):
        parts, operators = [parts[0], parts[-1]], ["="]  # x = 5 + 6 = 11 is x = 11
    if len(operators) != 1 or not parts[0] or not parts[1]:
        return None
    left, operator, right = parts[0], operators[0], parts[1]
    if operator in _FLIPPED_RELATIONS:
        left, operator, right = right, _FLIPPED_RELATIONS[operator], left
    return _Relation(left, operator, right)


def _inequality_as_interval(text: str) -> str | None:
    """`x \\leq 3` -> `(-\\infty,3]`, `-1 < x \\leq 2` -> `(-1,2]`; None when `text` is no such inequality."""
    parts, operators = _relation_chain(text)
    if not operators or any(op in ("=", "\\neq") for op in operators) or len(operators) > 2:
        return None
    if any(op in _FLIPPED_RELATIONS for op in operators):  # read `b > x > a` as `a < x < b`
        if not all(op in _FLIPPED_RELATIONS for op in operators):
            return None
        parts, operators = parts[::-1], [_FLIPPED_RELATIONS[op] for op in reversed(operators)]
    if len(operators) == 2:
        lower, variable, upper = parts
        low_bracket, high_bracket = _open_or_closed(operators[0], "(["), _open_or_closed(operators[1], ")]")
    elif _VARIABLE_RE.fullmatch(parts[0]):
        variable, lower, upper = parts[0], "-\\infty", parts[1]
        low_bracket, high_bracket = "(", _open_or_closed(operators[0], ")]")
    else:
        lower, variable, upper = parts[0], parts[1], "\\infty"
        low_bracket, high_bracket = _open_or_closed(operators[0], "(["), ")"
    if not _VARIABLE_RE.fullmatch(variable) or not lower or not upper:
        return None
    return f"{low_bracket}{lower},{upper}{high_bracket}"


def _open_or_closed(operator: str, brackets: str) -> str:
    return brackets[1] if operator == "\\leq" else brackets[0]


def _looks_like_interval(text: str) -> bool:
    return "\\cup" in text or (text[:1] in "([" and text[-1:] in ")]" and "," in text)


def _has_relation(text: str) -> bool:
    return any(token in _RELATION_TOKENS for token in _split_top_level_tokens(text))


def _strip_assignment(text: str) -> str:
    """`x = 3` -> `3`, `(p,q) = (3,2)` -> `(3,2)`, `x = 5 + 6 = 11` -> `11`; other equations stay."""
    if "=" not in text or len(_split_items(text)) > 1:
        return text  # a list (`x=1, x=2`) is stripped item by item
    parts = _split_top_level(text, frozenset({"="}))
    if len(parts) > 1 and parts[-1] and _SIMPLE_LHS_RE.fullmatch(parts[0]):
        return parts[-1]
    return text


def _strip_assignments(text: str) -> str:
    items = _split_items(text)
    if len(items) == 1:
        return _strip_assignment(text)
    return ",".join(_strip_assignment(item) for item in items)


# ---------------------------------------------------------------------------------------------------------------
# Expression evaluator: a LaTeX subset, evaluated with complex floats at fixed pseudo-random points
# ---------------------------------------------------------------------------------------------------------------


class _Unsupported(Exception):
    """The expression uses notation the evaluator does not handle (the symbolic fallback may)."""


class _Prose(Exception):
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


_FUNCTIONS = {
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
    if word in _FUNCTIONS or word in ("sqrt", "pi"):
        return [("cmd", "\\" + word)]
    if len(word) >= 4:
        raise _Prose(word)
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
            raise _Unsupported(f"unexpected {self.peek()[1]!r}")
        return node

    def peek(self) -> tuple[str, str]:
        return self.tokens[self.position] if self.position < len(self.tokens) else ("end", "")

    def take(self) -> tuple[str, str]:
        token = self.peek()
        self.position += 1
        return token

    def expect(self, text: str) -> None:
        if self.take()[1] != text:
            raise _Unsupported(f"expected {text!r}")

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
            return text[1:] in _FUNCTIONS or text[1:] in _GREEK or text in ("\\frac", "\\sqrt", "\\pi", "\\binom")
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
                raise _Prose("a base-b numeral like 2516_8 only matches the same digits")
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
        raise _Unsupported(f"unexpected {text!r}")

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
                raise _Unsupported("unclosed subscript")
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
        if name in _FUNCTIONS:
            return self.function(name)
        raise _Unsupported(f"\\{name}")

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
        return kind == "cmd" and text[1:] in _FUNCTIONS


def _parse_expression(text: str):
    if len(text) > _MAX_EXPRESSION_LENGTH:
        raise _Unsupported("too long")
    return _ExpressionParser(text).parse()


def _evaluate(node, values: dict[str, complex]) -> complex:
    kind = node[0]
    if kind == "const":
        return node[1]
    if kind == "var":
        return values[node[1]]
    if kind == "neg":
        return -_evaluate(node[1], values)
    if kind == "func":
        return _FUNCTIONS[node[1]](_evaluate(node[2], values))
    if kind == "sqrt":
        return cmath.sqrt(_evaluate(node[1], values))
    if kind == "abs":
        return complex(abs(_evaluate(node[1], values)))
    if kind == "fact":
        return _factorial(_evaluate(node[1], values))
    left, right = _evaluate(node[1], values), _evaluate(node[2], values)
    if kind == "add":
        return left + right
    if kind == "sub":
        return left - right
    if kind == "mul":
        return left * right
    if kind == "div":
        return left / right
    if kind == "pow":
        return _power(left, right)
    if kind == "binom":
        return _binomial(left, right)
    raise _Unsupported(kind)


def _power(base: complex, exponent: complex) -> complex:
    # Huge results overflow floats and raise OverflowError; nothing here can build a giant integer.
    if exponent.imag == 0 and exponent.real == int(exponent.real) and abs(exponent.real) <= 64:
        return base ** int(exponent.real)  # exact repeated multiplication: (-2)^3 stays real
    return base**exponent


def _factorial(value: complex) -> complex:
    if value.imag != 0 or value.real < 0 or value.real > 170:
        raise ValueError("factorial outside 0..170")
    if value.real == int(value.real):
        return complex(math.factorial(int(value.real)))
    return complex(math.gamma(value.real + 1))


def _binomial(n: complex, k: complex) -> complex:
    if n.imag or k.imag or abs(n.real) > 10_000 or abs(k.real) > 10_000:
        raise ValueError("binomial outside the real range we evaluate")
    n, k = n.real, k.real
    if n == int(n) and k == int(k) and n >= 0:
        return complex(math.comb(int(n), int(k)) if k >= 0 else 0)
    # Symbolic answers (\binom{n+1}{2}) are evaluated at non-integer points: use the Gamma function.
    return complex(math.gamma(n + 1) / (math.gamma(k + 1) * math.gamma(n - k + 1)))


def _variables(node) -> set[str]:
    if node[0] == "var":
        return {node[1]}
    found: set[str] = set()
    for child in node[1:]:
        if isinstance(child, tuple):
            found |= _variables(child)
    return found


def _sample_value(name: str, point: int) -> complex:
    """A fixed pseudo-random value per (variable, point): both sides see the same values; points 0-2 positive."""
    fraction = (zlib.crc32(f"{name}#{point}".encode()) % 100_003) / 100_003
    value = 0.5 + 2.5 * fraction
    return complex(-value if point >= _POSITIVE_POINTS else value)


_POSITIVE_POINTS = 3
_EXPRESSION_TOLERANCE = 1e-8


def _close(a: complex, b: complex) -> bool:
    return abs(a - b) <= _EXPRESSION_TOLERANCE * max(abs(a), abs(b)) + 1e-12


def _evaluate_at_points(nodes: list, points: range) -> list[list[complex] | None]:
    """Each node's values at each point; None for a point where some node cannot be evaluated."""
    names = sorted(set().union(*(_variables(node) for node in nodes)))
    results = []
    for point in points:
        values = {name: _sample_value(name, point) for name in names}
        try:
            evaluated = [_evaluate(node, values) for node in nodes]
        except (ArithmeticError, ValueError):
            results.append(None)
            continue
        results.append(evaluated if all(cmath.isfinite(value) for value in evaluated) else None)
    return results


def _expressions_equal(
    predicted: str, expected: str, predicted_number: _Number | None = None, expected_number: _Number | None = None
) -> bool | None:
    """Evaluator verdict: True/False when both sides evaluate, None when the evaluator cannot tell.

    A side that is a literal number is used by value, so a mixed number `1\\frac{4}{5}` stays 9/5 (the evaluator
    alone would read a product) and `50%` may stand for 0.5 or 50.
    """
    try:
        predicted_nodes = _expression_readings(predicted, predicted_number)
        expected_nodes = _expression_readings(expected, expected_number)
    except _Prose:
        return False  # words match only as strings, and the string comparison already failed
    except (_Unsupported, RecursionError, ValueError, OverflowError, IndexError):
        return None
    verdicts = {_nodes_agree(p, e) for p in predicted_nodes for e in expected_nodes}
    if True in verdicts:
        return True
    return None if None in verdicts else False


def _expression_readings(text: str, number: _Number | None) -> list:
    if number is None:
        return [_parse_expression(text)]
    return [("const", complex(float(value))) for value in number.readings() if not math.isinf(value)]


def _nodes_agree(predicted_node, expected_node) -> bool | None:
    nodes = [predicted_node, expected_node]
    has_variables = bool(_variables(predicted_node) | _variables(expected_node))
    samples = _evaluate_at_points(nodes, range(_POSITIVE_POINTS + 1 if has_variables else 1))
    positive = [sample for sample in samples[:_POSITIVE_POINTS] if sample is not None]
    if not positive or (has_variables and len(positive) < 2):
        return None
    if not all(_close(a, b) for a, b in positive):
        return False
    negative = samples[_POSITIVE_POINTS:]
    if negative and negative[0] is not None and not _close(*negative[0]):
        return None  # equal for positive values only (|x| vs x, ln(x^2) vs 2 ln x): let sympy decide
    return True


def _relations_proportional(predicted: _Relation, expected: _Relation) -> bool | None:
    """`2x + 4y - 3 = 0` vs `y = -x/2 + 3/4`: left - right of one is a constant multiple of the other's."""
    try:
        nodes = [
            ("sub", _parse_expression(relation.left), _parse_expression(relation.right))
            for relation in (predicted, expected)
        ]
    except _Prose:
        return False
    except (_Unsupported, RecursionError, ValueError, OverflowError, IndexError):
        return None
    ratios = []
    for sample in _evaluate_at_points(nodes, range(_POSITIVE_POINTS + 1)):
        if sample is None or abs(sample[0]) < 1e-9:
            continue
        ratios.append(sample[1] / sample[0])
    if len(ratios) < 2:
        return None
    same_ratio = all(_close(ratio, ratios[0]) for ratio in ratios) and abs(ratios[0]) > 1e-12
    if expected.operator in ("<", "\\leq"):
        # An inequality may only be scaled by a positive number: `x < 1` is `-x > -1`, not `x > 1`.
        return same_ratio and abs(ratios[0].imag) < 1e-9 and ratios[0].real > 0
    return same_ratio


# ---------------------------------------------------------------------------------------------------------------
# The decision: stages in order of cost
# ---------------------------------------------------------------------------------------------------------------

_CHOICE_RE = re.compile(r"\(?([A-J])\)?")
_CHOICE_PREFIX_RE = re.compile(r"\(?([A-J])(?:\)|\.|:|$)")
_PROSE_RE = re.compile(r"(?<![\\a-zA-Z])[a-zA-Z]{4,}")


def _choice_verdict(predicted: str, expected: str) -> bool | None:
    """Multiple choice: when one side is a bare letter, the other must start with the same letter."""
    for letter_side, other in ((expected, predicted), (predicted, expected)):
        letter = _CHOICE_RE.fullmatch(letter_side)
        if letter:
            chosen = _CHOICE_RE.fullmatch(other) or _CHOICE_PREFIX_RE.match(other)
            return bool(chosen) and chosen.group(1) == letter.group(1)
    return None


def _is_prose(text: str) -> bool:
    return any(word.lower() not in _KNOWN_WORDS for word in _PROSE_RE.findall(text))


_UNORDERED = frozenset({"set", "list", "plusminus"})


class _Judge:
    """One comparison, with its symbolic-time budget (the deadline covers every symbolic call it makes)."""

    def __init__(self, timeout: float):
        self.timeout = max(float(timeout), 0.01)
        self.deadline = time.monotonic() + self.timeout

    def answers_equal(self, predicted: str, expected: str) -> bool:
        predicted, expected = _normalize(predicted), _normalize(expected)
        if not predicted or not expected:
            return False
        if predicted == expected:
            return True
        choice = _choice_verdict(predicted, expected)
        if choice is not None:
            return choice
        predicted, expected = self.strip_one_sided_assignment(predicted, expected)
        predicted, expected = self.inequality_against_interval(predicted, expected)
        if predicted == expected:
            return True
        return self.nodes_equal(_parse_structure(predicted), _parse_structure(expected))

    @staticmethod
    def inequality_against_interval(predicted: str, expected: str) -> tuple[str, str]:
        """`x \\leq 0` vs `(-\\infty, 0]`: the inequality is rewritten as the interval it describes."""
        if _looks_like_interval(expected):
            predicted = _inequality_as_interval(predicted) or predicted
        elif _looks_like_interval(predicted):
            expected = _inequality_as_interval(expected) or expected
        return predicted, expected

    @staticmethod
    def strip_one_sided_assignment(predicted: str, expected: str) -> tuple[str, str]:
        """`x = 3` vs `3`: names are dropped only when the other side has no `=` of its own.

        Lists lose them item by item: `(x,y) = (5,8), (8,5)` vs `(5,8), (8,5)`.
        """
        if "=" in predicted and "=" not in expected:
            predicted = _strip_assignments(predicted)
        elif "=" in expected and "=" not in predicted:
            expected = _strip_assignments(expected)
        return predicted, expected

    def nodes_equal(self, predicted: _Node, expected: _Node) -> bool:
        if predicted.kind == "scalar" and expected.kind == "scalar":
            return self.scalars_equal(predicted.text, expected.text)
        if predicted.kind == "matrix" or expected.kind == "matrix":
            return self.matrices_equal(predicted, expected)
        if predicted.kind == "tuple" or expected.kind == "tuple":
            return self.tuples_equal(predicted, expected)
        if predicted.kind == "union" or expected.kind == "union":
            return predicted.kind == expected.kind and self.unordered_equal(predicted.items, expected.items)
        if predicted.kind in _UNORDERED and expected.kind in _UNORDERED:
            return self.unordered_equal(predicted.items, expected.items)
        singleton = next((n for n in (predicted, expected) if n.kind == "set" and len(n.items) == 1), None)
        if singleton is not None:  # \\{3\\} vs 3: the only solution, written as a set
            other = expected if singleton is predicted else predicted
            return other.kind == "scalar" and self.nodes_equal(singleton.items[0], other)
        return False  # a single value against a collection

    def tuples_equal(self, predicted: _Node, expected: _Node) -> bool:
        if predicted.kind == expected.kind == "tuple" and predicted.brackets != expected.brackets:
            return False  # (1, 2] is not [1, 2]; a point (1, 2) is not [1, 2]
        # A tuple against a bare list or a set reads the other side in its written order.
        loose = predicted if predicted.kind != "tuple" else expected
        if loose.kind not in ("tuple", "list", "set"):  # not a \pm pair, whose order means nothing
            return False
        return self.ordered_equal(predicted.items, expected.items)

    def matrices_equal(self, predicted: _Node, expected: _Node) -> bool:
        if predicted.kind == expected.kind == "matrix":
            if len(predicted.items) != len(expected.items):
                return False
            return all(
                self.ordered_equal(p.items, e.items) for p, e in zip(predicted.items, expected.items, strict=True)
            )
        matrix, other = (predicted, expected) if predicted.kind == "matrix" else (expected, predicted)
        if other.kind != "tuple" or other.brackets != "()":
            return False
        # A column or row vector written as a tuple: (1, 2) vs \begin{pmatrix} 1 \\ 2 \end{pmatrix}.
        entries = tuple(cell for row in matrix.items for cell in row.items)
        if len(matrix.items) > 1 and any(len(row.items) > 1 for row in matrix.items):
            return False
        return self.ordered_equal(entries, other.items)

    def ordered_equal(self, predicted: tuple, expected: tuple) -> bool:
        return len(predicted) == len(expected) and all(
            self.nodes_equal(p, e) for p, e in zip(predicted, expected, strict=True)
        )

    def unordered_equal(self, predicted: tuple, expected: tuple) -> bool:
        """Set equality: every item on each side equals some item on the other.

        Duplicates do not count (a solution listed twice is still one solution), so sizes may differ.
        """
        if not predicted or not expected or max(len(predicted), len(expected)) > 64:
            return False
        return all(any(self.nodes_equal(p, e) for p in predicted) for e in expected) and all(
            any(self.nodes_equal(p, e) for e in expected) for p in predicted
        )

    def scalars_equal(self, predicted: str, expected: str) -> bool:
        if predicted == expected:
            return True
        if predicted.isalpha() and len(predicted) >= 3 and predicted.casefold() == expected.casefold():
            return True  # `Yes` vs `yes`: words, not products of variables
        if _is_prose(predicted) or _is_prose(expected):
            return predicted.casefold() == expected.casefold()
        predicted, expected = self.strip_one_sided_assignment(predicted, expected)
        predicted_number, expected_number = _parse_number(predicted), _parse_number(expected)
        if predicted_number is not None and expected_number is not None:
            return _numbers_equal(predicted_number, expected_number)
        if _has_relation(predicted) != _has_relation(expected):
            return False  # `a + 3z = 0` is not the value 0; `x < 5` is not 5
        relation_verdict = self.relations_verdict(predicted, expected)
        if relation_verdict is not None:
            return relation_verdict
        verdict = _expressions_equal(predicted, expected, predicted_number, expected_number)
        if verdict is not None:
            return verdict
        return self.symbolic_equal(predicted, expected)

    def relations_verdict(self, predicted: str, expected: str) -> bool | None:
        predicted_relation, expected_relation = _split_relation(predicted), _split_relation(expected)
        if predicted_relation is None or expected_relation is None:
            return None
        if predicted_relation.operator != expected_relation.operator:
            return False
        if predicted_relation.operator == "=" and predicted_relation.left == expected_relation.left:
            if _SIMPLE_LHS_RE.fullmatch(predicted_relation.left):  # y = ... vs y = ...: compare the values
                return self.nodes_equal(
                    _parse_structure(predicted_relation.right), _parse_structure(expected_relation.right)
                )
        verdict = _relations_proportional(predicted_relation, expected_relation)
        if verdict is not None:
            return verdict
        return self.scalars_equal(predicted_relation.left, expected_relation.left) and self.scalars_equal(
            predicted_relation.right, expected_relation.right
        )

    def symbolic_equal(self, predicted: str, expected: str) -> bool:
        refusal = _refusal_reason(predicted) or _refusal_reason(expected)
        if refusal:
            raise _GradingError(f"refused: {refusal}")
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise _GradingError(f"timeout: symbolic budget of {self.timeout:g}s spent")
        return _SYMBOLIC_WORKER.equal(predicted, expected, remaining)


# ---------------------------------------------------------------------------------------------------------------
# Symbolic fallback: math-verify in a killable worker process
# ---------------------------------------------------------------------------------------------------------------

_MAX_SYMBOLIC_LENGTH = 400
# A numeric power tower (`9^{9^{9}}`): exact integer arithmetic on it never ends. `e^{-x^2}` stays allowed.
_NUMERIC_TOWER_RE = re.compile(r"\d\s*\}?\s*\^\s*[{(]?\s*\d+\s*\}?\s*\^")
_BIG_EXPONENT_RE = re.compile(r"\^\s*\{?\s*\(?\s*-?\d{4,}")
_BIG_FACTORIAL_RE = re.compile(r"\d{4,}\s*!|\{\s*\d{4,}\s*\}\s*!")
_WORKER_START_TIMEOUT = 120.0
_WORKER_RETRY_DELAY = 60.0
_WORKER_MEMORY_LIMIT = 4 << 30  # bytes of address space: a runaway sympy dies instead of swapping the node


def _refusal_reason(text: str) -> str | None:
    """Why `text` is too explosive for sympy (towers, exponents >= 1000, factorials >= 1000!), or None."""
    if len(text) > _MAX_SYMBOLIC_LENGTH:
        return f"expression of {len(text)} characters"
    if _NUMERIC_TOWER_RE.search(text):
        return "numeric power tower"
    if _BIG_EXPONENT_RE.search(text):
        return "exponent of 1000 or more"
    if _BIG_FACTORIAL_RE.search(text):
        return "factorial of 1000 or more"
    if text.count("\\frac") > 12:
        return "more than 12 nested fractions"
    return None


class _SymbolicWorker:
    """A child Python process running math-verify, one JSON request per line; killed and replaced on overrun.

    Works from any thread (no signals in this process); concurrent callers take turns on a lock, and the time spent
    waiting for the lock counts against their timeout. A forked child never touches its parent's worker.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None
        self._owner_pid = 0
        self._failed_start_at = -math.inf

    def equal(self, predicted: str, expected: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        if not self._lock.acquire(timeout=timeout):
            raise _GradingError(f"timeout: waited {timeout:.1f}s for the symbolic worker")
        try:
            process = self._ready_process()
            request = json.dumps({"predicted": predicted, "expected": expected}) + "\n"
            try:
                process.stdin.write(request.encode())
                process.stdin.flush()
            except OSError as error:
                self._stop()
                raise _GradingError(f"symbolic worker died: {error}") from None
            try:
                reply = _read_line(process.stdout.fileno(), deadline)
            except EOFError:
                self._stop()
                raise _GradingError("symbolic worker exited (out of memory?)") from None
            if reply is None:
                self._stop()  # the only way to stop sympy mid-computation
                raise _GradingError(f"timeout: symbolic check exceeded {timeout:.1f}s")
            answer = json.loads(reply)
            if "error" in answer:
                raise _GradingError(f"symbolic check failed: {answer['error']}")
            return bool(answer["equal"])
        finally:
            self._lock.release()

    def _ready_process(self) -> subprocess.Popen:
        if self._process is not None and self._owner_pid == os.getpid() and self._process.poll() is None:
            return self._process
        if self._owner_pid == os.getpid():
            self._stop()
        if time.monotonic() - self._failed_start_at < _WORKER_RETRY_DELAY:
            raise _GradingError("symbolic worker unavailable (failed to start recently)")
        self._process = subprocess.Popen(
            [sys.executable, "-u", os.path.abspath(__file__), "--symbolic-worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            bufsize=0,
        )
        self._owner_pid = os.getpid()
        try:
            greeting = _read_line(self._process.stdout.fileno(), time.monotonic() + _WORKER_START_TIMEOUT)
        except EOFError:
            greeting = None
        if greeting != "ready":
            self._stop()
            self._failed_start_at = time.monotonic()  # do not pay a start-up per answer when it cannot start
            raise _GradingError("symbolic worker failed to start (is math-verify installed?)")
        return self._process

    def _stop(self) -> None:
        process, self._process = self._process, None
        if process is None or self._owner_pid != os.getpid():
            return
        process.kill()
        process.wait()
        for stream in (process.stdin, process.stdout):
            stream.close()

    def close(self) -> None:
        """Stop the worker (registered at exit)."""
        if self._lock.acquire(timeout=5):
            try:
                self._stop()
            finally:
                self._lock.release()


def _read_line(fd: int, deadline: float) -> str | None:
    """One line from a pipe, None at the deadline, EOFError when the writer is gone (select works in any thread)."""
    buffer = b""
    while b"\n" not in buffer:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        readable, _, _ = select.select([fd], [], [], remaining)
        if not readable:
            return None
        chunk = os.read(fd, 65536)
        if not chunk:
            raise EOFError
        buffer += chunk
    return buffer.split(b"\n", 1)[0].decode()


_SYMBOLIC_WORKER = _SymbolicWorker()
atexit.register(_SYMBOLIC_WORKER.close)


def _serve_symbolic_checks() -> None:
    """Worker main loop: read {"predicted", "expected"} lines, answer {"equal"} or {"error"} lines."""
    import logging

    logging.disable(logging.WARNING)  # math-verify warns that we disabled its signal timeouts; we kill instead
    _limit_memory(_WORKER_MEMORY_LIMIT)
    from math_verify import parse, verify

    def as_latex(answer: str) -> str:
        return answer if "$" in answer else f"${answer}$"

    replies, sys.stdout = sys.stdout, sys.stderr  # a stray print in a library must not corrupt the protocol
    replies.write("ready\n")
    replies.flush()
    for line in sys.stdin:
        try:
            request = json.loads(line)
            gold = parse(as_latex(request["expected"]), parsing_timeout=None)
            target = parse(as_latex(request["predicted"]), parsing_timeout=None)
            reply = {"equal": bool(gold and target and verify(gold, target, timeout_seconds=None))}
        except Exception as error:
            reply = {"error": f"{type(error).__name__}: {error}"[:300]}
        replies.write(json.dumps(reply) + "\n")
        replies.flush()


def _limit_memory(limit: int) -> None:
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ImportError, ValueError, OSError):
        pass  # not on this platform, or already lower


if __name__ == "__main__" and sys.argv[1:] == ["--symbolic-worker"]:
    _serve_symbolic_checks()
