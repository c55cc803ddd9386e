"""Grade math answers: pull the final answer out of a model's output and decide whether it equals the expected one.

Public API (other code depends on these names):

- `extract_answer(text, regex=None)`: the final answer of a model output, or None; never raises. In order
  (`extract.py`): the last `\\boxed{...}` (`\\fbox`, `\\boxed 5`; boxes separated only by `,`/`and` are one
  answer; a later "final answer is ..." overrides it; an unclosed last box is no answer); else group 1 of the last
  match of `regex`; else what follows the last final-answer phrase ("the answer is", "Final Answer:",
  "**Answer:**"); else the later of the last math span (`$..$`, `\\(..\\)`, `\\[..\\]`, a bare matrix) and the
  last number standing alone. `extract_with_path` also names the rule: boxed | regex | answer_phrase |
  last_math_span | last_number | none.
- `math_equal(predicted, expected, timeout=2.0)`: True when the two answers are mathematically the same.
- `grade(text, expected, regex=None, timeout=2.0)`: both of the above, as a `GradeResult` whose `error` says when a
  timeout, a refused input or an exception made the grade "incorrect" (graded answers never raise), and whose
  `extraction` names the rule that found the answer.

The `math` grader of the registry wraps `grade`: it adds `predicted_answer`, `symbolic_correct`, `grading_error`
and `extraction` to a row, and reports `symbolic_correct`.

Policy (a wrong answer must never pass; when in doubt, incorrect; tests/grader_cases.py fixes each case):
`0.5` = `\\frac12` = `1/2`; a decimal equals a fraction only to 1e-6 (`0.33` is not 1/3); `10%` equals 0.1 and 10
(the question may ask for the percent or the fraction), not 1; interval brackets must agree; a set `\\{1,2\\}`
and a bare list `2, 3` of solutions are unordered, a tuple `(2,3)` is ordered; `(1,000)` is a tuple, `1,000` and
`1{,}000` are 1000; trailing units (`5\\text{ cm}`) and degrees (`90^\\circ` = 90, not pi/2) are dropped;
`x = 5` = 5 when only one side names a variable; `-0` = 0; exact irrational forms (pi, radicals) match only
their exact equals or decimals to 1e-8; matrices entry by entry, bracket style ignored. Answers that are not
mathematics never reach sympy (`textual.py`): times and ratios equal only part by part (`3:2` is not 1.5 nor
`6:4`; `3:15 AM` is not `3:15 PM`), words only as words, case-insensitively.

How two answers are compared, cheapest stage first; each stage either decides or hands the pair on (one module
per stage, `compare.py` runs them in order):

1. Normalized strings (`normalize.py`); answers that are not mathematics are compared as text (`textual.py`).
   Formatting noise is removed from both sides (`$`, `\\left`/`\\right`,
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
EXTRACTION_KEY = "extraction"


def grade_fields(generation: str | None, expected: str, options: GradeOptions) -> dict[str, Any]:
    result = grade(generation, expected, regex=options.regex, timeout=options.timeout)
    return {PREDICTED_ANSWER_KEY: result.predicted_answer, SYMBOLIC_CORRECT_KEY: result.correct,
            GRADING_ERROR_KEY: result.error, EXTRACTION_KEY: result.extraction}  # fmt: skip


MATH_GRADER = GRADERS.register(
    Grader(
        name="math",
        description="Final \\boxed{} answer (regex fallback) compared with the expected one, numerically, "
        "structurally, by evaluation and symbolically.",
        metric_keys=(SYMBOLIC_CORRECT_KEY,),
        grade=grade_fields,
    )
)
