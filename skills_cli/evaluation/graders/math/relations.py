"""Stage 4b: relations (`x = 3`, `y = 2x + 3`, `x \\leq 5`): split, flipped to one spelling, read as intervals."""

from __future__ import annotations

import re
from dataclasses import dataclass

from skills_cli.evaluation.graders.math.structures import (
    depth_change,
    scan_tokens,
    split_items,
    split_top_level,
    split_top_level_tokens,
)

_NAME = r"(?:[a-zA-Z]{1,4}|\\[a-zA-Z]+)(?:_(?:\{[^{}]*\}|\w))?'*"
# What may stand left of `=` in an answer that is just a value: x, a_{37}, f(x), (p,q), |AB|, \angle ABC,
# \frac{NO}{BO}, V_1:V_2. A left side with numbers or operators (`7 = 11a+c`, `a + 3z = 0`) is an equation.
SIMPLE_LHS_RE = re.compile(
    rf"{_NAME}(?:\({_NAME}(?:,{_NAME})*\))?|\({_NAME}(?:,{_NAME})*\)|\|[A-Za-z]+\|"
    rf"|m?\\angle ?[A-Za-z]{{1,3}}|\\overline\{{[A-Za-z]{{1,3}}\}}|\\frac\{{{_NAME}\}}\{{{_NAME}\}}|{_NAME}:{_NAME}"
)
_VARIABLE_RE = re.compile(r"(?:[a-zA-Z](?:_\w)?|\\[a-zA-Z]+)(?:\([a-zA-Z]\))?")
_RELATION_TOKENS = {"=": "=", "<": "<", ">": ">", "\\leq": "\\leq", "\\geq": "\\geq", "\\neq": "\\neq"}
# `a > b` is stored as `b < a`, so that each relation has one spelling.
_FLIPPED_RELATIONS = {">": "<", "\\geq": "\\leq"}


@dataclass(frozen=True)
class Relation:
    left: str
    operator: str
    right: str


def _relation_chain(text: str) -> tuple[list[str], list[str]]:
    """`a < x \\leq b` -> (["a", "x", "b"], ["<", "\\leq"]): the parts between top-level relation operators."""
    parts, operators, current, depth = [], [], [], 0
    for token in scan_tokens(text):
        if depth == 0 and token in _RELATION_TOKENS:
            parts.append("".join(current).strip())
            operators.append(token)
            current = []
            continue
        depth += depth_change(token)
        current.append(token)
    parts.append("".join(current).strip())
    return parts, operators


def split_relation(text: str) -> Relation | None:
    """The single top-level relation in `text`, or None (none, or a chain like `1 < x < 2`)."""
    parts, operators = _relation_chain(text)
    if len(operators) > 1 and set(operators) == {"="} and SIMPLE_LHS_RE.fullmatch(parts[0]):
        parts, operators = [parts[0], parts[-1]], ["="]  # x = 5 + 6 = 11 is x = 11
    if len(operators) != 1 or not parts[0] or not parts[1]:
        return None
    left, operator, right = parts[0], operators[0], parts[1]
    if operator in _FLIPPED_RELATIONS:
        left, operator, right = right, _FLIPPED_RELATIONS[operator], left
    return Relation(left, operator, right)


def inequality_as_interval(text: str) -> str | None:
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


def looks_like_interval(text: str) -> bool:
    return "\\cup" in text or (text[:1] in "([" and text[-1:] in ")]" and "," in text)


def has_relation(text: str) -> bool:
    return any(token in _RELATION_TOKENS for token in split_top_level_tokens(text))


def _strip_assignment(text: str) -> str:
    """`x = 3` -> `3`, `(p,q) = (3,2)` -> `(3,2)`, `x = 5 + 6 = 11` -> `11`; other equations stay."""
    if "=" not in text or len(split_items(text)) > 1:
        return text  # a list (`x=1, x=2`) is stripped item by item
    parts = split_top_level(text, frozenset({"="}))
    if len(parts) > 1 and parts[-1] and SIMPLE_LHS_RE.fullmatch(parts[0]):
        return parts[-1]
    return text


def strip_assignments(text: str) -> str:
    items = split_items(text)
    if len(items) == 1:
        return _strip_assignment(text)
    return ",".join(_strip_assignment(item) for item in items)
