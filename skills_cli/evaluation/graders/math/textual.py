"""Stage 1b: answers that are not mathematics (times, ratios, ordinals, words) are compared as text, cheaply.

They must never reach the symbolic stage: sympy reads `1:00` or `a:b` as something it tries to simplify and spent
up to its whole time limit on them (bench/grading.py, `non_math`, measures this). Words are handled by the
comparison itself (`_is_prose` in compare.py); this module covers the rest.

- Times and ratios (`1:00`, `3:2`, `1:2:3`): equal only to another colon form with as many parts, each part the
  same number (`01:00` = `1:00`, `1.5:1` = `\\frac{3}{2}:1`). A ratio is not its quotient: `3:2` is not `1.5`, and
  `6:4` is not `3:2` (a ratio answer is asked in simplest form).
- a.m./p.m.: `3:15 PM` vs `3:15 AM` is wrong; with the suffix on one side only the times are compared.
- Units: normalization drops them, but `5 cm` vs `5 m` (both sides name a unit, and they differ) is wrong.
- The symbolic stage runs only for real expressions: at least one side holds a LaTeX command or `|...|` (the only
  notation the fast evaluator leaves to sympy), neither side has non-math marks (`:`, `?`, quotes, ordinals,
  `a.m.`), and a side without such notation has no words (`yes`, `3 to 2`).
"""

from __future__ import annotations

import re

from skills_cli.evaluation.graders.math.numeric import numbers_equal, parse_number

_MERIDIEM_RE = re.compile(r"\d\s*(?:\\text\s*\{\s*|\\mathrm\s*\{\s*)?([ap])\.?\s*m(?![a-zA-Z])", re.IGNORECASE)
# `:`, `?`, quotes, `a.m.` / `e.g.`, `C++`, ordinals (`2nd`, `2^{nd}`)
_NON_MATH_MARK_RE = re.compile(
    r"(?<!\\):|[?\"#@]|[a-zA-Z]\.|\+\+|\d(?:st|nd|rd|th)(?![a-zA-Z])|\^\{?(?:st|nd|rd|th)\}?"
)
_SYMBOLIC_NOTATION_RE = re.compile(r"\\[a-zA-Z]+|\|")
_EMPTY_SET = "\\emptyset"
_WORD_RE = re.compile(r"(?<![\\a-zA-Z])[a-zA-Z]{2,}")


def meridiem_conflict(predicted: str, expected: str) -> bool:
    """True for `3:15 a.m.` vs `3:15 PM` (raw answers, before normalization drops the suffix as a unit)."""
    predicted_match, expected_match = _MERIDIEM_RE.search(predicted), _MERIDIEM_RE.search(expected)
    if predicted_match is None or expected_match is None:
        return False
    return predicted_match.group(1).lower() != expected_match.group(1).lower()


# A unit after a value: `5 \\text{ cm}`, `15\\mbox{ cm}^2`, `125 miles`
_TRAILING_UNIT_RE = re.compile(
    r"(?<=[\d}\s])\s*(?:\\(?:text|textnormal|textrm|mbox|mathrm)\s*\{\s*([a-zA-Z][a-zA-Z .]*?)\s*\}|([a-zA-Z]{2,}))"
    r"\s*(?:\^\s*\{?\s*[23]\s*\}?)?\s*\.?\s*$"
)
_UNIT_PREFIX_RE = re.compile(r"^(?:square|sq|cubic|cu)\.?\s+")
_NOT_UNITS = frozenset({"e", "i", "pi", "and", "or"})


def unit_conflict(predicted: str, expected: str) -> bool:
    """True for `5 \\text{ cm}` vs `5 \\text{ m}`, `3 dollars` vs `3 cents`: both sides name a unit (which
    normalization drops) and the units differ. Compared by first letter, so `in`/`inches`, `hrs`/`hours` agree."""
    predicted_unit, expected_unit = _unit(predicted), _unit(expected)
    return bool(predicted_unit and expected_unit) and predicted_unit[0] != expected_unit[0]


def _unit(text: str) -> str | None:
    match = _TRAILING_UNIT_RE.search(text)
    if match is None:
        return None
    unit = _UNIT_PREFIX_RE.sub("", (match.group(1) or match.group(2)).strip().lower())
    return None if unit in _NOT_UNITS else unit or None


def has_colon(text: str) -> bool:
    return ":" in text.replace("\\:", "")


def colon_forms_equal(predicted: str, expected: str) -> bool:
    """Times and ratios, part by part; a colon form never equals anything else."""
    if not (has_colon(predicted) and has_colon(expected)):
        return False
    predicted_parts, expected_parts = predicted.split(":"), expected.split(":")
    if len(predicted_parts) != len(expected_parts):
        return False
    return all(_parts_equal(p.strip(), e.strip()) for p, e in zip(predicted_parts, expected_parts, strict=True))


def _parts_equal(predicted: str, expected: str) -> bool:
    if predicted == expected:
        return True
    predicted_number, expected_number = parse_number(predicted), parse_number(expected)
    if predicted_number is None or expected_number is None or predicted_number.percent or expected_number.percent:
        return False
    return numbers_equal(predicted_number, expected_number)


def worth_symbolic_check(predicted: str, expected: str) -> bool:
    """Whether sympy could settle what the fast evaluator could not (see the module docstring)."""
    if not (_mathematical(predicted) and _mathematical(expected)):
        return False
    if _EMPTY_SET in (predicted, expected):
        return False  # the empty set equals only itself, which the string comparison already settled
    return bool(_SYMBOLIC_NOTATION_RE.search(predicted) or _SYMBOLIC_NOTATION_RE.search(expected))


def _mathematical(text: str) -> bool:
    """No non-math marks, and either notation for sympy or no words (`yes`, `3 to 2` are not products)."""
    if _NON_MATH_MARK_RE.search(text):
        return False
    return bool(_SYMBOLIC_NOTATION_RE.search(text)) or not _WORD_RE.search(text)
