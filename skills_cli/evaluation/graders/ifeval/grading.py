"""Grading IFEval responses: every instruction of a row, strictly and loosely, and the instruction-level figures.

Strict: the response as it is follows the instruction (an empty or blank response follows none). Loose: any of
its variants does, which forgives a preamble line ("Sure, here it is:"), a closing remark, and markdown
emphasis: the response itself; without its first line; without its last line; without both; and each of those
four with every `*` removed (the IFEval paper's loose criterion). A prompt is followed when all its
instructions are.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from skills_cli.evaluation.graders import GRADING_ERROR_KEY, PREDICTED_ANSWER_KEY
from skills_cli.evaluation.graders.ifeval.verifiers import VERIFIERS, InstructionArgumentError

PROMPT_STRICT_KEY = "prompt_strict_accuracy"
PROMPT_LOOSE_KEY = "prompt_loose_accuracy"
FOLLOW_STRICT_KEY = "follow_instruction_list_strict"
FOLLOW_LOOSE_KEY = "follow_instruction_list_loose"
INSTRUCTION_STRICT_KEY = "instruction_strict_accuracy"
INSTRUCTION_LOOSE_KEY = "instruction_loose_accuracy"


class RowError(ValueError):
    """The row does not say which instructions to check (no list, or kwargs that do not match it)."""


@dataclass(frozen=True)
class Verdict:
    strict: bool
    loose: bool
    error: str | None = None


def loose_variants(response: str) -> list[str]:
    """The texts the loose criterion tries, the response first, without repeats or blank ones."""
    lines = response.split("\n")
    trimmed = [response, "\n".join(lines[1:]).strip(), "\n".join(lines[:-1]).strip(), "\n".join(lines[1:-1]).strip()]
    variants = trimmed + [variant.replace("*", "") for variant in trimmed]
    return [variant for variant in dict.fromkeys(variants) if variant.strip()]


def judge(instruction_id: str, kwargs: Mapping[str, Any], response: str) -> Verdict:
    """Whether the response follows one instruction, strictly and loosely; never raises."""
    if instruction_id not in VERIFIERS:
        return Verdict(False, False, f"unknown instruction id {instruction_id!r}")
    check = VERIFIERS.get(instruction_id).check
    try:
        followed = check(response, kwargs)  # run even on a blank response: bad arguments must show
        strict = followed and bool(response.strip())
        loose = strict or any(check(variant, kwargs) for variant in loose_variants(response)[1:])
    except InstructionArgumentError as error:
        return Verdict(False, False, f"{instruction_id}: {error}")
    except Exception as error:  # a verifier's own failure on odd text: this sample's error, not the run's
        return Verdict(False, False, f"{instruction_id}: {type(error).__name__}: {error}")
    return Verdict(strict, loose)


def instructions_of(row: dict) -> list[tuple[str, Mapping[str, Any]]]:
    """(instruction id, its kwargs) for each instruction of the row; kwargs may be absent, None or hold Nones."""
    ids = row.get("instruction_id_list")
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
        raise RowError("the row has no instruction_id_list (a non-empty list of instruction ids)")
    kwargs_list = row.get("kwargs")
    kwargs_list = [None] * len(ids) if kwargs_list is None else kwargs_list
    if not isinstance(kwargs_list, list) or len(kwargs_list) != len(ids):
        raise RowError(f"the row's kwargs must be a list of {len(ids)} objects, one per instruction")
    if not all(kwargs is None or isinstance(kwargs, dict) for kwargs in kwargs_list):
        raise RowError("every entry of the row's kwargs must be an object or null")
    return [(i, kwargs or {}) for i, kwargs in zip(ids, kwargs_list, strict=True)]


def grade_row(row: dict, generation_key: str) -> dict[str, Any]:
    """The fields the ifeval grader adds to one row."""
    generation = row.get(generation_key)
    response = generation if isinstance(generation, str) else ""
    try:
        verdicts = [judge(instruction_id, kwargs, response) for instruction_id, kwargs in instructions_of(row)]
    except RowError as error:
        verdicts, row_error = [], str(error)
    else:
        row_error = "; ".join(verdict.error for verdict in verdicts if verdict.error) or None
    return {
        PREDICTED_ANSWER_KEY: response if response.strip() else None,
        PROMPT_STRICT_KEY: bool(verdicts) and all(verdict.strict for verdict in verdicts),
        PROMPT_LOOSE_KEY: bool(verdicts) and all(verdict.loose for verdict in verdicts),
        FOLLOW_STRICT_KEY: [verdict.strict for verdict in verdicts],
        FOLLOW_LOOSE_KEY: [verdict.loose for verdict in verdicts],
        GRADING_ERROR_KEY: row_error,
    }


def instruction_accuracies(problem_rows: list[list[dict]]) -> dict[str, float]:
    """Instruction-level strict and loose accuracy (percent): followed instructions over all instructions, pooled
    over every sample of every seed (with seeds of equal size, the mean of the per-seed figures)."""
    rows = [row for rows in problem_rows for row in rows]
    figures = {}
    for name, key in ((INSTRUCTION_STRICT_KEY, FOLLOW_STRICT_KEY), (INSTRUCTION_LOOSE_KEY, FOLLOW_LOOSE_KEY)):
        verdicts = [bool(verdict) for row in rows for verdict in row.get(key) or []]
        if verdicts:
            figures[name] = 100.0 * sum(verdicts) / len(verdicts)
    return figures
