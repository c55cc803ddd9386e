"""Graders: how one generated answer is judged against the expected one, registered by name.

A `Grader` turns (generation, expected answer) into the fields it adds to the row and declares the metric
keys it reports: boolean row fields that `summarize` turns into accuracies (the first is the headline column
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


@dataclass(frozen=True)
class Grader:
    name: str
    description: str
    metric_keys: tuple[str, ...]  # boolean row fields it adds; the first is the headline accuracy
    # (generation or None, expected answer, options) -> the fields added to the row, in output order
    grade: Callable[[str | None, str, GradeOptions], dict[str, Any]]

    @property
    def headline_key(self) -> str:
        return self.metric_keys[0]


GRADERS: Registry[Grader] = Registry("grader", package=__name__)
