"""Helpers shared by the benchmark converters (source formats -> id, problem, expected_answer, ...)."""

from __future__ import annotations

import re


def integer_text(value: object) -> str:
    """`27.0` -> `27`, `025` -> `25`; anything non-integral stays as given."""
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        return text
    return str(int(number)) if number.is_integer() else text


def aops_rows(rows: list[dict], benchmark: str, url: re.Pattern) -> list[dict]:
    """Rows whose AoPS wiki url names the exam and problem: `.../2024_AIME_I_Problems/Problem_4` -> `aime24-I-4`.

    `url` captures (year, exam, problem number); the problem text is `problem`, else `question`.
    """
    out = []
    for row in rows:
        _, exam, number = url.search(row["url"]).groups()
        out.append({"id": f"{benchmark}-{exam}-{number}", "problem": row.get("problem") or row["question"],
                    "expected_answer": integer_text(row["answer"])})  # fmt: skip
    return out
