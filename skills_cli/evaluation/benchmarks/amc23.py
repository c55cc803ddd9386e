"""AMC 12 2023 (40 problems with numeric answers; QwenLM/Qwen2.5-Math's evaluation data)."""

import re

from skills_cli.evaluation.benchmarks import Benchmark
from skills_cli.evaluation.benchmarks._convert import integer_text

URL = re.compile(r"(\d{4})_AMC_(12[AB])_Problems/Problem_(\d+)")


def convert(rows: list[dict]) -> list[dict]:
    """AoPS urls name the exam and problem: .../2023_AMC_12A_Problems/Problem_1 -> amc23-12A-1."""
    out = []
    for row in rows:
        _, exam, number = URL.search(row["url"]).groups()
        out.append({"id": f"amc23-{exam}-{number}", "problem": row.get("problem") or row["question"],
                    "expected_answer": integer_text(row["answer"])})  # fmt: skip
    return out


BENCHMARK = Benchmark(
    name="amc23",
    description="AMC 12A/12B 2023, reworded to numeric answers.",
    urls={"test": "https://raw.githubusercontent.com/QwenLM/Qwen2.5-Math/main/evaluation/data/amc23/test.jsonl"},
    convert=convert,
)
