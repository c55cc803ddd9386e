"""Grade code answers: run each answer with its benchmark's tests in the sandbox service.

The `code` grader is a row grader (`needs_sandbox`). For each row it:

1. extracts the code (`extract.py`): the last ```python block (also ```py, ```python3), else the last fenced block
   of any language, else the raw text; only what follows the last `</think>` counts;
2. builds the test program (`programs.py`) from the row's own fields, in one of two shapes. This is the seam
   between benchmarks and this grader: a benchmark (built-in or plug-in) only has to give its rows one shape,
   and names those fields in its `row_fields`, so the grader needs no benchmark name and no code per benchmark.
   - check-function (HumanEval): `prompt` (signature and docstring), `test` (defines `check(candidate)`),
     `entry_point`; the program is prompt + answer, then `test`, then `check(<entry_point>)`. An answer that
     is only the function's body continues the prompt; a whole function is put after it (keeping the prompt's
     imports and helpers).
   - assert-list (MBPP): `test_list` (assert statements), optional `test_imports` (lines put before the answer)
     and `test_setup_code` (put after it, before the asserts).
   The answer's `from __future__` imports are moved to the top; its `if __name__ == "__main__":` block does
   not run (as in the reference harnesses, which import the answer); the program ends with exit status 86
   (`programs.PASSED_EXIT_CODE`), so an answer that exits early (`sys.exit(0)`) does not pass;
3. compiles the answer here (a syntax error needs no run), then runs the program in the sandbox, with at most
   `GradeOptions.sandbox_workers` runs in flight, each under `RUN_LIMITS` (20 s, 1 GiB).

Fields added to each row: `predicted_answer` (the extracted code, None when there is none), `passed_tests` (the
headline: the program ran to its end), `error_kind` (None, or one of `verdict.ERROR_KINDS`: no_code,
syntax_error, timeout, wrong_answer (a failed assert), runtime_error (any other exception or early exit),
memory, output_limit, sandbox_error, test_error), `execution_error` (a short excerpt: the message and the tail
of stderr) and `grading_error` (set for rows that could not be graded: malformed tests (test_error) or a failed
sandbox (sandbox_error); these also count as not passed). One bad answer or one malformed row never stops the
grading; a sandbox that cannot be reached, or refuses our key, does (one error line).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from skills_cli.common.errors import UserError
from skills_cli.evaluation.graders import GRADERS, GRADING_ERROR_KEY, PREDICTED_ANSWER_KEY, GradeOptions, Grader
from skills_cli.evaluation.graders.code.extract import extract_code
from skills_cli.evaluation.graders.code.verdict import ERROR_KINDS, Run, Verdict, judge
from skills_cli.sandbox.client import Limits, SandboxClient, SandboxError

__all__ = ["CODE_GRADER", "ERROR_KINDS", "PASSED_TESTS_KEY", "RUN_LIMITS", "extract_code", "grade_code_rows"]

PASSED_TESTS_KEY = "passed_tests"
ERROR_KIND_KEY = "error_kind"
EXECUTION_ERROR_KEY = "execution_error"
# The slowest reference solution (MBPP 123, amicable numbers below 10,000) needs about 7 s of CPU on an idle core;
# 20 s leaves it room on a busy node. A hung answer costs this much of one worker.
RUN_LIMITS = Limits(timeout=20.0, memory_mb=1024)
SANDBOX_WAIT = 120.0  # seconds to wait for a sandbox that is still starting


def grade_code_rows(
    rows: list[dict], generation_key: str, options: GradeOptions, limits: Limits = RUN_LIMITS
) -> list[dict[str, Any]]:
    """The fields of every row, in row order (see the module docstring)."""
    run = sandbox_runner(options, limits) if any(extract_code(row.get(generation_key)) for row in rows) else None
    with ThreadPoolExecutor(max_workers=max(1, options.sandbox_workers)) as pool:
        verdicts = list(pool.map(lambda row: judge(row, row.get(generation_key), run), rows))
    return [row_fields(verdict) for verdict in verdicts]


def sandbox_runner(options: GradeOptions, limits: Limits) -> Run:
    """A function running one program in the sandbox (`options.sandbox_url`, else the job's own from the
    environment); an unreachable sandbox or a refused key is one error line, not a failed sample per row."""
    try:
        client = SandboxClient(options.sandbox_url)
        client.wait_until_ready(timeout=SANDBOX_WAIT)
    except SandboxError as error:
        raise UserError(f"code grader: {error}") from None

    def run(source: str):
        try:
            return client.run(source, limits)
        except SandboxError as error:
            raise UserError(f"code grader: {error}") from None

    return run


def row_fields(verdict: Verdict) -> dict[str, Any]:
    return {PREDICTED_ANSWER_KEY: verdict.code, PASSED_TESTS_KEY: verdict.passed, ERROR_KIND_KEY: verdict.error_kind,
            EXECUTION_ERROR_KEY: verdict.excerpt, GRADING_ERROR_KEY: verdict.grading_error}  # fmt: skip


CODE_GRADER = Grader(
    name="code",
    description="Runs the extracted code with the benchmark's tests in the sandbox; passed_tests when all pass.",
    metric_keys=(PASSED_TESTS_KEY,),
    grade_rows=grade_code_rows,
    majority_voting=False,  # two right programs rarely match as text
    needs_sandbox=True,
)
GRADERS.register(CODE_GRADER)
