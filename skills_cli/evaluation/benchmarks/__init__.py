"""Benchmark registry: one small module per benchmark, each defining `BENCHMARK`.

A benchmark says where its data comes from (a canonical public URL and a converter to our row format, or a
local generator), which prompt config and grader to use, how to summarize it (subset keys) and its default
split. Adding one is adding a file here.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache

from skills_cli.common.errors import UserError


@dataclass(frozen=True)
class Benchmark:
    name: str
    description: str
    prompt_config: str = "generic/math"
    grader: str = "math"
    default_split: str = "test"
    splits: tuple[str, ...] = ("test",)
    urls: dict[str, str] = field(default_factory=dict)  # split -> canonical public source
    convert: Callable[[list[dict]], list[dict]] | None = None  # source rows -> our rows
    generate: Callable[[str], list[dict]] | None = None  # split -> rows, for locally generated benchmarks
    subset_keys: tuple[str, ...] = ()  # row fields the summary breaks down by (e.g. level, subject)


@lru_cache(maxsize=1)
def registry() -> dict[str, Benchmark]:
    found = {}
    for module in pkgutil.iter_modules(__path__):
        benchmark = getattr(importlib.import_module(f"{__name__}.{module.name}"), "BENCHMARK", None)
        if isinstance(benchmark, Benchmark):
            found[benchmark.name] = benchmark
    return found


def get_benchmark(name: str) -> Benchmark:
    benchmarks = registry()
    if name not in benchmarks:
        raise UserError(f"unknown benchmark {name!r}; known: {', '.join(sorted(benchmarks))}")
    return benchmarks[name]
