"""Benchmarks, registered by name: one small module per benchmark, registering its `Benchmark` at the bottom.

A benchmark owns its data preparation (a canonical public URL and a converter to our row format, or a local
generator), its prompt config, its grader (by name, from `skills_cli.evaluation.graders`, which also gives the
metric keys it reports), how to summarize it (subset keys) and its default split. Adding one is adding a file
here, or registering it from a plugin (see `skills_cli.common.registry`).

This module stays free of the graders' code: the pipeline imports it to compile jobs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from skills_cli.common.errors import UserError
from skills_cli.common.registry import Registry
from skills_cli.evaluation.graders import DEFAULT_GRADER, GRADERS, Grader


@dataclass(frozen=True)
class Benchmark:
    name: str
    description: str
    prompt_config: str = "generic/math"
    grader: str = DEFAULT_GRADER  # a name in GRADERS
    default_split: str = "test"
    splits: tuple[str, ...] = ("test",)
    urls: dict[str, str] = field(default_factory=dict)  # split -> canonical public source
    convert: Callable[[list[dict]], list[dict]] | None = None  # source rows -> our rows
    # split -> source rows, for sources that are not one JSONL file (gzip, a JSON array, CSV in a tar, an API);
    # None: the split's url is read as JSONL. Either way `convert` then makes our rows.
    fetch: Callable[[str], list[dict]] | None = None
    generate: Callable[[str], list[dict]] | None = None  # split -> rows, for locally generated benchmarks
    subset_keys: tuple[str, ...] = ()  # row fields the summary breaks down by (e.g. level, subject)
    # fields every prepared row must have (non-empty when strings): an answer benchmark's problem and answer;
    # a code or instruction benchmark names what its prompt and grader read (tests, instruction ids, ...)
    row_fields: tuple[str, ...] = ("id", "problem", "expected_answer")
    needs_sandbox: bool = False  # its grading runs code: `ns eval` starts the sandbox service beside it

    def get_grader(self) -> Grader:
        """The registered grader (imported on first use: the pipeline never needs it)."""
        return GRADERS.get(self.grader)

    @property
    def metric_keys(self) -> tuple[str, ...]:
        return self.get_grader().metric_keys


BENCHMARKS: Registry[Benchmark] = Registry("benchmark", package=__name__)


def get_benchmark(name: str) -> Benchmark:
    if name not in BENCHMARKS:
        raise UserError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS.names())}")
    return BENCHMARKS.get(name)


def grader_for_results(folder_name: str) -> Grader:
    """The grader of the benchmark whose results sit in a folder of this name; any other folder is graded as math."""
    return BENCHMARKS.get(folder_name).get_grader() if folder_name in BENCHMARKS else GRADERS.get(DEFAULT_GRADER)
