"""HumanEval: 164 hand-written Python functions, each given as a signature and docstring with hidden unit tests
(Chen et al. 2021, "Evaluating Large Language Models Trained on Code"; openai/human-eval, MIT).

The source is gzipped JSONL. A row keeps every source field (`task_id`, `prompt`, `entry_point`,
`canonical_solution`, `test`) after our `id` (= `task_id`). The `code` grader reads the row in its
check-function shape: `prompt` (completed by a body-only answer), `test` (defines `check(candidate)`) and
`entry_point` (see `skills_cli.evaluation.graders.code`).
"""

from __future__ import annotations

import gzip
import json

from skills_cli.common.errors import UserError
from skills_cli.evaluation.benchmarks import BENCHMARKS, Benchmark

URLS = {"test": "https://raw.githubusercontent.com/openai/human-eval/master/data/HumanEval.jsonl.gz"}


def fetch(split: str, url: str | None = None) -> list[dict]:
    """The source records of the gzipped JSONL file (another URL: a mirror or a file:// copy)."""
    from skills_cli.evaluation.prepare_data import download_bytes

    url = url or URLS[split]
    try:
        text = gzip.decompress(download_bytes(url)).decode("utf-8")
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    except (OSError, EOFError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"{url}: not gzipped JSONL ({error})") from None


def convert(rows: list[dict]) -> list[dict]:
    return [{"id": row["task_id"], **row} for row in rows]


BENCHMARK = Benchmark(
    name="humaneval",
    description="HumanEval: 164 Python functions to complete from their docstrings; graded by hidden unit tests.",
    prompt_config="code/humaneval",
    grader="code",
    urls=URLS,
    fetch=fetch,
    convert=convert,
    row_fields=("id", "prompt", "test", "entry_point"),
    needs_sandbox=True,
)
BENCHMARKS.register(BENCHMARK)
