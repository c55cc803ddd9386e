"""Graders: how one generated answer is judged against the expected one, registered by name.

A `Grader` turns (generation, expected answer), or a whole row, into the fields it adds to the row and
declares the metric keys it reports: boolean row fields that `summarize` turns into accuracies (the first is the headline column
of the table). Every grader also adds `predicted_answer` (None when no answer could be extracted, which the
metrics count as `no_answer`) and may add `grading_error`. A benchmark names its grader; built-in graders
are the modules and packages of this folder (`math` now), others come from plugins (see
`skills_cli.common.registry`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from skills_cli.common.registry import Registry

PREDICTED_ANSWER_KEY = "predicted_answer"
GRADING_ERROR_KEY = "grading_error"
DEFAULT_GRADER = "math"  # results of no known benchmark were always graded as math, and still are


@dataclass(frozen=True)
class GradeOptions:
    """Settings of `python -m skills_cli.evaluation.grade` that a grader may use."""

    regex: str | None = None  # fallback answer pattern (math: when there is no \boxed{})
    timeout: float = 2.0  # seconds per expensive check (math: the symbolic one)
    # row graders that execute code: the sandbox service (None: the job's own, from $SKILLS_SANDBOX_PORT) and
    # how many of its runs to keep in flight at once
    sandbox_url: str | None = None
    sandbox_workers: int = 8


# (generation or None, expected answer, options) -> the fields added to the row, in output order
AnswerGrade = Callable[[str | None, str, GradeOptions], dict[str, Any]]
# (every row of one result file, the generation key, options) -> the fields added to each row, in row order
RowsGrade = Callable[[list[dict], str, GradeOptions], list[dict[str, Any]]]
# (graded rows of every problem, one list per problem across seeds) -> further figures of the benchmark
SummaryMetrics = Callable[[list[list[dict]]], dict[str, float]]


@dataclass(frozen=True)
class Grader:
    """An answer grader (`grade`: one generation against the row's `expected_answer`, as math does) or a row
    grader (`grade_rows`: every row at once, reading what it needs from the row: tests, instructions, choices;
    a grader that runs code in the sandbox batches its runs)."""

    name: str
    description: str
    metric_keys: tuple[str, ...]  # boolean row fields it adds; the first is the headline accuracy
    grade: AnswerGrade | None = None
    grade_rows: RowsGrade | None = None
    needs_sandbox: bool = False  # grade_rows executes code in the sandbox service
    # figures that are not an accuracy over rows (IFEval's instruction-level accuracy), shown beside the table
    summary_metrics: SummaryMetrics | None = None
    # whether a vote over predicted answers means anything (numbers, letters: yes; code, free text: no, since
    # two right programs or two compliant responses rarely match as text): majority@k modes or none
    majority_voting: bool = True

    def __post_init__(self) -> None:
        if (self.grade is None) == (self.grade_rows is None):
            raise ValueError(f"grader {self.name!r}: give exactly one of grade (per answer) and grade_rows")

    @property
    def headline_key(self) -> str:
        return self.metric_keys[0]

    @property
    def needs_expected_answer(self) -> bool:
        return self.grade is not None


GRADERS: Registry[Grader] = Registry("grader", package=__name__)
