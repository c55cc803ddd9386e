"""IFEval: 541 prompts with 834 verifiable instructions of 25 kinds (Zhou et al. 2023, google-research,
Apache-2.0). Graded by the `ifeval` grader: prompt- and instruction-level accuracy, strict and loose."""

from skills_cli.evaluation.benchmarks import BENCHMARKS, Benchmark

URLS = {
    "test": "https://raw.githubusercontent.com/google-research/google-research/master/"
    "instruction_following_eval/data/input_data.jsonl"
}


def convert(rows: list[dict]) -> list[dict]:
    """The source rows (key, prompt, instruction_id_list, kwargs) with `id` = `ifeval-<key>` in front."""
    return [{"id": f"ifeval-{row['key']}", **row} for row in rows]


BENCHMARK = Benchmark(
    name="ifeval",
    description="Instruction following: verifiable format, length, keyword and case instructions (IFEval).",
    prompt_config="generic/ifeval",
    grader="ifeval",
    urls=URLS,
    convert=convert,
    row_fields=("id", "prompt", "instruction_id_list", "kwargs"),
)
BENCHMARKS.register(BENCHMARK)
