"""Benchmark definitions: the converters turn each public source format into our rows, and arith is
deterministic with disjoint splits. (Downloads themselves need the internet, which tests do not have.)"""

from __future__ import annotations

from skills_cli.evaluation.benchmarks import BENCHMARKS, get_benchmark
from skills_cli.evaluation.graders import GRADERS
from skills_cli.evaluation.prepare_data import validate_rows

# benchmark -> its grader: math for answers, code for executed tests, ifeval for instructions, mcq for letters
GRADED_BY = {"aime24": "math", "aime25": "math", "amc23": "math", "arith": "math", "gsm8k": "math", "math500": "math",
             "humaneval": "code", "mbpp": "code", "mbpp_sanitized": "code", "ifeval": "ifeval",
             "gpqa_diamond": "mcq", "mmlu": "mcq", "mmlu_pro": "mcq"}  # fmt: skip


def test_registry_lists_the_benchmarks_with_sources():
    assert BENCHMARKS.names() == tuple(sorted(GRADED_BY))
    for benchmark in BENCHMARKS:
        name = benchmark.name
        assert benchmark.grader == GRADED_BY[name], name
        assert benchmark.metric_keys == GRADERS.get(benchmark.grader).metric_keys and benchmark.metric_keys, name
        assert benchmark.needs_sandbox == GRADERS.get(benchmark.grader).needs_sandbox, name
        assert benchmark.generate is not None or set(benchmark.urls) == set(benchmark.splits), name
        assert benchmark.urls.get("test", "https://").startswith("https://"), name


def test_gsm8k_converter_takes_the_answer_after_hashes():
    rows = get_benchmark("gsm8k").convert([{"question": "q?", "answer": "work <<2*3=6>>6\n#### 1,234"}])
    assert validate_rows(rows, "gsm8k") == [
        {"id": "gsm8k-test-0000", "problem": "q?", "expected_answer": "1234", "solution": "work <<2*3=6>>6\n#### 1,234"}
    ]


def test_math500_converter_keeps_level_and_subject():
    source = {"unique_id": "test/algebra/1.json", "problem": "p", "answer": "\\frac{1}{2}", "solution": "s",
              "subject": "Algebra", "level": 3}  # fmt: skip
    (row,) = get_benchmark("math500").convert([source])
    assert row == {"id": "test/algebra/1.json", "problem": "p", "expected_answer": "\\frac{1}{2}", "solution": "s",
                   "subject": "Algebra", "level": 3}  # fmt: skip


def test_aops_converters_name_problems_from_their_urls():
    aime = get_benchmark("aime24").convert([
        {"url": "https://artofproblemsolving.com/wiki/index.php/2024_AIME_II_Problems/Problem_10", "problem": "b", "answer": "025"},
        {"url": "https://artofproblemsolving.com/wiki/index.php?title=2024_AIME_I_Problems/Problem_2", "problem": "a", "answer": "73"},
    ])  # fmt: skip
    assert [(r["id"], r["expected_answer"]) for r in aime] == [("aime24-I-2", "73"), ("aime24-II-10", "25")]
    amc = get_benchmark("amc23").convert(
        [
            {
                "url": "https://artofproblemsolving.com/wiki/index.php/2023_AMC_12B_Problems/Problem_7",
                "question": "q",
                "answer": 27.0,
            }
        ]
    )
    assert amc == [{"id": "amc23-12B-7", "problem": "q", "expected_answer": "27"}]
    aime25 = get_benchmark("aime25").convert([{"problem": f"p{i}", "expected_answer": str(i)} for i in range(30)])
    assert aime25[0]["id"] == "aime25-I-1" and aime25[15]["id"] == "aime25-II-1" and aime25[29]["id"] == "aime25-II-15"


def test_arith_is_deterministic_with_disjoint_splits():
    generate = get_benchmark("arith").generate
    test, train = generate("test"), generate("train")
    assert test == generate("test") and len(test) == 200 and len(train) == 2000
    assert not {r["problem"] for r in test} & {r["problem"] for r in train}
    for row in test[:50]:
        a, op, b = row["problem"].removeprefix("What is ").removesuffix("?").split()
        assert int(row["expected_answer"]) == {"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b)}[op]
