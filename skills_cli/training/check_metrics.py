"""Assertions over a training run's metrics: `python -m skills_cli.training.check_metrics` (also tools/check_metrics).

    python -m skills_cli.training.check_metrics runs/grpo/logs/metrics.json \\
        'median(data["train/token_mult_prob_error"]) < 1.05' \\
        'last(data["train/reward"]) > first(data["train/reward"])'

`metrics.json` is the per-step layout NeMo-RL's functional tests use, `{"train/loss": {"1": 0.3, "2": 0.2}, ...}`;
a `metrics.jsonl` (one row per step, as both our trainers write) is read into the same layout. In an
expression `data["name"]` is that metric's {step: value} series, and `min`, `max`, `mean`, `median`, `first`,
`last`, `len`, `sum` take a series (or a list). Before the expressions, every value of every metric is checked
to be finite (NaN or inf fails the run; `--allow_nonfinite` skips this).

Each check prints `PASS` or `FAIL` with the value(s) it saw; the exit status is 0 when all pass, 1 when any
fails, 2 for unusable input (missing file, an expression naming an unknown metric: the closest names are
suggested).
"""

from __future__ import annotations

import argparse
import ast
import difflib
import math
import statistics
import sys
from pathlib import Path

from skills_cli.common.artifacts import TRAINING_SERIES, read_json_artifact
from skills_cli.common.errors import UserError, exits_on_user_error
from skills_cli.common.jsonl import iter_numbered_jsonl
from skills_cli.training.components.metrics import series_from_rows

Series = dict  # {step: value}


def load_metrics(path: str | Path) -> dict[str, Series]:
    """{metric: {step: value}} from a metrics.json (series layout) or a metrics.jsonl (rows with a `step`)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no metrics file at {path}")
    if path.suffix == ".jsonl":
        return series_from_rows(row for _, row in iter_numbered_jsonl(path, kind="metrics"))
    kind, data = read_json_artifact(path)
    if kind is not TRAINING_SERIES:
        raise UserError(f"{path}: expected {{metric: {{step: value}}}} (the per-step layout); "
                        "pass the run's metrics.jsonl for a run that wrote a summary instead")  # fmt: skip
    return {name: {int(step): value for step, value in series.items()} for name, series in data.items()}


def _values(series) -> list:
    if isinstance(series, dict):
        return [series[step] for step in sorted(series)]
    return list(series)


def _first(series):
    return _values(series)[0]


def _last(series):
    return _values(series)[-1]


FUNCTIONS = {
    "min": lambda s: min(_values(s)),
    "max": lambda s: max(_values(s)),
    "mean": lambda s: statistics.fmean(_values(s)),
    "median": lambda s: statistics.median(_values(s)),
    "sum": lambda s: sum(_values(s)),
    "len": lambda s: len(_values(s)),
    "first": _first,
    "last": _last,
    "abs": abs,
    "all": all,
    "any": any,
    "math": math,
}


class MetricsView(dict):
    """`data[...]` in an expression: an unknown metric is an error that names the closest known ones."""

    def __missing__(self, name):
        close = difflib.get_close_matches(str(name), list(self), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else f"; known: {', '.join(sorted(self))}"
        raise UserError(f"no metric {name!r} in the metrics file{hint}")


def nonfinite_values(metrics: dict[str, Series]) -> list[str]:
    bad = []
    for name, series in sorted(metrics.items()):
        for step, value in sorted(series.items()):
            if value is None or (isinstance(value, float) and not math.isfinite(value)):
                bad.append(f"{name} at step {step}: {value}")
    return bad


def evaluate(expression: str, metrics: dict[str, Series]) -> bool:
    """The truth of one expression over `metrics` (no builtins beyond FUNCTIONS; syntax errors are UserErrors)."""
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError as error:
        raise UserError(f"cannot parse {expression!r}: {error.msg}") from None
    code = compile(tree, "<check>", "eval")
    return bool(eval(code, {"__builtins__": {}}, {**FUNCTIONS, "data": MetricsView(metrics)}))  # noqa: S307


def check(path: str | Path, expressions: list[str], allow_nonfinite: bool = False, out=None) -> bool:
    """Run every check, print one line each (to `out`, default stdout); True when all pass."""
    out = out or sys.stdout
    metrics = load_metrics(path)
    if not metrics:
        raise UserError(f"{path} holds no metrics")
    passed = True
    if not allow_nonfinite:
        bad = nonfinite_values(metrics)
        print(f"{'FAIL' if bad else 'PASS'}  all values finite" + (f": {'; '.join(bad[:5])}" if bad else ""), file=out)
        passed = not bad
    for expression in expressions:
        ok = evaluate(expression, metrics)
        print(f"{'PASS' if ok else 'FAIL'}  {expression}", file=out)
        passed = passed and ok
    return passed


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="check_metrics", description=__doc__.split("\n\n")[0])
    parser.add_argument("metrics", help="metrics.json (per-step series) or metrics.jsonl")
    parser.add_argument("checks", nargs="*", help='Python expressions over data["metric"], e.g. max(data["x"]) < 1')
    parser.add_argument("--allow_nonfinite", action="store_true", help="do not fail on NaN/inf values")
    return parser.parse_args(argv)


@exits_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return 0 if check(args.metrics, args.checks, args.allow_nonfinite) else 1


if __name__ == "__main__":
    sys.exit(main())
