"""Stage 5b: expressions evaluated with complex floats at fixed pseudo-random points; agreement to 1e-8 decides.

This settles radicals, pi expressions, complex numbers and polynomial identities in tens of microseconds,
without sympy; notation the parser does not know is left to the symbolic stage (verdict None).
"""

from __future__ import annotations

import cmath
import math
import zlib

from skills_cli.evaluation.graders.math.expression_parser import FUNCTIONS, Prose, Unsupported, parse_expression
from skills_cli.evaluation.graders.math.numeric import Number
from skills_cli.evaluation.graders.math.relations import Relation


def _evaluate(node, values: dict[str, complex]) -> complex:
    kind = node[0]
    if kind == "const":
        return node[1]
    if kind == "var":
        return values[node[1]]
    if kind == "neg":
        return -_evaluate(node[1], values)
    if kind == "func":
        return FUNCTIONS[node[1]](_evaluate(node[2], values))
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
    raise Unsupported(kind)


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


def expressions_equal(
    predicted: str, expected: str, predicted_number: Number | None = None, expected_number: Number | None = None
) -> bool | None:
    """Evaluator verdict: True/False when both sides evaluate, None when the evaluator cannot tell.

    A side that is a literal number is used by value, so a mixed number `1\\frac{4}{5}` stays 9/5 (the evaluator
    alone would read a product) and `50%` may stand for 0.5 or 50.
    """
    try:
        predicted_nodes = _expression_readings(predicted, predicted_number)
        expected_nodes = _expression_readings(expected, expected_number)
    except Prose:
        return False  # words match only as strings, and the string comparison already failed
    except (Unsupported, RecursionError, ValueError, OverflowError, IndexError):
        return None
    verdicts = {_nodes_agree(p, e) for p in predicted_nodes for e in expected_nodes}
    if True in verdicts:
        return True
    return None if None in verdicts else False


def _expression_readings(text: str, number: Number | None) -> list:
    if number is None:
        return [parse_expression(text)]
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


def relations_proportional(predicted: Relation, expected: Relation) -> bool | None:
    """`2x + 4y - 3 = 0` vs `y = -x/2 + 3/4`: left - right of one is a constant multiple of the other's."""
    try:
        nodes = [
            ("sub", parse_expression(relation.left), parse_expression(relation.right))
            for relation in (predicted, expected)
        ]
    except Prose:
        return False
    except (Unsupported, RecursionError, ValueError, OverflowError, IndexError):
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
