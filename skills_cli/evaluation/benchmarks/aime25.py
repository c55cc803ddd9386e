"""AIME 2025 I and II (30 problems; text from the AoPS wiki via NVIDIA/NeMo-Skills' dataset folder)."""

from skills_cli.evaluation.benchmarks import BENCHMARKS, Benchmark
from skills_cli.evaluation.benchmarks._convert import integer_text


def convert(rows: list[dict]) -> list[dict]:
    # the source lists AIME I #1-15 then AIME II #1-15
    return [{"id": f"aime25-{'I' if i < 15 else 'II'}-{i % 15 + 1}", "problem": row["problem"],
             "expected_answer": integer_text(row["expected_answer"]), "solution": row.get("reference_solution", "")}
            for i, row in enumerate(rows)]  # fmt: skip


BENCHMARK = Benchmark(
    name="aime25",
    description="AIME 2025: integer answers 0-999.",
    urls={"test": "https://raw.githubusercontent.com/NVIDIA/NeMo-Skills/main/nemo_skills/dataset/aime25/test.txt"},
    convert=convert,
)
BENCHMARKS.register(BENCHMARK)
