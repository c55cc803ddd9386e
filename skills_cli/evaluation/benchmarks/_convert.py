"""Helpers shared by the benchmark converters (source formats -> id, problem, expected_answer, ...)."""

from __future__ import annotations


def integer_text(value: object) -> str:
    """`27.0` -> `27`, `025` -> `25`; anything non-integral stays as given."""
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        return text
    return str(int(number)) if number.is_integer() else text
