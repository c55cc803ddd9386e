"""Benchmarks, registered by name: one small module per benchmark, registering its `Benchmark` at the bottom.

A benchmark owns its data preparation (a canonical public URL and a converter to our row format, or a local
generator), its prompt config, its grader (by name, from `skills_cli.evaluation.graders`, which also gives the
metric keys it reports), how to summarize it (subset keys) and its default split. Adding one is adding a file
here, registering it from a plugin (see `skills_cli.common.registry`), or putting a module in a benchmarks
folder outside the package: `ns eval --benchmarks_dir DIR` or `$SKILLS_CLI_BENCHMARKS_DIR` (folders separated
by `:`), whose modules are imported like this folder's, so a lab keeps private benchmarks without a fork.

This module stays free of the graders' code: the pipeline imports it to compile jobs.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from skills_cli.common.errors import UserError
from skills_cli.common.functions import import_file
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


BENCHMARKS_DIR_ENV = "SKILLS_CLI_BENCHMARKS_DIR"
_loaded_files: set[Path] = set()


def benchmark_dirs() -> list[Path]:
    """The benchmark plug-in folders named in `$SKILLS_CLI_BENCHMARKS_DIR` (read on every call)."""
    return [Path(part).expanduser() for part in os.environ.get(BENCHMARKS_DIR_ENV, "").split(os.pathsep) if part]


def load_benchmark_dirs() -> None:
    """Import every module of every plug-in folder once (`_name.py` files are helpers, as in this package)."""
    for folder in benchmark_dirs():
        if not folder.is_dir():
            raise UserError(f"benchmarks folder {folder} (--benchmarks_dir or ${BENCHMARKS_DIR_ENV}) is not a folder")
        for path in sorted(folder.glob("*.py")):
            if not path.name.startswith("_") and path.resolve() not in _loaded_files:
                _loaded_files.add(path.resolve())
                import_benchmark_file(path)


def import_benchmark_file(path: Path) -> None:
    """One plug-in module, under a name of its own (two folders may both hold a `code.py`)."""
    tag = hashlib.sha256(str(path.resolve().parent).encode()).hexdigest()[:10]
    name = f"skills_cli_benchmark_plugins.d{tag}.{path.stem}"
    try:
        import_file(path, name)
    except Exception as error:  # a plug-in's own bug: one line naming the file, not a traceback of ours
        raise UserError(f"benchmark plug-in {path} cannot be loaded: {type(error).__name__}: {error}") from None


BENCHMARKS: Registry[Benchmark] = Registry("benchmark", package=__name__, more=load_benchmark_dirs)


def get_benchmark(name: str) -> Benchmark:
    if name not in BENCHMARKS:
        searched = (
            ", ".join(str(folder) for folder in benchmark_dirs()) or f"none (--benchmarks_dir or ${BENCHMARKS_DIR_ENV})"
        )
        raise UserError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS.names())}; "
                        f"plug-in folders searched: {searched}")  # fmt: skip
    return BENCHMARKS.get(name)


def grader_for_results(folder_name: str) -> Grader:
    """The grader of the benchmark whose results sit in a folder of this name; any other folder is graded as math."""
    return BENCHMARKS.get(folder_name).get_grader() if folder_name in BENCHMARKS else GRADERS.get(DEFAULT_GRADER)
