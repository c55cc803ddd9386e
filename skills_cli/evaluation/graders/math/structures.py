"""Stage 4a: the shape of an answer (tuples, intervals, sets, bare lists, unions, matrices) as a tree of `Node`s."""

from __future__ import annotations

import re
from dataclasses import dataclass

_SCAN_RE = re.compile(r"\\begin\{[^{}]*\}|\\end\{[^{}]*\}|\\[a-zA-Z]+|\\.|.", re.DOTALL)
_OPENERS = frozenset({"(", "[", "{", "\\{"})
_CLOSERS = frozenset({")", "]", "}", "\\}"})
_MATRIX_RE = re.compile(r"\\begin\{([pbvBV]?matrix|array)\}(?:\{[^{}]*\})?(.*)\\end\{\1\}", re.DOTALL)
_PLUS_MINUS_RE = re.compile(r"\\(?:pm|mp)(?![a-zA-Z])")


@dataclass(frozen=True)
class Node:
    """One parsed answer: a scalar text, or a collection of child nodes.

    kind: "scalar" | "tuple" (ordered, `brackets` e.g. "(]") | "set" | "list" (bare `a, b`) | "plusminus" (the
    values of `a \\pm b`, compared like a set) | "union" | "matrix".
    """

    kind: str
    text: str = ""
    items: tuple = ()
    brackets: str = ""


def scan_tokens(text: str) -> list[str]:
    return _SCAN_RE.findall(text)


def depth_change(token: str) -> int:
    if token in _OPENERS or token.startswith("\\begin"):
        return 1
    if token in _CLOSERS or token.startswith("\\end"):
        return -1
    return 0


def split_top_level(text: str, separators: frozenset) -> list[str]:
    """Split at separator tokens outside any brackets or environments."""
    parts, current, depth = [], [], 0
    for token in scan_tokens(text):
        if depth == 0 and token in separators:
            parts.append("".join(current))
            current = []
            continue
        depth += depth_change(token)
        current.append(token)
    parts.append("".join(current))
    return parts


def split_top_level_tokens(text: str) -> list[str]:
    """The tokens of `text` that sit outside any brackets."""
    tokens, depth = [], 0
    for token in scan_tokens(text):
        change = depth_change(token)
        if depth == 0 and change == 0:
            tokens.append(token)
        depth += change
    return tokens


def _outer_group_spans_all(text: str) -> bool:
    """True when the bracket opening `text` closes at its very end: `(1,2)` yes, `(a+1)(b+2)` no."""
    depth = 0
    tokens = scan_tokens(text)
    for index, token in enumerate(tokens):
        depth += depth_change(token)
        if depth == 0:
            return index == len(tokens) - 1
    return False


def parse_structure(text: str) -> Node:
    text = text.strip()
    matrix = _parse_matrix(text)
    if matrix is not None:
        return matrix
    union = [part for part in split_top_level(text, frozenset({"\\cup"})) if part]
    if len(union) > 1:
        return Node("union", items=tuple(parse_structure(part) for part in union))
    if text.startswith("\\{") and text.endswith("\\}") and _outer_group_spans_all(text):
        return Node("set", items=_parse_items(text[2:-2]))
    if text.startswith("{") and text.endswith("}") and _outer_group_spans_all(text):
        parts = split_items(text[1:-1])  # `{1, 3}`: a set whose backslashes got lost
        return Node("set", items=_parse_items(text[1:-1])) if len(parts) > 1 else parse_structure(text[1:-1])
    if text[:1] in "([" and text[-1:] in ")]" and _outer_group_spans_all(text):
        parts = split_items(text[1:-1])
        if len(parts) > 1:
            return Node("tuple", items=tuple(parse_structure(part) for part in parts), brackets=text[0] + text[-1])
    parts = split_items(text)
    if len(parts) > 1:
        return Node("list", items=tuple(parse_structure(part) for part in parts))
    return _scalar_or_plus_minus(text)


def split_items(text: str) -> list[str]:
    return [part for part in split_top_level(text, frozenset({",", ";"})) if part.strip()]


def _parse_items(text: str) -> tuple:
    items = []
    for part in split_items(text):
        node = parse_structure(part)
        # `\{1 \pm \sqrt{5}, -2\}` holds three values: a \pm item contributes both of its values.
        items.extend(node.items if node.kind == "plusminus" else (node,))
    return tuple(items)


def _scalar_or_plus_minus(text: str) -> Node:
    """`1 \\pm \\sqrt{2}` is the set of its two values (at most three `\\pm`, eight values)."""
    if not _PLUS_MINUS_RE.search(text) or len(_PLUS_MINUS_RE.findall(text)) > 3:
        return Node("scalar", text=text)
    values = [text]
    while any(_PLUS_MINUS_RE.search(value) for value in values):
        values = [
            _PLUS_MINUS_RE.sub(sign, value, count=1).replace("=+", "=") for value in values for sign in ("+", "-")
        ]
    values = [value[1:] if value.startswith("+") else value for value in values]
    return Node("plusminus", items=tuple(Node("scalar", text=value) for value in values))


def _parse_matrix(text: str) -> Node | None:
    if "\\begin" not in text:
        return None
    if text[:1] in "([" and text[-1:] in ")]" and _outer_group_spans_all(text):
        text = text[1:-1]  # `[\begin{array}..\end{array}]` and `(\begin{pmatrix}..\end{pmatrix})`
    match = _MATRIX_RE.fullmatch(text)
    if match is None:
        return None
    rows = [row for row in split_top_level(match.group(2), frozenset({"\\\\"})) if row.strip()]
    cells = tuple(
        Node("tuple", items=tuple(Node("scalar", text=c.strip()) for c in split_top_level(row, frozenset("&"))))
        for row in rows
    )
    return Node("matrix", items=cells)
