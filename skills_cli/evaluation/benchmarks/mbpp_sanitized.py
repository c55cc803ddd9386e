"""MBPP sanitized: the hand-verified subset of MBPP, with reworded prompts and edited tests (Austin et al. 2021;
google-research/google-research `mbpp/sanitized-mbpp.json`, CC-BY-4.0).

The source is one JSON array of 427 tasks, split by task_id as MBPP (test: 11-510, 257 tasks; prompt: 1-10,
7 tasks). A row keeps every source field (`source_file`, `task_id`, `prompt`, `code`, `test_imports`,
`test_list`) after our `id` (`mbpp-sanitized-<task_id>`). The `code` grader reads the row in its assert-list
shape: the `test_imports` lines, the answer, then the `test_list` asserts (see
`skills_cli.evaluation.graders.code`).
"""

from __future__ import annotations

import json

from skills_cli.common.errors import UserError
from skills_cli.evaluation.benchmarks import BENCHMARKS
from skills_cli.evaluation.benchmarks.mbpp import mbpp_family, rows_of_split

URL = "https://raw.githubusercontent.com/google-research/google-research/master/mbpp/sanitized-mbpp.json"


def fetch(split: str, url: str = URL) -> list[dict]:
    """The split's source records from the JSON array."""
    from skills_cli.evaluation.prepare_data import download_bytes

    try:
        records = json.loads(download_bytes(url))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"{url}: not JSON ({error})") from None
    if not isinstance(records, list) or not all(isinstance(record, dict) for record in records):
        raise UserError(f"{url}: expected a JSON array of task records")
    return rows_of_split(records, split)


BENCHMARK = mbpp_family(
    "mbpp_sanitized", "MBPP sanitized: 257 hand-verified MBPP tasks, three-shot; graded by their asserts.", URL, fetch,
    "prompt",
)  # fmt: skip
BENCHMARKS.register(BENCHMARK)
