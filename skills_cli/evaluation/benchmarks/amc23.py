"""AMC 12 2023 (40 problems with numeric answers; QwenLM/Qwen2.5-Math's evaluation data)."""

import re

from skills_cli.evaluation.benchmarks import BENCHMARKS, Benchmark
from skills_cli.evaluation.benchmarks._convert import aops_rows

URL = re.compile(r"(\d{4})_AMC_(12[AB])_Problems/Problem_(\d+)")


def convert(rows: list[dict]) -> list[dict]:
    """amc23-12A-1, ... in the source's order."""
    return aops_rows(rows, "amc23", URL)


BENCHMARK = Benchmark(
    name="amc23",
    description="AMC 12A/12B 2023, reworded to numeric answers.",
    urls={"test": "https://raw.githubusercontent.com/QwenLM/Qwen2.5-Math/main/evaluation/data/amc23/test.jsonl"},
    convert=convert,
)
BENCHMARKS.register(BENCHMARK)
