"""Helpers shared by the multiple-choice benchmarks (gpqa_diamond, mmlu_pro, mmlu): one row per question with
its options, the options text the prompt shows, the expected letter; CSV parsing; the hub token header.

A prepared row: `id`, `problem` (the question), `options` (the option texts in the order shown), `options_text`
(`(A) ...` one per line, rendered here so the prompt config stays a plain template), `expected_answer` (the
letter of the correct option) and the benchmark's own fields (subject, category, domain).
"""

from __future__ import annotations

import csv
import io
import os
import string

from skills_cli.common.errors import UserError

LETTERS = string.ascii_uppercase
CHOICE_ROW_FIELDS = ("id", "problem", "options", "options_text", "expected_answer")
HF_TOKEN_ENV = "HF_TOKEN"


def options_text(options: list[str]) -> str:
    return "\n".join(f"({LETTERS[index]}) {option}" for index, option in enumerate(options))


def choice_row(row_id: str, question: str, options: list[str], answer_index: int, **fields: object) -> dict:
    """Our row for one question; a source row that cannot make one (too few or too many options, an answer
    index outside them) is one error line naming the question."""
    options = [str(option).strip() for option in options]
    if not 2 <= len(options) <= len(LETTERS):
        raise UserError(f"{row_id}: {len(options)} options (2 to {len(LETTERS)} are supported)")
    if not 0 <= answer_index < len(options):
        raise UserError(f"{row_id}: answer index {answer_index} is outside its {len(options)} options")
    return {"id": row_id, "problem": str(question).strip(), "options": options, "options_text": options_text(options),
            "expected_answer": LETTERS[answer_index], **fields}  # fmt: skip


def answer_index(letter: str, row_id: str) -> int:
    """`C` -> 2; anything that is not one capital letter is an error naming the question."""
    letter = str(letter).strip()
    if len(letter) != 1 or letter not in LETTERS:
        raise UserError(f"{row_id}: answer {letter!r} is not an option letter")
    return LETTERS.index(letter)


def csv_records(body: bytes, where: str) -> list[list[str]]:
    """Every record of a UTF-8 CSV file (quoted fields may span lines); a file that is not CSV is one error."""
    try:
        return list(csv.reader(io.StringIO(body.decode("utf-8-sig"), newline="")))
    except (UnicodeDecodeError, csv.Error) as error:
        raise UserError(f"{where}: not a UTF-8 CSV file ({error})") from None


def csv_dicts(body: bytes, where: str, required: tuple[str, ...]) -> list[dict[str, str]]:
    """The records of a CSV file with a header row, as dicts; the `required` columns must be in the header."""
    records = csv_records(body, where)
    header = records[0] if records else []
    missing = [name for name in required if name not in header]
    if missing:
        raise UserError(f"{where}: no column {missing[0]!r} in the CSV header (columns: {', '.join(header)})")
    return [dict(zip(header, record, strict=False)) for record in records[1:] if any(record)]


def hf_headers() -> dict[str, str]:
    """The Hugging Face hub's Authorization header when $HF_TOKEN is set (gated sets need it, the rest accept it)."""
    token = os.environ.get(HF_TOKEN_ENV, "").strip()
    return {"Authorization": f"Bearer {token}"} if token else {}
