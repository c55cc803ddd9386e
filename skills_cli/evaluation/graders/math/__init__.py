"""Grade math answers: pull the final answer out of a model's output and decide whether it equals the expected one.

Public API (other code depends on these names):

- `extract_answer(text, regex=None)`: the content of the last `\\boxed{...}` (also `\\boxed 5` and `\\fbox{...}`),
  with nested braces matched; else group 1 of the last match of `regex`; else None. Never raises.
- `math_equal(predicted, expected, timeout=2.0)`: True when the two answers are mathematically the same.
- `grade(text, expected, regex=None, timeout=2.0)`: both of the above, as a `GradeResult` whose `error` says when a
  timeout, a refused input or an exception made the grade "incorrect" (graded answers never raise).

The `math` grader of the registry wraps `grade`: it adds `predicted_answer`, `symbolic_correct` and
`grading_error` to a row, and reports `symbolic_correct`.

How two answers are compared, cheapest stage first; each stage either decides or hands the pair on (one module
per stage, `compare.py` runs them in order):

1. Normalized strings (`normalize.py`). Formatting noise is removed from both sides (`$`, `\\left`/`\\right`,
   `\\dfrac`, spacing commands, `\\text{}` wrappers and trailing units, degrees, currency, thousands separators,
   trailing dots).
2. Multiple-choice letters (`\\text{(C)}` vs `C`).
3. Numbers (`numeric.py`): integers, decimals, fractions, mixed numbers, percents, scientific notation, compared
   exactly as rationals; a decimal approximation is accepted within a relative 1e-6.
4. Structures (`structures.py`, `relations.py`): tuples and intervals element-wise in order (bracket kinds must
   agree), sets and bare lists of solutions (`1, 2` vs `2, 1`, `1 \\pm \\sqrt{2}`) as unordered collections,
   unions of intervals, matrices; `x = 3` vs `3`; equations and inequalities up to a constant factor.
5. Expressions (`expression_parser.py`, `expression.py`): a small LaTeX evaluator (pure Python, complex floats)
   computes both sides at a few fixed pseudo-random points of their variables; agreement to 1e-8 decides. This
   settles radicals, pi expressions, complex numbers and polynomial identities in tens of microseconds, without
   sympy.
6. Symbolic fallback (`symbolic.py`), only for notation the evaluator does not know (sums, floors, primes, ...):
   math-verify's `parse` + `verify` (sympy), in a worker process, under a time limit.

Why a worker process: sympy can run for minutes (`\\frac` towers, `9^{9^{9}}`, long polynomials), and math-verify's
own timeouts use SIGALRM, which only works in the main thread and cannot interrupt a long C-level big-integer
operation. A child process can always be killed, from any thread. The worker (`python symbolic_worker.py
--symbolic-worker`) is started on first need, answers one JSON line per request, and is killed and replaced when
a request overruns; calls from several threads take turns. One comparison never spends more than `timeout`
seconds of symbolic work in total (the worker's start-up, paid once, is not counted). Inputs that are obviously
explosive (power towers, huge exponents or factorials, very long expressions) are refused before any symbolic
work. A timeout, a refusal or an exception grades the pair as incorrect and is reported in `GradeResult.error`.

sympy and math_verify are imported only inside the worker, so importing this package stays cheap.
"""

from __future__ import annotations

from typing import Any

from skills_cli.evaluation.graders import GRADERS, GRADING_ERROR_KEY, PREDICTED_ANSWER_KEY, GradeOptions, Grader
from skills_cli.evaluation.graders.math.compare import GradeResult, grade, math_equal
from skills_cli.evaluation.graders.math.extract import extract_answer

__all__ = ["MATH_GRADER", "SYMBOLIC_CORRECT_KEY", "GradeResult", "extract_answer", "grade", "math_equal"]

SYMBOLIC_CORRECT_KEY = "symbolic_correct"


def grade_fields(generation: str | None, expected: str, options: GradeOptions) -> dict[str, Any]:
    result = grade(generation, expected, regex=options.regex, timeout=options.timeout)
    return {PREDICTED_ANSWER_KEY: result.predicted_answer, SYMBOLIC_CORRECT_KEY: result.correct,
            GRADING_ERROR_KEY: result.error}  # fmt: skip


MATH_GRADER = GRADERS.register(
    Grader(
        name="math",
        description="Final \\boxed{} answer (regex fallback) compared with the expected one, numerically, "
        "structurally, by evaluation and symbolically.",
        metric_keys=(SYMBOLIC_CORRECT_KEY,),
        grade=grade_fields,
    )
)
