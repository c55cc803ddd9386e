"""Stage 3: literal numbers compared as exact rationals, with a tolerance only for decimal approximations."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fractions import Fraction

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
class Number:
    """A literal number. `approximate` marks decimals, which may be rounded; `percent` marks a trailing %."""

    value: Fraction | float  # `50%` has the value 1/2
    approximate: bool = False
    percent: bool = False

    def readings(self) -> tuple:
        # `50%` may be meant as 0.5 or as the 50 that a question asking "what percent" wants.
        return (self.value, self.value * 100) if self.percent else (self.value,)


def parse_number(text: str) -> Number | None:
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
    return Number(value=value, approximate="." in body or "e" in body.lower(), percent=percent)


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


def numbers_equal(predicted: Number, expected: Number) -> bool:
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
