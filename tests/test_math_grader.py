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

from skills_cli.evaluation.graders import GRADERS, GradeOptions
from skills_cli.evaluation.graders.math import GradeResult, extract_answer, grade, math_equal
from skills_cli.evaluation.graders.math.extract import Extraction, extract_with_path

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
    [None, "", "no box here", "truncated \\boxed{\\frac{1}{2}", "the answer is 5, wait \\boxed{", 42, b"\\boxed{1}",
     "AZYUK2A", "The answer is that the sequence diverges as the terms grow without bound."],
)  # fmt: skip
def test_extract_returns_none_without_an_answer(text):
    assert extract_with_path(text) == extract_with_path(None)
    assert extract_answer(text) is None


# Without a box: the path that decided, and the answer it found.
@pytest.mark.parametrize(
    "text, answer, path",
    [
        ("\\boxedsomething{3}", "\\boxedsomething{3}", "whole_output"),  # not a box command
        ("We get \\boxed{1}, \\boxed{2} and \\boxed{3}", "1, 2, 3", "boxed"),  # adjacent boxes: one answer
        ("\\boxed{(2, 2)} \\quad \\text{and} \\quad \\boxed{(6, 2)}", "(2, 2), (6, 2)", "boxed"),
        ("first \\boxed{1}, then we see that it is wrong: \\boxed{2}", "2", "boxed"),
        ("\\boxed{5}\n\\boxed{5}", "5", "boxed"),
        ("so $\\boxed{255}$. Final Answer: The final answer is $10,455$. I hope so.", "10,455", "answer_phrase"),
        ("so \\boxed{12}; the answer is 13", "12", "boxed"),  # only a *final* answer phrase overrides a box
        ("\\boxed{12} is the final answer, I hope it is correct.", "12", "boxed"),
        ("the answer is 9", "9", "answer_phrase"),
        ("The final answer is $9$.", "9", "answer_phrase"),
        ("Final Answer: The final answer is 34. I hope it is correct.", "34", "answer_phrase"),
        ("**Answer:** 12", "12", "answer_phrase"),
        ("**Final Answer**\n\n$\\frac{3}{4}$", "\\frac{3}{4}", "answer_phrase"),
        ("Final Answer: The largest $n$ is 34.", "34", "answer_phrase"),
        ("Final Answer: Jane started growing Sphere 3 hours ago. I hope it is correct.", "3", "answer_phrase"),
        ("The answer is 5, since 2 + 3 = 5.", "5", "answer_phrase"),
        ("So the answer is therefore $y = 2x + 3$.", "y = 2x + 3", "answer_phrase"),
        ("The answer is 18. Then 3 more steps give 21 in the wrong branch, 7, 8.", "18", "answer_phrase"),
        ("Answer: (B)", "(B)", "answer_phrase"),
        ("She pays 3 * 6 = 18 dollars.\n#### 18", "18", "answer_phrase"),
        ("we get $9$", "9", "last_math_span"),
        ("thus \\(9\\)", "9", "last_math_span"),
        ("Therefore \\[ 9 \\]", "9", "last_math_span"),
        ("So $x \\geq 5$.", "x \\geq 5", "last_math_span"),
        ("We compute $100 - 72 = 28$.", "28", "last_math_span"),
        ("So $7 = 11a + c$.", "7 = 11a + c", "last_math_span"),  # an equation, not a computation
        ("It is \\begin{pmatrix} 1 & 2 \\end{pmatrix}.", "\\begin{pmatrix} 1 & 2 \\end{pmatrix}", "last_math_span"),
        ("Answer $ \\frac{1}{2} \\$ = \\frac{10}{9} $", "\\frac{10}{9}", "last_math_span"),
        ("He pays $5 and then $10 more, 15 in total.", "15", "last_number"),  # `$5 and then $` is not math
        ("the number is not 10, it is 1,000.99 (rounded).", "1,000.99", "last_number"),
        ("so x = \\sqrt{51} here", None, "none"),  # 51 is inside an expression, not a number of its own
        ("we get 1+2i in the end", None, "none"),
        ("\\sqrt{51}", "\\sqrt{51}", "whole_output"),
        ("(3, 4]", "(3, 4]", "whole_output"),
        ("\\text{Evelyn}", "\\text{Evelyn}", "whole_output"),
        ("yes", None, "none"),  # a bare word is not taken for an answer
        ("We have $d = 90/n$ and there are 12 such sequences.", "12", "last_number"),  # said after the last span
        ("so the probability is 2/3 overall", "2/3", "last_number"),
        ("so the error increases by 100%.", "100%", "last_number"),
    ],
)  # fmt: skip
def test_extract_without_a_box(text, answer, path):
    assert extract_with_path(text) == Extraction(answer, path)


@pytest.mark.parametrize("opener", ["\\(", "\\[", "$$", "\\begin{pmatrix}", "\\boxed{"])
def test_extraction_of_unclosed_delimiters_is_linear(opener):
    # A regex with lazy bodies spent seconds on 20,000 characters of `\(` (quadratic); a truncated output may be long.
    start = time.monotonic()
    assert grade(opener * 30_000 + " 7", "7").correct in (True, False)
    assert time.monotonic() - start < 5.0


def test_grade_records_the_extraction_path():
    assert grade("\\boxed{4}", "4").extraction == "boxed"
    assert grade("The answer is 4.", "4").extraction == "answer_phrase"
    assert grade("nothing", "4").extraction == "none"
    assert grade("x is 4", "4", regex=r"is (\d)").extraction == "regex"
    row_fields = GRADERS.get("math").grade("So the answer is $4$.", "4", GradeOptions())
    assert row_fields["extraction"] == "answer_phrase" and row_fields["symbolic_correct"] is True


def test_extract_regex_fallback_takes_last_match():
    text = "The answer is 12.\nOn reflection the answer is 15."
    assert extract_answer(text, regex=r"answer is\s*([^\n.]+)") == "15"
    assert extract_answer("\\boxed{3} and the answer is 4", regex=r"answer is\s*(\d+)") == "3"  # a box wins
    assert extract_answer("The final answer is 7", regex=r"final answer is \d") == "final answer is 7"
    assert extract_answer("nothing", regex=r"answer is\s*(\d+)") is None


@pytest.mark.parametrize("regex", ["(unclosed", "[", "*"])
def test_extract_bad_regex_falls_back(regex):
    assert extract_answer("the answer is 4", regex=regex) == "4"
    assert extract_answer("nothing to see", regex=regex) is None


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
