"""MATH-500: the PRM800K held-out subset of MATH (openai/prm800k, MIT), with subject and level."""

from skills_cli.evaluation.benchmarks import BENCHMARKS, Benchmark


def convert(rows: list[dict]) -> list[dict]:
    return [{"id": row["unique_id"], "problem": row["problem"], "expected_answer": row["answer"],
             "solution": row["solution"], "subject": row["subject"], "level": int(row["level"])} for row in rows]  # fmt: skip


BENCHMARK = Benchmark(
    name="math500",
    description="500 MATH competition problems; LaTeX answers; broken down by level and subject.",
    urls={"test": "https://raw.githubusercontent.com/openai/prm800k/main/prm800k/math_splits/test.jsonl"},
    convert=convert,
    subset_keys=("level", "subject"),
)
BENCHMARKS.register(BENCHMARK)
