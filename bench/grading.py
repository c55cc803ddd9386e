"""Math grader benchmark: speed on realistic answers, speed on a hard suite against math-verify, accuracy on the
equivalence suite, as JSON.

    .venv/bin/python bench/grading.py [--data_dir DIR] [--out FILE] [--min_seconds 3] [--cpu 0]
                                      [--only math|graders|sandbox] [--sandbox_workers N]

(a) realistic: answers/s of `grade()` on one core (sched_setaffinity) over model-like outputs built from the
    benchmark files (gsm8k, math500, aime24/25, amc23): the expected answer boxed with formatting noise, ~30% wrong.
    Target >= 2,000 answers/s.
(b) hard suite: answers/s on fractions vs decimals, radicals, tuples, intervals, polynomials, matrices, pi and
    complex expressions, for our `math_equal` and for plain math-verify (`verify(parse(gold), parse(pred))`) in the
    same run and on the same core. Target: ours >= 10x math-verify.
    Also the symbolic fallback's own rate, on pairs only sympy can settle (sums, floors, integrals).
(c) accuracy: ours and math-verify against the expected verdicts of tests/grader_cases.py (public graders' cases,
    our own, MATH-500 self/neighbour pairs), with the cases each gets wrong.
(d) per grader, answers/s through the registry (`GRADERS`): math on the gsm8k + math500 expected answers used as
    generations (boxed; bare, the answer alone; prose, "The answer is $X$.") and on a fixed set of prose and
    non-math answers (times, ratios, words, sentences: the slowest input and how many reached sympy); mcq and
    ifeval on generated responses, each only if its module exists (else a note in the JSON).
(e) sandbox: executions/s of MBPP canonical solutions with their tests (the code grader's program builder when it
    exists) through `SandboxClient`, against a service this script starts (`python -m skills_cli.sandbox.server`).

math-verify gets answers wrapped in `$...$` (as NeMo-Skills passes them) and whole outputs as they are; it runs in
the main thread so its own signal timeouts work. Our grader keeps no caches, so repeated passes redo all the work.
The data directory is --data_dir, else $SKILLS_BENCHMARKS_DIR, else ../shared/data/benchmarks next to the repo.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import sys
import time
from collections import Counter
from fractions import Fraction
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from grader_cases import CASES, load_expected_answers, math500_cases  # noqa: E402

from skills_cli.evaluation.graders import GRADERS, GradeOptions  # noqa: E402
from skills_cli.evaluation.graders.math import compare as math_compare  # noqa: E402
from skills_cli.evaluation.graders.math import grade, math_equal  # noqa: E402

BENCHMARKS = ("gsm8k", "math500", "aime24", "aime25", "amc23")
WRONG_FRACTION = 0.3
REASONING = (
    "Let's work through this carefully. First we set up the quantities given in the problem and write the "
    "relation between them. Substituting the known values, the equation simplifies step by step; we check the "
    "arithmetic twice, since a sign error here would change everything. Combining the terms gives the value "
    "below, and it satisfies the original conditions. "
)


def default_data_dir() -> Path:
    configured = os.environ.get("SKILLS_BENCHMARKS_DIR")
    return Path(configured) if configured else REPO.parent / "shared" / "data" / "benchmarks"


def pin_to_one_cpu(cpu: int) -> list[int]:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})
        return sorted(os.sched_getaffinity(0))
    return []


def answers_per_second(run_once, count: int, min_seconds: float) -> dict:
    """Repeat `run_once` (which grades `count` answers) until `min_seconds` have passed."""
    run_once()  # warm-up: first-call costs (regex compilation, imports) are not what we measure
    passes, wall_start, cpu_start = 0, time.perf_counter(), time.process_time()
    while True:
        run_once()
        passes += 1
        wall = time.perf_counter() - wall_start
        if wall >= min_seconds:
            break
    cpu = time.process_time() - cpu_start
    return {
        "answers_per_s": round(passes * count / wall, 1),
        "answers_per_cpu_s": round(passes * count / cpu, 1) if cpu > 0 else None,
        "answers": count,
        "passes": passes,
        "wall_s": round(wall, 2),
    }


# -- (a) realistic mix --------------------------------------------------------------------------------------------
def integer_noise(answer: str, rng: random.Random) -> str:
    value = int(answer)
    choices = [answer, answer, f"{answer}.", f"\\${answer}", f"{answer} \\text{{ dollars}}", f"x = {answer}"]
    if abs(value) >= 1000:
        choices += [f"{value:,}", f"{value:,}".replace(",", ",\\!")]
    choices.append(f"{answer}.00" if rng.random() < 0.5 else f"\\text{{{answer}}}")
    return rng.choice(choices)


def latex_noise(answer: str, rng: random.Random) -> str:
    choices = [
        answer,
        answer.replace("\\frac", "\\dfrac"),
        answer.replace(" ", ""),
        answer.replace(",", ", ").replace("\\!, ", ",\\!"),
        f"{answer}.",
    ]
    if answer.startswith("(") and answer.endswith(")"):
        choices.append(f"\\left{answer[:-1]}\\right)")
    return rng.choice(choices)


def noisy(answer: str, rng: random.Random) -> str:
    return integer_noise(answer, rng) if answer.lstrip("-").isdigit() else latex_noise(answer, rng)


def wrong_answer(answer: str, others: list[str], rng: random.Random) -> str:
    if answer.lstrip("-").isdigit() and rng.random() < 0.6:
        return str(int(answer) + rng.choice([-10, -2, -1, 1, 2, 3, 10]))
    other = rng.choice(others)
    return other if other.strip() != answer.strip() else f"{answer}+1"


def realistic_pairs(data_dir: Path, rng: random.Random) -> list[tuple[str, str, bool]]:
    pairs = []
    for name in BENCHMARKS:
        answers = load_expected_answers(data_dir / name / "test.jsonl")
        for answer in answers:
            correct = rng.random() >= WRONG_FRACTION
            shown = noisy(answer, rng) if correct else wrong_answer(answer, answers, rng)
            text = f"{REASONING}Therefore, the final answer is $\\boxed{{{shown}}}$."
            pairs.append((text, answer, correct))
    rng.shuffle(pairs)
    return pairs


# -- (b) hard mixed suite -----------------------------------------------------------------------------------------
def fraction_vs_decimal(rng):
    denominator = rng.choice([2, 4, 5, 8, 16, 20, 25, 40, 50, 125])
    numerator = rng.randint(1, 3 * denominator)
    decimal = str(float(Fraction(numerator, denominator)))
    wrong = str(float(Fraction(numerator + 1, denominator)))
    return f"\\frac{{{numerator}}}{{{denominator}}}", decimal, wrong


def radical(rng):
    a, b = rng.randint(2, 9), rng.choice([2, 3, 5, 6, 7, 10, 11])
    kind = rng.randint(0, 2)
    if kind == 0:
        return f"{a}\\sqrt{{{b}}}", f"\\sqrt{{{a * a * b}}}", f"\\sqrt{{{a * a * b + 1}}}"
    if kind == 1:
        return f"\\frac{{\\sqrt{{{b}}}}}{{{b}}}", f"\\frac{{1}}{{\\sqrt{{{b}}}}}", f"\\frac{{1}}{{\\sqrt{{{b + 1}}}}}"
    short = f"\\sqrt{b}" if b < 10 else f"\\sqrt{{{b}}}"  # TeX reads \\sqrt10 as \\sqrt{1}0
    return f"{a}+\\sqrt{{{b}}}", f"{short}+{a}", f"{a}-\\sqrt{{{b}}}"


def tuple_pair(rng):
    a, p, q = rng.randint(-9, 9), rng.randint(1, 9), rng.randint(2, 9)
    return (
        f"\\left( {a}, \\frac{{{p}}}{{{q}}} \\right)",
        f"({a},{p}/{q})",
        f"(\\frac{{{p}}}{{{q}}},{a})" if Fraction(p, q) != a else f"({a},{p + 1}/{q})",
    )


def interval_pair(rng):
    a, b = sorted(rng.sample(range(-20, 20), 2))
    opening, closing = rng.choice("(["), rng.choice(")]")
    flipped = "(" if opening == "[" else "["
    if rng.random() < 0.5:
        gold = f"{opening}{a}, {b}{closing}"
        return gold, f"\\left{opening} {a},{b} \\right{closing}", f"{flipped}{a},{b}{closing}"
    return (
        f"(-\\infty, {a}) \\cup [{b}, \\infty)",
        f"[{b},\\infty)\\cup(-\\infty,{a})",
        f"(-\\infty,{a}] \\cup [{b},\\infty)",
    )


def polynomial(rng):
    a, b = rng.sample([-7, -5, -3, -2, -1, 1, 2, 3, 4, 6], 2)
    expanded = f"x^2 {'+' if a + b >= 0 else '-'} {abs(a + b)}x {'+' if a * b >= 0 else '-'} {abs(a * b)}"
    wrong = f"x^2 {'+' if a + b + 1 >= 0 else '-'} {abs(a + b + 1)}x {'+' if a * b >= 0 else '-'} {abs(a * b)}"
    return f"(x{a:+d})(x{b:+d})", expanded, wrong


def matrix(rng):
    entries = [rng.randint(-9, 9) for _ in range(3)]
    p, q = rng.randint(1, 7), rng.choice([2, 4, 5, 8])
    gold = f"\\begin{{pmatrix}} {entries[0]} & \\frac{{{p}}}{{{q}}} \\\\ {entries[1]} & {entries[2]} \\end{{pmatrix}}"
    decimal = float(Fraction(p, q))
    pred = f"\\begin{{bmatrix}}{entries[0]}&{decimal}\\\\{entries[1]}&{entries[2]}\\end{{bmatrix}}"
    wrong = f"\\begin{{pmatrix}}{entries[0]}&{decimal}\\\\{entries[1]}&{entries[2] + 1}\\end{{pmatrix}}"
    return gold, pred, wrong


def pi_expression(rng):
    a, b = rng.randint(1, 12), rng.randint(2, 12)
    return f"\\frac{{{a}\\pi}}{{{b}}}", f"\\frac{{{a}}}{{{b}}}\\pi", f"\\frac{{{a + 1}}}{{{b}}}\\pi"


def complex_number(rng):
    a, b = rng.randint(-9, 9), rng.randint(1, 9)
    return f"{a}+{b}i", f"{b}i{a:+d}", f"{a}-{b}i"


HARD_KINDS = {
    "fraction_vs_decimal": fraction_vs_decimal,
    "radical": radical,
    "tuple": tuple_pair,
    "interval": interval_pair,
    "polynomial": polynomial,
    "matrix": matrix,
    "pi": pi_expression,
    "complex": complex_number,
}


def hard_pairs(rng: random.Random, per_kind: int) -> list[tuple[str, str, bool, str]]:
    pairs = []
    for kind, make in HARD_KINDS.items():
        for index in range(per_kind):
            gold, equal, different = make(rng)
            correct = index % 2 == 0
            pairs.append((equal if correct else different, gold, correct, kind))
    rng.shuffle(pairs)
    return pairs


# -- math-verify, as a baseline -----------------------------------------------------------------------------------
def math_verify_equal(predicted: str, expected: str, is_output: bool = False) -> bool:
    from math_verify import parse, verify

    def wrapped(answer: str) -> str:
        has_math_mode = re.search(r"(?<!\\)\$", answer) or "\\boxed" in answer  # `\$10` is a dollar sign
        return answer if has_math_mode else f"${answer}$"

    try:
        gold = parse(wrapped(expected))
        target = parse(predicted if is_output else wrapped(predicted))
        return bool(verify(gold, target))
    except Exception:
        return False


# Pairs beyond the fast evaluator (sums, floors, integrals, products): they take the symbolic worker path.
SYMBOLIC_PAIRS = [
    ("\\sum_{k=1}^{n} k", "\\frac{n(n+1)}{2}", True),
    ("\\sum_{k=1}^{n} k^2", "\\frac{n(n+1)(2n+1)}{6}", True),
    ("\\sum_{k=1}^{n} k", "\\frac{n(n-1)}{2}", False),
    ("\\sum_{k=0}^{10} 2^k", "2047", True),
    ("\\lfloor 3.7 \\rfloor", "3", True),
    ("\\lceil 3.2 \\rceil", "3", False),
    ("\\int_0^1 x^2 dx", "\\frac{1}{3}", True),
    ("\\int_0^1 x dx", "\\frac{1}{3}", False),
    ("\\prod_{k=1}^{5} k", "120", True),
    ("\\lfloor \\sqrt{50} \\rfloor", "7", True),
]


def measure_symbolic_fallback(min_seconds: float) -> dict:
    """The slow path's cost: ours goes through the worker process, math-verify runs in-process."""

    def ours_once():
        for predicted, expected, _ in SYMBOLIC_PAIRS:
            math_equal(predicted, expected)

    def theirs_once():
        for predicted, expected, _ in SYMBOLIC_PAIRS:
            math_verify_equal(predicted, expected)

    ours = answers_per_second(ours_once, len(SYMBOLIC_PAIRS), min_seconds)
    theirs = answers_per_second(theirs_once, len(SYMBOLIC_PAIRS), min_seconds)
    theirs_verdicts = [math_verify_equal(predicted, expected) for predicted, expected, _ in SYMBOLIC_PAIRS]
    labels = [label for _, _, label in SYMBOLIC_PAIRS]
    return {
        "pairs": len(SYMBOLIC_PAIRS),
        "note": "ours: answers_per_cpu_s counts this process only; the sympy work runs in the worker process",
        "ours": ours,
        "math_verify": theirs,
        "accuracy_ours": accuracy([math_equal(p, e) for p, e, _ in SYMBOLIC_PAIRS], labels),
        "accuracy_math_verify": accuracy(theirs_verdicts, labels),
    }


# -- the three measurements ---------------------------------------------------------------------------------------
def measure_realistic(pairs, min_seconds: float) -> dict:
    def run_once():
        for text, expected, _ in pairs:
            grade(text, expected)

    result = answers_per_second(run_once, len(pairs), min_seconds)
    verdicts = [grade(text, expected) for text, expected, _ in pairs]
    disagreements = [
        {"output_answer": verdict.predicted_answer, "expected": expected, "intended": intended}
        for verdict, (_, expected, intended) in zip(verdicts, pairs, strict=True)
        if verdict.correct != intended
    ]
    result.update(
        target_answers_per_s=2000,
        intended_wrong_fraction=WRONG_FRACTION,
        graded_correct_fraction=round(sum(v.correct for v in verdicts) / len(verdicts), 4),
        errors=sum(v.error is not None for v in verdicts),
        disagreements_with_intended_label=len(disagreements),
        disagreement_examples=disagreements[:10],
    )
    return result


def measure_hard(pairs, min_seconds: float, math_verify_limit: int) -> dict:
    def ours_once():
        for predicted, expected, _, _ in pairs:
            math_equal(predicted, expected)

    ours = answers_per_second(ours_once, len(pairs), min_seconds)
    ours_verdicts = [math_equal(predicted, expected) for predicted, expected, _, _ in pairs]
    subset = pairs[:math_verify_limit]
    math_verify_equal(subset[0][0], subset[0][1])  # warm-up: imports and the ANTLR parser
    start = time.perf_counter()
    theirs_verdicts = [math_verify_equal(predicted, expected) for predicted, expected, _, _ in subset]
    theirs_seconds = time.perf_counter() - start
    theirs_rate = len(subset) / theirs_seconds
    return {
        "pairs": len(pairs),
        "kinds": sorted(HARD_KINDS),
        "ours": ours,
        "math_verify": {
            "answers_per_s": round(theirs_rate, 1),
            "answers": len(subset),
            "wall_s": round(theirs_seconds, 2),
        },
        "speedup": round(ours["answers_per_s"] / theirs_rate, 1),
        "target_speedup": 10,
        "accuracy_ours": accuracy(ours_verdicts, [p[2] for p in pairs]),
        "accuracy_math_verify": accuracy(theirs_verdicts, [p[2] for p in subset]),
        "wrong_ours": [p[:3] for p, v in zip(pairs, ours_verdicts, strict=True) if v != p[2]][:20],
        "wrong_math_verify": [p[:3] for p, v in zip(subset, theirs_verdicts, strict=True) if v != p[2]][:20],
    }


def accuracy(verdicts: list[bool], labels: list[bool]) -> float:
    return round(sum(v == label for v, label in zip(verdicts, labels, strict=True)) / len(labels), 4)


def accuracy_by_source(cases, ours: list[bool], theirs: list[bool]) -> dict:
    groups: dict[str, list[int]] = {}
    for index, case in enumerate(cases):
        groups.setdefault(":".join(case.source.split(":")[:2]), []).append(index)
    return {
        group: {
            "cases": len(indices),
            "ours": accuracy([ours[i] for i in indices], [cases[i].equal for i in indices]),
            "math_verify": accuracy([theirs[i] for i in indices], [cases[i].equal for i in indices]),
        }
        for group, indices in groups.items()
    }


def measure_suite(data_dir: Path) -> dict:
    # The extraction-policy cases (own:outputs: "no box means no answer", "last box wins") test our boxed-only
    # contract, which math-verify does not share by design; tests/test_math_grader.py covers them.
    cases = [case for case in CASES if case.source != "own:outputs"] + math500_cases(data_dir)
    public = sum(1 for case in cases if not case.source.startswith("math500"))
    labels = [case.equal for case in cases]
    ours, theirs = [], []
    start = time.perf_counter()
    for case in cases:
        ours.append(
            grade(case.predicted, case.expected).correct
            if case.is_output
            else math_equal(case.predicted, case.expected)
        )
    ours_seconds = time.perf_counter() - start
    start = time.perf_counter()
    for case in cases:
        theirs.append(math_verify_equal(case.predicted, case.expected, case.is_output))
    theirs_seconds = time.perf_counter() - start

    def wrong(verdicts):
        return [
            {"source": c.source, "predicted": c.predicted[-80:], "expected": c.expected, "expected_verdict": c.equal}
            for c, v in zip(cases, verdicts, strict=True)
            if v != c.equal
        ]

    return {
        "cases": len(cases),
        "cases_own_and_public": public,
        "cases_math500": len(cases) - public,
        "accuracy_ours": accuracy(ours, labels),
        "accuracy_math_verify": accuracy(theirs, labels),
        "agreement_ours_vs_math_verify": accuracy(ours, theirs),
        "accuracy_ours_without_math500": accuracy(ours[:public], labels[:public]),
        "accuracy_math_verify_without_math500": accuracy(theirs[:public], labels[:public]),
        "accuracy_by_source": accuracy_by_source(cases, ours, theirs),
        "seconds_ours": round(ours_seconds, 2),
        "seconds_math_verify": round(theirs_seconds, 2),
        "wrong_ours": wrong(ours),
        "wrong_math_verify": wrong(theirs),
    }


# -- (d) per grader ----------------------------------------------------------------------------------------------
# Answers that are not mathematics: graded against each other (all pairs); none may wait for sympy.
NON_MATH_ANSWERS = [
    "1:00", "12:00", "3:2", "2:3", "10:30 a.m.", "3:15 PM", "12:30:15", "a:b", "3 to 2", "yes", "no", "Monday",
    "\\text{Tuesday}", "north-east", "red and blue", "It is impossible to determine the value from the information",
    "The function is increasing on the whole real line", "I, II, and III", "(A) and (C)", "no solution",
    "\\emptyset", "all real numbers", "2^{nd}", "3rd", "DNE", "N/A", "e.g. 5", "C++", "5 m/s", "3 hours 20 minutes",
    "Saturday, June 5", "\\text{even}", "odd", "True", "\\text{1:00 PM}", "q.e.d.", "7-11", "50:50", "5",
    "\\frac{1}{2}",
]  # fmt: skip


def grader_rate(name: str, rows: list[dict], options: GradeOptions, min_seconds: float) -> tuple[dict, list]:
    """answers/s of one registered grader over `rows` (generation key `generation`), and its last fields."""
    grader = GRADERS.get(name)
    fields: list = []

    def run_once():
        if grader.grade_rows is not None:
            fields[:] = grader.grade_rows(rows, "generation", options)
        else:
            fields[:] = [grader.grade(row["generation"], row["expected_answer"], options) for row in rows]

    return answers_per_second(run_once, len(rows), min_seconds), fields


def measure_math_grader(data_dir: Path, min_seconds: float) -> dict:
    answers = [a for name in ("gsm8k", "math500") for a in load_expected_answers(data_dir / name / "test.jsonl")]
    report = {}
    variants = {"boxed": lambda a: f"{REASONING}So the answer is $\\boxed{{{a}}}$.", "bare": str,
                "prose": lambda a: f"{REASONING}The answer is ${a}$."}  # fmt: skip
    for variant, make in variants.items():
        rows = [{"generation": make(answer), "expected_answer": answer} for answer in answers]
        rate, fields = grader_rate("math", rows, GradeOptions(), min_seconds)
        paths = Counter(row_fields["extraction"] for row_fields in fields)
        correct = sum(row_fields["symbolic_correct"] for row_fields in fields)
        report[f"expected_answers_{variant}"] = {**rate, "graded_correct_fraction": round(correct / len(rows), 4),
                                                 "extraction_paths": paths}  # fmt: skip
    report["non_math"] = measure_non_math(min_seconds)
    return report


def measure_non_math(min_seconds: float) -> dict:
    """All pairs of NON_MATH_ANSWERS: rate, slowest pair, and how many reached the symbolic stage (a spy)."""
    pairs = [(p, e) for p in NON_MATH_ANSWERS for e in NON_MATH_ANSWERS]
    symbolic_calls = []
    real_symbolic = math_compare.symbolic_equal

    def spy(predicted, expected, timeout):
        symbolic_calls.append((predicted, expected))
        return real_symbolic(predicted, expected, timeout)

    math_equal("\\lfloor 1.5 \\rfloor", "1")  # starts the symbolic worker: its start-up is not a grading cost
    math_compare.symbolic_equal = spy
    try:
        timings = []
        for predicted, expected in pairs:
            start = time.perf_counter()
            math_equal(predicted, expected)
            timings.append((time.perf_counter() - start, predicted, expected))
        rate = answers_per_second(lambda: [math_equal(p, e) for p, e in pairs], len(pairs), min_seconds)
    finally:
        math_compare.symbolic_equal = real_symbolic
    slowest = max(timings)
    return {**rate, "pairs": len(pairs), "reached_symbolic": len(symbolic_calls) // (rate["passes"] + 2),
            "reached_symbolic_examples": symbolic_calls[:5],
            "slowest_pair": {"seconds": round(slowest[0], 4), "predicted": slowest[1],
                             "expected": slowest[2]}}  # fmt: skip


def mcq_rows(count: int, rng: random.Random) -> list[dict]:
    templates = ["The answer is ({}).", "**Answer:** {}", "After comparing the options, I pick \\boxed{{{}}}.",
                 "Reasoning about each option in turn...\n{})", "Final answer: {}"]  # fmt: skip
    rows = []
    for index in range(count):
        letter = "ABCD"[index % 4]
        chosen = letter if rng.random() < 0.7 else rng.choice("ABCD")
        rows.append({"id": str(index), "options": ["1", "2", "3", "4"], "expected_answer": letter,
                     "generation": REASONING + rng.choice(templates).format(chosen)})  # fmt: skip
    return rows


def ifeval_rows(data_dir: Path) -> list[dict]:
    with open(data_dir / "ifeval" / "test.jsonl", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    response = (REASONING * 3).upper() + "\n\n*highlighted section*\n\n* one\n* two\n\nP.S. that is all."
    return [{**row, "generation": response} for row in rows]


def measure_graders(data_dir: Path, min_seconds: float) -> dict:
    report: dict = {"math": measure_math_grader(data_dir, min_seconds)}
    makers = {"mcq": lambda: mcq_rows(1000, random.Random(1)), "ifeval": lambda: ifeval_rows(data_dir)}
    for name, make_rows in makers.items():
        if name not in GRADERS:
            report[name] = {"skipped": f"no grader named {name!r} in skills_cli/evaluation/graders/ yet"}
            continue
        rate, fields = grader_rate(name, make_rows(), GradeOptions(), min_seconds)
        headline = GRADERS.get(name).headline_key
        errors = sum(1 for row_fields in fields if row_fields.get("grading_error"))
        report[name] = {**rate, "headline_fraction": round(sum(bool(f.get(headline)) for f in fields) / len(fields), 4),
                        "grading_errors": errors}  # fmt: skip
    return report


# -- (e) sandbox --------------------------------------------------------------------------------------------------
def mbpp_programs(data_dir: Path) -> tuple[list[str], str, object]:
    """MBPP canonical solutions with their tests as programs, the builder's name, and `passed(execution)`."""
    with open(data_dir / "mbpp" / "test.jsonl", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    try:  # the code grader's builder and verdict, when they exist
        from skills_cli.evaluation.graders.code.programs import build_program
        from skills_cli.evaluation.graders.code.verdict import verdict_of_run
    except ImportError:
        programs = [f"{r['code']}\n{r.get('test_setup_code') or ''}\n" + "\n".join(r["test_list"]) for r in rows]
        return programs, "bench: solution + setup + test_list (no code grader yet)", lambda e: e.status == "ok"
    programs = [build_program(row, row["code"]).source for row in rows]
    return programs, "graders.code build_program + verdict_of_run", lambda e: verdict_of_run("", e).passed


def measure_sandbox(data_dir: Path, workers: int) -> dict:
    import socket
    import subprocess
    import tempfile
    from concurrent.futures import ThreadPoolExecutor

    try:
        from skills_cli.sandbox.client import SandboxClient
    except ImportError as error:
        return {"skipped": f"skills_cli.sandbox.client is not there yet ({error})"}
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = tempfile.NamedTemporaryFile(prefix="sandbox-bench-", suffix=".log", delete=False)
    command = [sys.executable, "-m", "skills_cli.sandbox.server", "--port", str(port), "--workers", str(workers)]
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    try:
        client = SandboxClient(f"http://127.0.0.1:{port}", api_key="")
        ready_s = client.wait_until_ready(timeout=120, log_file=log.name)
        health = client.health()
        programs, builder, passed_run = mbpp_programs(data_dir)
        client.run("print(1)")  # warm-up
        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=workers) as pool:
            executions = list(pool.map(client.run, programs))
        wall = time.perf_counter() - start
    finally:
        server.terminate()
        server.wait(timeout=30)
    statuses = Counter(execution.status for execution in executions)
    failed = [(i, e.status, (e.message or e.stderr)[-200:]) for i, e in enumerate(executions) if not passed_run(e)]
    return {"programs": len(programs), "program_builder": builder, "server_workers": workers,
            "client_threads": workers, "ready_s": round(ready_s, 2), "wall_s": round(wall, 2),
            "executions_per_s": round(len(programs) / wall, 2), "statuses": statuses,
            "tests_passed": len(programs) - len(failed), "failed_examples": failed[:5],
            "isolation": health.get("isolation", health)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", type=Path, default=default_data_dir())
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    parser.add_argument("--min_seconds", type=float, default=3.0, help="minimum timed duration per measurement")
    parser.add_argument("--cpu", type=int, default=0, help="the CPU to pin to")
    parser.add_argument("--hard_per_kind", type=int, default=50)
    parser.add_argument("--math_verify_limit", type=int, default=400, help="hard-suite pairs timed for math-verify")
    parser.add_argument("--skip_suite", action="store_true", help="skip (c), the slowest part (math-verify)")
    parser.add_argument("--only", choices=["math", "graders", "sandbox"], help="run only (a)-(c), (d) or (e)")
    parser.add_argument("--sandbox_workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()

    report: dict = {"machine": {"python": platform.python_version(), "cpu_count": os.cpu_count(),
                                "platform": platform.platform()}}  # fmt: skip
    if args.only in (None, "sandbox"):  # before pinning: the service and its programs use every core
        report["sandbox"] = measure_sandbox(args.data_dir, args.sandbox_workers)
    report["machine"]["cpus_pinned"] = pin_to_one_cpu(args.cpu)
    if args.only in (None, "math"):
        rng = random.Random(0)
        report["realistic"] = measure_realistic(realistic_pairs(args.data_dir, rng), args.min_seconds)
        report["hard_suite"] = measure_hard(hard_pairs(rng, args.hard_per_kind), args.min_seconds,
                                            args.math_verify_limit)  # fmt: skip
        report["symbolic_fallback"] = measure_symbolic_fallback(args.min_seconds)
        if not args.skip_suite:
            report["case_suite"] = measure_suite(args.data_dir)
    if args.only in (None, "graders"):
        report["graders"] = measure_graders(args.data_dir, args.min_seconds)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
