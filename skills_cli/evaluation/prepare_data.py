"""Prepare benchmark data: download from the canonical public source, read a local mirror, or generate.

    python -m skills_cli.evaluation.prepare_data gsm8k math500 [--data_dir MIRROR] [--output_dir DIR]

Output: `DIR/<benchmark>/<split>.jsonl` with at least `id`, `problem`, `expected_answer`. A mirror
(`--data_dir` or $SKILLS_BENCHMARKS_DIR) holds files in that same format. Rows are validated; files are
written atomically and only when their content changed, so preparing twice is a no-op.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

from skills_cli.common.errors import UserError, exits_on_user_error
from skills_cli.common.jsonl import read_jsonl, write_jsonl_atomic
from skills_cli.evaluation.benchmarks import Benchmark, get_benchmark

MIRROR_ENV = "SKILLS_BENCHMARKS_DIR"
DATA_ENV = "SKILLS_CLI_DATA_DIR"


def default_output_dir() -> Path:
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV])
    return Path(os.environ.get("SKILLS_CLI_HOME") or Path.home() / ".skills_cli") / "data"


def validate_rows(
    rows: list[dict], where: str, fields: tuple[str, ...] = ("id", "problem", "expected_answer")
) -> list[dict]:
    """Every row has the benchmark's fields (strings non-empty) and a unique id."""
    seen: set[str] = set()
    for number, row in enumerate(rows, 1):
        for key in fields:
            value = row.get(key)
            if value is None or (isinstance(value, str) and not value.strip()):
                raise UserError(f"{where}: row {number} has no non-empty {key!r}")
        if not isinstance(row.get("id"), str) or not row["id"].strip():
            raise UserError(f"{where}: row {number} has no non-empty string 'id'")
        if row["id"] in seen:
            raise UserError(f"{where}: row {number} repeats id {row['id']!r}")
        seen.add(row["id"])
    if not rows:
        raise UserError(f"{where}: no rows")
    return rows


def download_bytes(url: str, headers: dict[str, str] | None = None, timeout: float = 60) -> bytes:
    """The body at `url` (http(s) or file://); an unreachable source is one error line naming the mirror option."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url)
    for name, value in (headers or {}).items():
        # not re-sent on a redirect: a token for the hub must never reach the storage host it redirects to
        request.add_unredirected_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.read()
    except (urllib.error.URLError, OSError) as error:
        raise UserError(
            f"cannot download {url} ({getattr(error, 'reason', error)}); offline? use --data_dir MIRROR"
        ) from None


def download_rows(url: str) -> list[dict]:
    text = download_bytes(url).decode("utf-8")
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise UserError(f"{url}:{number}: malformed JSON line ({error.msg})") from None
    return rows


def source_rows(benchmark: Benchmark, split: str, mirror: Path | None) -> tuple[list[dict], str]:
    if benchmark.generate is not None:
        return benchmark.generate(split), "generated locally"
    if mirror is not None:
        path = mirror / benchmark.name / f"{split}.jsonl"
        if not path.is_file():
            raise UserError(f"mirror {mirror} has no {benchmark.name}/{split}.jsonl")
        return read_jsonl(path), str(path)
    if split not in benchmark.urls:
        raise UserError(f"{benchmark.name} has no source for split {split!r}")
    url = benchmark.urls[split]
    rows = benchmark.fetch(split) if benchmark.fetch is not None else download_rows(url)
    return benchmark.convert(rows), url


def digest(rows: list[dict]) -> str:
    return hashlib.sha256("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows).encode()).hexdigest()


def prepare(name: str, output_dir: Path, mirror: Path | None = None, split: str | None = None) -> list[str]:
    """Prepare one benchmark (all its splits unless one is named); returns a line per split."""
    benchmark = get_benchmark(name)
    splits = [split] if split else list(benchmark.splits)
    unknown = [s for s in splits if s not in benchmark.splits]
    if unknown:
        raise UserError(f"{name} has no split {unknown[0]!r} (splits: {', '.join(benchmark.splits)})")
    report = []
    for each in splits:
        rows, origin = source_rows(benchmark, each, mirror)
        rows = validate_rows(rows, f"{name}/{each} from {origin}", benchmark.row_fields)
        target = output_dir / name / f"{each}.jsonl"
        if target.is_file() and digest(read_jsonl(target)) == digest(rows):
            report.append(f"{name}/{each}: {len(rows)} rows, up to date ({target})")
            continue
        write_jsonl_atomic(target, rows)
        report.append(f"{name}/{each}: {len(rows)} rows from {origin} -> {target}")
    return report


@exits_on_user_error
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("benchmarks", nargs="+")
    parser.add_argument(
        "--data_dir", default=os.environ.get(MIRROR_ENV), help="local mirror (default $SKILLS_BENCHMARKS_DIR)"
    )
    parser.add_argument("--output_dir", default=None)
    parser.add_argument("--split", default=None)
    args = parser.parse_args(argv)
    output = Path(args.output_dir) if args.output_dir else default_output_dir()
    for name in args.benchmarks:
        for line in prepare(name, output, Path(args.data_dir) if args.data_dir else None, args.split):
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
