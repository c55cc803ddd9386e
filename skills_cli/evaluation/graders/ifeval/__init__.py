"""IFEval (Zhou et al. 2023, arXiv 2311.07911): verifiable instructions ("no commas", "at least 300 words",
"wrap the answer in JSON"), checked by our own verifiers, one per instruction id.

The `ifeval` grader is a row grader: it reads `instruction_id_list` and `kwargs` from each row and adds

- `predicted_answer`: the response (None when it is empty or blank, which the metrics count as `no_answer`);
- `prompt_strict_accuracy` (the headline) and `prompt_loose_accuracy`: all the prompt's instructions followed;
- `follow_instruction_list_strict` / `_loose`: one boolean per instruction, in the row's order;
- `grading_error`: what could not be checked (an unknown instruction id, a missing or malformed argument); such
  an instruction counts as not followed, and the other instructions of the row are still checked.

Its `summary_metrics` turns the per-instruction lists into `instruction_strict_accuracy` and
`instruction_loose_accuracy`. Strict and loose are defined in `grading`, the text units in `text`, the
verifiers in `instructions/` (registry: `verifiers.VERIFIERS`).
"""

from __future__ import annotations

from skills_cli.evaluation.graders import GRADERS, GradeOptions, Grader
from skills_cli.evaluation.graders.ifeval.grading import (
    PROMPT_LOOSE_KEY,
    PROMPT_STRICT_KEY,
    grade_row,
    instruction_accuracies,
)


def grade_rows(rows: list[dict], generation_key: str, options: GradeOptions) -> list[dict]:
    return [grade_row(row, generation_key) for row in rows]


IFEVAL_GRADER = GRADERS.register(
    Grader(
        name="ifeval",
        description="Verifiable instructions (IFEval): prompt- and instruction-level accuracy, strict and loose.",
        metric_keys=(PROMPT_STRICT_KEY, PROMPT_LOOSE_KEY),
        grade_rows=grade_rows,
        summary_metrics=instruction_accuracies,
        majority_voting=False,  # responses are free text
    )
)
