"""AIME 2024 I and II (30 problems; text from the AoPS wiki via QwenLM/Qwen2.5-Math's evaluation data)."""

import re

from skills_cli.evaluation.benchmarks import BENCHMARKS, Benchmark
from skills_cli.evaluation.benchmarks._convert import aops_rows

URL = re.compile(r"(\d{4})_AIME_(I+)_Problems/Problem_(\d+)")


def convert(rows: list[dict]) -> list[dict]:
    """aime24-I-1 ... aime24-II-15, exam by exam and in problem order, with the AoPS solution."""
    out = [
        {**problem, "solution": row.get("solution", "")}
        for problem, row in zip(aops_rows(rows, "aime24", URL), rows, strict=True)
    ]
    return sorted(out, key=lambda r: (r["id"].split("-")[1], int(r["id"].split("-")[2])))


BENCHMARK = Benchmark(
    name="aime24",
    description="AIME 2024: integer answers 0-999.",
    urls={"test": "https://raw.githubusercontent.com/QwenLM/Qwen2.5-Math/main/evaluation/data/aime24/test.jsonl"},
    convert=convert,
)
BENCHMARKS.register(BENCHMARK)
