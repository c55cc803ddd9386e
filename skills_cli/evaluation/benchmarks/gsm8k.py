"""GSM8K: 1,319 grade-school word problems (openai/grade-school-math, MIT)."""

from skills_cli.evaluation.benchmarks import BENCHMARKS, Benchmark


def convert(rows: list[dict]) -> list[dict]:
    out = []
    for index, row in enumerate(rows):
        answer = row["answer"].split("####")[-1].strip().replace(",", "")
        out.append({"id": f"gsm8k-test-{index:04d}", "problem": row["question"], "expected_answer": answer,
                    "solution": row["answer"]})  # fmt: skip
    return out


BENCHMARK = Benchmark(
    name="gsm8k",
    description="Grade-school math word problems; integer answers.",
    urls={
        "test": "https://raw.githubusercontent.com/openai/grade-school-math/master/grade_school_math/data/test.jsonl"
    },
    convert=convert,
)
BENCHMARKS.register(BENCHMARK)
