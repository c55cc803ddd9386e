"""Grade generation outputs in place with their benchmark's grader (math adds `predicted_answer`, `symbolic_correct`).

The math grader adds `predicted_answer`, `symbolic_correct` and `grading_error`; other graders their own keys.

    python -m skills_cli.evaluation.grade --results_dir DIR [--regex R] [--timeout S]
    python -m skills_cli.evaluation.grade DIR/output-rs0.jsonl DIR/output-rs1.jsonl
    python -m skills_cli.evaluation.grade --results_dir DIR --benchmark NAME | --grader NAME
    python -m skills_cli.evaluation.grade --results_dir DIR --benchmark humaneval [--sandbox_url URL]

The grader is `--grader`, else the one of `--benchmark`, else that of the benchmark `--results_dir` is named
after (`eval-results/<benchmark>`), else math. Each file is rewritten atomically. Files already graded are left
alone (`--regrade` forces it), so a rerun of an evaluation grades only what is new. A grader timeout or error
grades as incorrect and is counted.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from skills_cli.common.errors import UserError, exits_on_user_error
from skills_cli.common.jsonl import read_jsonl, write_jsonl_atomic
from skills_cli.evaluation.benchmarks import get_benchmark, grader_for_results
from skills_cli.evaluation.graders import DEFAULT_GRADER, GRADERS, GRADING_ERROR_KEY, GradeOptions, Grader

SEEDED = re.compile(r"^output-rs(\d+)\.jsonl$")


def result_files(results_dir: str | Path) -> list[Path]:
    """`output.jsonl` (greedy) or `output-rs{seed}.jsonl` files, seeds in order; chunk and side files excluded."""
    directory = Path(results_dir)
    if not directory.is_dir():
        raise UserError(f"no results directory {directory}")
    greedy = directory / "output.jsonl"
    seeded = sorted(
        (p for p in directory.iterdir() if SEEDED.match(p.name)), key=lambda p: int(SEEDED.match(p.name)[1])
    )
    if greedy.is_file() and seeded:
        raise UserError(f"{directory} mixes greedy output.jsonl with seeded output-rs*.jsonl; move one kind elsewhere")
    files = seeded or ([greedy] if greedy.is_file() else [])
    if not files:
        raise UserError(f"{directory} has no output.jsonl or output-rs*.jsonl")
    return files


def grade_rows(rows: list[dict], grader: Grader, generation_key: str, options: GradeOptions) -> tuple[list[dict], int]:
    """The rows with the grader's fields added, and how many of them carry a grading error."""
    if grader.grade_rows is not None:
        added = grader.grade_rows(rows, generation_key, options)
        if len(added) != len(rows):
            raise RuntimeError(f"grader {grader.name} returned {len(added)} results for {len(rows)} rows")
    else:
        added = []
        for number, row in enumerate(rows, 1):
            if "expected_answer" not in row:
                raise UserError(f"row {number} has no 'expected_answer' to grade against")
            added.append(grader.grade(row.get(generation_key), str(row["expected_answer"]), options))
    graded = [{**row, **fields} for row, fields in zip(rows, added, strict=True)]
    errors = sum(fields.get(GRADING_ERROR_KEY) is not None for fields in added)
    return graded, errors


def grade_file(path: Path, grader: Grader, generation_key: str, options: GradeOptions, regrade: bool) -> str:
    rows = read_jsonl(path)
    if not regrade and rows and all(grader.headline_key in row for row in rows):
        return f"{path}: already graded"
    graded, errors = grade_rows(rows, grader, generation_key, options)
    write_jsonl_atomic(path, graded)
    correct = sum(row[grader.headline_key] for row in graded)
    return f"{path}: {correct}/{len(graded)} correct, {errors} grading errors"


def choose_grader(grader: str | None, benchmark: str | None, results_dir: str | None) -> Grader:
    """--grader, else --benchmark's grader, else the grader of the benchmark the results folder is named after."""
    if grader:
        return GRADERS.get(grader)
    if benchmark:
        return get_benchmark(benchmark).get_grader()
    if results_dir:
        return grader_for_results(Path(results_dir).resolve().name)
    return GRADERS.get(DEFAULT_GRADER)


@exits_on_user_error
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*")
    parser.add_argument("--results_dir", default=None, help="grade every result file of this directory")
    parser.add_argument("--benchmark", default=None, help="grade with this benchmark's grader")
    parser.add_argument("--grader", default=None, help="grade with this grader (overrides --benchmark)")
    parser.add_argument("--generation_key", default="generation")
    parser.add_argument("--regex", default=None, help="fallback answer pattern when there is no \\boxed{}")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds per symbolic check")
    parser.add_argument("--regrade", action="store_true")
    parser.add_argument("--sandbox_url", default=None, help="graders that run code: the sandbox service "
                        "(default: the job's, from $SKILLS_SANDBOX_HOST/$SKILLS_SANDBOX_PORT)")  # fmt: skip
    parser.add_argument("--sandbox_workers", type=int, default=8, help="sandbox runs in flight at once")
    args = parser.parse_args(argv)
    if args.sandbox_workers < 1:
        raise UserError("--sandbox_workers must be >= 1")
    names = list(args.files) + ([str(p) for p in result_files(args.results_dir)] if args.results_dir else [])
    if not names:
        raise UserError("give result files or --results_dir")
    grader = choose_grader(args.grader, args.benchmark, args.results_dir)
    options = GradeOptions(regex=args.regex, timeout=args.timeout, sandbox_url=args.sandbox_url,
                           sandbox_workers=args.sandbox_workers)  # fmt: skip
    for name in names:
        print(grade_file(Path(name), grader, args.generation_key, options, args.regrade), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
