"""The math grader against real answers: the equivalence suite (public graders' cases, our own, MATH-500), boxed
extraction, time limits on pathological input, use from worker threads, and a fuzz loop that must never raise."""

from __future__ import annotations

import importlib
import random
import subprocess
import sys
import threading
import time

import pytest
from grader_cases import CASES, GraderCase, math500_cases

from skills_cli.evaluation.graders.math import GradeResult, extract_answer, grade, math_equal

MATH500_CASES = math500_cases()


def _verdict(case: GraderCase) -> bool:
    if case.is_output:
        return grade(case.predicted, case.expected).correct
    return math_equal(case.predicted, case.expected)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_equivalence_suite(case: GraderCase):
    assert _verdict(case) is case.equal


@pytest.mark.skipif(not MATH500_CASES, reason="MATH-500 data not found (set SKILLS_BENCHMARKS_DIR)")
@pytest.mark.parametrize("case", MATH500_CASES, ids=[case.source for case in MATH500_CASES])
def test_math500_answers(case: GraderCase):
    assert _verdict(case) is case.equal


def test_suite_is_broad():
    sources = {case.source.split(":")[0] for case in CASES}
    assert {"NeMo-Skills", "hendrycks-MATH", "Qwen2.5-Math", "Math-Verify", "own"} <= sources
    assert len(CASES) >= 400
    assert sum(not case.equal for case in CASES) >= 100


# -- extraction ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, expected",
    [
        ("The answer is $\\boxed{42}$.", "42"),
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("nested: \\boxed{\\frac{\\sqrt{3}}{\\left(2\\right)}}", "\\frac{\\sqrt{3}}{\\left(2\\right)}"),
        ("set: \\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),
        ("first \\boxed{1} then \\boxed{2}", "2"),
        ("\\boxed{\\boxed{7}}", "7"),
        ("no braces \\boxed 5.", "5"),
        ("no braces \\boxed 12$ and more", "12"),
        ("\\fbox{9}", "9"),
        ("\\boxed{1} and then \\fbox{3}", "3"),
        ("\\boxed{ 8 }", "8"),
        ("\\boxed{}", ""),
        ("\\boxed{\\text{(C)}}", "\\text{(C)}"),
    ],
)
def test_extract_boxed(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    "text",
    [None, "", "no box here", "truncated \\boxed{\\frac{1}{2}", "\\boxedsomething{3}", 42, b"\\boxed{1}"],
)
def test_extract_returns_none_without_an_answer(text):
    assert extract_answer(text) is None


def test_extract_regex_fallback_takes_last_match():
    text = "The answer is 12.\nOn reflection the answer is 15."
    assert extract_answer(text, regex=r"answer is\s*([^\n.]+)") == "15"
    assert extract_answer("\\boxed{3} and the answer is 4", regex=r"answer is\s*(\d+)") == "3"  # a box wins
    assert extract_answer("The final answer is 7", regex=r"final answer is \d") == "final answer is 7"
    assert extract_answer("nothing", regex=r"answer is\s*(\d+)") is None


@pytest.mark.parametrize("regex", ["(unclosed", "[", "*"])
def test_extract_bad_regex_returns_none(regex):
    assert extract_answer("the answer is 4", regex=regex) is None


def test_grade_reports_answer_and_verdict():
    assert grade("so $\\boxed{\\dfrac{1}{2}}$", "0.5") == GradeResult("\\dfrac{1}{2}", True, None)
    assert grade("so $\\boxed{3}$", "4") == GradeResult("3", False, None)
    assert grade("no answer", "4") == GradeResult(None, False, None)
    assert grade("the answer is 4", "4", regex=r"answer is (\d+)") == GradeResult("4", True, None)


def test_non_string_inputs_are_graded_not_raised():
    assert math_equal(5, 5.0) is True
    assert math_equal(None, "5") is False
    assert math_equal("5", None) is False
    assert grade(None, "5") == GradeResult(None, False, None)


# -- time limits --------------------------------------------------------------------------------------------------
# sympy spends >10 s on this integral; it is beyond the fast evaluator, so it reaches the symbolic worker.
SLOW_FOR_SYMPY = "\\int_0^1 e^{-x^2} \\sin(x^3) dx"


def test_slow_symbolic_check_times_out_and_reports_it():
    start = time.monotonic()
    result = grade(f"\\boxed{{{SLOW_FOR_SYMPY}}}", "0.3", timeout=1.0)
    elapsed = time.monotonic() - start
    assert result.correct is False
    assert result.error is not None and result.error.startswith("timeout")
    assert elapsed < 5.0


@pytest.mark.parametrize(
    "predicted",
    [
        "9^{9^{9}}",
        "2^{3^{4^{5}}}",
        "2^{1234567}",
        "12345!",
        "\\frac{1}{\\frac{1}{\\frac{1}{\\frac{1}{\\frac{1}{\\frac{1}{\\frac{1}{\\frac{1}{\\frac{1}{\\frac{1}{\\frac{1}{"
        "\\frac{1}{\\frac{1}{x+\\lfloor y \\rfloor}}}}}}}}}}}}}",
        "(" * 3000 + "1" + ")" * 3000,
        "x^{2}+" * 500 + "1",
    ],
)
def test_explosive_inputs_return_false_quickly(predicted):
    start = time.monotonic()
    assert math_equal(predicted, "\\lfloor 7 \\rfloor") is False
    assert time.monotonic() - start < 5.0


def test_power_tower_is_refused_with_an_error():
    result = grade("\\boxed{9^{9^{9}}}", "\\lfloor 3 \\rfloor")
    assert result.correct is False and result.error == "refused: numeric power tower"


def test_works_from_non_main_threads():
    outcomes: dict[str, object] = {}

    def run(name, text, expected, timeout=2.0):
        outcomes[name] = grade(text, expected, timeout=timeout)

    threads = [
        threading.Thread(target=run, args=("fast", "\\boxed{\\frac{\\sqrt2}{2}}", "\\frac{1}{\\sqrt{2}}")),
        # what is tested is threading, not speed: sympy's sum took over 2 s on the 2-core machine under load
        threading.Thread(target=run, args=("symbolic", "\\boxed{\\sum_{k=1}^{n} k}", "\\frac{n(n+1)}{2}", 10.0)),
        threading.Thread(target=run, args=("slow", f"\\boxed{{{SLOW_FOR_SYMPY}}}", "0.3", 1.0)),
    ]
    start = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert time.monotonic() - start < 20.0
    assert outcomes["fast"].correct is True
    assert outcomes["symbolic"].correct is True, outcomes["symbolic"]
    assert outcomes["slow"].correct is False and outcomes["slow"].error is not None


def test_importing_the_grader_is_cheap():
    code = (
        "import sys, skills_cli.evaluation.graders.math; "
        "print(sorted(m for m in ('sympy', 'math_verify', 'latex2sympy2_extended') if m in sys.modules))"
    )
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.strip() == "[]"
    assert importlib.import_module("skills_cli.evaluation.graders.math").__doc__.lstrip().startswith("Grade math")


# -- fuzz: random junk must grade (as anything) without raising ---------------------------------------------------
FRAGMENTS = [
    "\\frac{",
    "}{",
    "}",
    "{",
    "\\sqrt",
    "[",
    "]",
    "(",
    ")",
    "\\left(",
    "\\right)",
    "^",
    "_",
    "x",
    "y",
    "2",
    "10",
    "-",
    "+",
    "=",
    ",",
    "\\pi",
    "\\infty",
    "\\cup",
    "\\{",
    "\\}",
    "\\pm",
    "\\boxed{",
    "\\text{",
    "cm",
    "%",
    "\\%",
    ".",
    "\\begin{pmatrix}",
    "\\end{pmatrix}",
    "&",
    "\\\\",
    "!",
    "|",
    "i",
    "e",
    "\\sin",
    "\\log_",
    "\\cdot",
    "$",
    "\\le",
    "<",
    ">",
    "\\approx",
    "0.5",
    "1,000",
    " and ",
    "\\dfrac",
    "\\!",
    "\\,",
    "\\lfloor",
    "'",
    "\\",
    "9^{9^9}",
]


REGEXES = [None, r"(\d+)", r"answer is (.*)", r"\d+", "(unclosed", r"(a)|(b)"]


def _random_fragment_string(rng: random.Random) -> str:
    return "".join(rng.choice(FRAGMENTS) for _ in range(rng.randint(0, 12)))


def _random_characters(rng: random.Random) -> str:
    return "".join(chr(rng.randint(1, 0x2FF)) for _ in range(rng.randint(0, 30)))


def test_fuzz_never_raises():
    rng = random.Random(1234)
    start = time.monotonic()
    for _ in range(1500):
        make = _random_fragment_string if rng.random() < 0.7 else _random_characters
        predicted, expected = make(rng), make(rng)
        assert isinstance(math_equal(predicted, expected, timeout=0.5), bool)
        regex = rng.choice(REGEXES)
        result = grade(f"text \\boxed{{{predicted}}} {predicted}", expected, regex=regex, timeout=0.5)
        assert isinstance(result.correct, bool)
        assert isinstance(extract_answer(predicted, regex=regex), (str, type(None)))
    assert time.monotonic() - start < 120
