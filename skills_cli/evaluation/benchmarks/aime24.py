"""AIME 2024 I and II (30 problems; text from the AoPS wiki via QwenLM/Qwen2.5-Math's evaluation data)."""

import re

from skills_cli.evaluation.benchmarks import Benchmark
from skills_cli.evaluation.benchmarks._convert import integer_text

URL = re.compile(r"(\d{4})_AIME_(I+)_Problems/Problem_(\d+)")


def convert(rows: list[dict]) -> list[dict]:
    """AoPS urls name the exam and problem: .../2024_AIME_I_Problems/Problem_4 -> aime24-I-4."""
    out = []
    for row in rows:
        _, exam, number = URL.search(row["url"]).groups()
        out.append({"id": f"aime24-{exam}-{number}", "problem": row.get("problem") or row["question"],
                    "expected_answer": integer_text(row["answer"]), "solution": row.get("solution", "")})  # fmt: skip
    return sorted(out, key=lambda r: (r["id"].split("-")[1], int(r["id"].split("-")[2])))


BENCHMARK = Benchmark(
    name="aime24",
    description="AIME 2024: integer answers 0-999.",
    urls={"test": "https://raw.githubusercontent.com/QwenLM/Qwen2.5-Math/main/evaluation/data/aime24/test.jsonl"},
    convert=convert,
)
