"""arith: synthetic integer arithmetic generated locally from a fixed seed (offline demos and tests).

Problems are `a + b`, `a - b` and `a * b` with small operands; train and test come from different seeds and
never share a problem, so improvements on test are not memorization of train.
"""

import random

from skills_cli.evaluation.benchmarks import BENCHMARKS, Benchmark

SIZES = {"train": 2000, "test": 200}
SEEDS = {"train": 1234, "test": 4321}


def generate(split: str) -> list[dict]:
    rng = random.Random(SEEDS[split])
    test_problems = set() if split == "test" else {row["problem"] for row in generate("test")}
    rows, seen = [], set(test_problems)
    while len(rows) < SIZES[split]:
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        op = rng.choice("+-*")
        if op == "*":
            a, b = a % 13, b % 13
        problem = f"What is {a} {op} {b}?"
        if problem in seen:
            continue
        seen.add(problem)
        answer = a + b if op == "+" else a - b if op == "-" else a * b
        rows.append({"id": f"arith-{split}-{len(rows):04d}", "problem": problem, "expected_answer": str(answer),
                     "solution": f"{a} {op} {b} = {answer}. The answer is \\boxed{{{answer}}}.", "operation": op})  # fmt: skip
    return rows


BENCHMARK = Benchmark(
    name="arith",
    description="Synthetic integer arithmetic (+, -, *), generated locally; train and test splits.",
    splits=("train", "test"),
    generate=generate,
    subset_keys=("operation",),
)
BENCHMARKS.register(BENCHMARK)
