"""MBPP: Mostly Basic Python Problems (Austin et al. 2021, "Program Synthesis with Large Language Models";
google-research/google-research `mbpp/`, CC-BY-4.0).

The source file holds all 974 tasks; as its README says, task_ids 11-510 are the test split and 1-10 the
few-shot pool (split `prompt`), of which the paper's three-shot prompt uses tasks 2, 3 and 4 (our prompt config
`code/mbpp` names them). A row keeps every source field (`text`, `code`, `task_id`, `test_setup_code`,
`test_list`, `challenge_test_list`) after our `id` (`mbpp-<task_id>`). The `code` grader reads the row in its
assert-list shape: the `test_list` asserts, after the answer and `test_setup_code` (see
`skills_cli.evaluation.graders.code`).
"""

from __future__ import annotations

from collections.abc import Callable

from skills_cli.evaluation.benchmarks import BENCHMARKS, Benchmark

URL = "https://raw.githubusercontent.com/google-research/google-research/master/mbpp/mbpp.jsonl"
# the README's split of task ids (mbpp_sanitized keeps the same ranges)
SPLIT_TASK_IDS = {"test": range(11, 511), "prompt": range(1, 11)}


def rows_of_split(rows: list[dict], split: str) -> list[dict]:
    """The source records whose task_id belongs to the split, in source order."""
    return [row for row in rows if row.get("task_id") in SPLIT_TASK_IDS[split]]


def fetch(split: str, url: str = URL) -> list[dict]:
    """The split's source records (the one JSONL file serves both splits)."""
    from skills_cli.evaluation.prepare_data import download_rows

    return rows_of_split(download_rows(url), split)


def mbpp_family(
    name: str, description: str, url: str, fetch: Callable[[str], list[dict]], task_field: str
) -> Benchmark:
    """An MBPP-style benchmark: splits by task id, rows `<name>-<task_id>` (`_` read as `-`) with every source
    field, graded by the code grader from `test_list`; `task_field` is the field holding the task's text."""
    prefix = name.replace("_", "-")

    def convert(rows: list[dict]) -> list[dict]:
        return [{"id": f"{prefix}-{row['task_id']}", **row} for row in rows]

    return Benchmark(name=name, description=description, prompt_config=f"code/{name}", grader="code",
                     splits=tuple(SPLIT_TASK_IDS), urls={split: url for split in SPLIT_TASK_IDS}, fetch=fetch,
                     convert=convert, row_fields=("id", task_field, "test_list"), needs_sandbox=True)  # fmt: skip


BENCHMARK = mbpp_family(
    "mbpp",
    "MBPP: 500 basic Python tasks, three-shot as in the paper; graded by their three asserts.",
    URL,
    fetch,
    "text",
)
BENCHMARKS.register(BENCHMARK)
