"""Summarize graded evaluation results: metrics per benchmark, metrics.json, a pass@k plot, tracker scalars.

    python -m skills_cli.evaluation.summarize RESULTS_DIR [--wandb_name N] [--wandb_project P]
                                              [--swanlab_project P] [--max_k K] [--no_plot]

RESULTS_DIR holds one folder per benchmark (`eval-results/<benchmark>/output[-rsS].jsonl`, or the benchmark
folders directly). Samples are matched across seed files by row `id` (else by position). Each folder is
summarized on the metric keys of its benchmark's grader (a folder named after no known benchmark: math's
`symbolic_correct`); metrics.json is written as an `evaluation` artifact (`skills_cli.common.artifacts`).
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from skills_cli.common.artifacts import EVAL_METRICS_FILE, EVALUATION, PASS_AT_K_PLOT, write_json_artifact
from skills_cli.common.errors import UserError
from skills_cli.common.jsonl import read_jsonl
from skills_cli.evaluation.benchmarks import BENCHMARKS, grader_for_results
from skills_cli.evaluation.grade import result_files
from skills_cli.evaluation.graders import PREDICTED_ANSWER_KEY, Grader
from skills_cli.evaluation.judge import JUDGE_KEY
from skills_cli.evaluation.metrics import (
    REWARD_MODEL_SCORE_KEY,
    Sample,
    compute_metrics,
    compute_subset_metrics,
    format_table,
)


@dataclass
class BenchmarkResults:
    name: str
    metric_key: str  # the headline accuracy of its grader (the table's column, the plot's y axis)
    metrics: dict[str, dict[str, float]]
    subsets: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    # further columns of its table: the grader's other verdict keys, then its summary figures
    extra_keys: tuple[str, ...] = ()


def benchmark_dirs(results_dir: Path) -> list[Path]:
    """`results_dir/eval-results/*` when present, else the sub-folders holding result files."""
    root = results_dir / "eval-results" if (results_dir / "eval-results").is_dir() else results_dir
    if not root.is_dir():
        raise UserError(f"no results directory {results_dir}")
    found = sorted(d for d in root.iterdir() if d.is_dir() and any(d.glob("output*.jsonl")))
    if not found:
        raise UserError(f"{results_dir} has no benchmark results (folders with output*.jsonl)")
    return found


def load_problems(directory: Path, graded_key: str) -> list[list[dict]]:
    """The graded rows of each problem across the seed files (in seed order); every row must hold `graded_key`."""
    files = result_files(directory)
    runs = [read_jsonl(path) for path in files]
    for path, rows in zip(files, runs, strict=True):
        ungraded = next((i for i, row in enumerate(rows, 1) if graded_key not in row), None)
        if ungraded:
            raise UserError(f"{path}: row {ungraded} is not graded (run `python -m skills_cli.evaluation.grade`)")
    keyed = all("id" in row for rows in runs for row in rows)
    order = [row["id"] if keyed else index for index, row in enumerate(runs[0])]
    by_key = [{(row["id"] if keyed else index): row for index, row in enumerate(rows)} for rows in runs]
    problems = []
    for key in order:
        rows = [run[key] for run in by_key if key in run]
        if len(rows) != len(runs):
            raise UserError(f"{directory}: problem {key!r} is missing from some of {[p.name for p in files]}")
        problems.append(rows)
    return problems


def to_sample(row: dict, correct_key: str) -> Sample:
    return Sample(correct=bool(row[correct_key]), predicted_answer=row.get(PREDICTED_ANSWER_KEY),
                  num_generated_tokens=row.get("num_generated_tokens"), generation_time=row.get("generation_time"),
                  reward_model_score=row.get(REWARD_MODEL_SCORE_KEY))  # fmt: skip


def subset_keys(benchmark: str) -> tuple[str, ...]:
    return BENCHMARKS.get(benchmark).subset_keys if benchmark in BENCHMARKS else ()


def with_more_keys(metrics: dict, problem_rows: list[list[dict]], keys: tuple[str, ...], max_k: int | None) -> dict:
    """Each mode also gets every further verdict key that all rows hold (the grader's others, the judge's
    `judge_correct`): the same estimators over those verdicts."""
    for key in keys:
        if all(key in row for rows in problem_rows for row in rows):
            samples = [[to_sample(row, key) for row in rows] for rows in problem_rows]
            more = compute_metrics(samples, max_k, metric_key=key)
            metrics = {mode: {**values, key: more[mode][key]} for mode, values in metrics.items()}
    return metrics


def summary_figures(grader: Grader, problem_rows: list[list[dict]]) -> dict[str, float]:
    """The grader's figures that are not accuracies over rows (IFEval's instruction-level accuracy)."""
    return grader.summary_metrics(problem_rows) if grader.summary_metrics is not None else {}


def voted(metrics: dict, grader: Grader) -> dict:
    """The metrics without majority@k (and rm_majority@k) modes when the grader's answers cannot be voted on
    (code, free text)."""
    return {mode: values for mode, values in metrics.items()
            if grader.majority_voting or not mode.startswith(("majority@", "rm_majority@"))}  # fmt: skip


def summarize_benchmark(directory: Path, max_k: int | None) -> BenchmarkResults:
    grader = grader_for_results(directory.name)
    key, *other_keys = grader.metric_keys
    problem_rows = load_problems(directory, key)
    problems = [[to_sample(row, key) for row in rows] for rows in problem_rows]
    metrics = with_more_keys(voted(compute_metrics(problems, max_k, metric_key=key), grader), problem_rows,
                             (*other_keys, JUDGE_KEY), max_k)  # fmt: skip
    # the figures average over every sample, as the first mode (greedy or pass@1[avg-of-n]) does: they join it
    first_mode = next(iter(metrics))
    figures = summary_figures(grader, problem_rows)
    metrics[first_mode] = {**metrics[first_mode], **figures}
    shown = tuple(other for other in other_keys if other in metrics[first_mode])
    results = BenchmarkResults(directory.name, key, metrics, extra_keys=shown + tuple(figures))
    first_rows = [rows[0] for rows in problem_rows]
    for subset_key in subset_keys(directory.name):
        if all(subset_key in row for row in first_rows):
            labels = [f"{subset_key}={row[subset_key]}" for row in first_rows]
            subsets = compute_subset_metrics(problems, labels, max_k, metric_key=key)
            results.subsets.update({label: voted(value, grader) for label, value in subsets.items() if label != "all"})
    return results


def metrics_json(results: list[BenchmarkResults]) -> dict:
    data: dict = {}
    for result in results:
        data[result.name] = result.metrics
        for label, metrics in result.subsets.items():
            data[f"{result.name}[{label}]"] = metrics
    return data


def curve(metrics: dict[str, dict[str, float]], prefix: str, key: str) -> tuple[list[int], list[float]]:
    points = sorted((int(mode.split("@")[1]), m[key]) for mode, m in metrics.items()
                    if mode.startswith(prefix + "@") and mode.split("@")[1].isdigit())  # fmt: skip
    return [k for k, _ in points], [v for _, v in points]


def plot(results: list[BenchmarkResults], path: Path) -> Path | None:
    """pass@k and majority@k against k (k on a log2 axis), one panel per benchmark with more than one sample."""
    sampled = [r for r in results if any(mode.startswith("pass@") for mode in r.metrics)]
    if not sampled:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(sampled), figsize=(4.5 * len(sampled), 3.6), squeeze=False)
    for axis, result in zip(axes[0], sampled, strict=True):
        base = next(m for mode, m in result.metrics.items() if mode.startswith("pass@1[avg-of-"))
        for prefix, style in (("pass", "o-"), ("majority", "s--")):
            ks, values = curve(result.metrics, prefix, result.metric_key)
            axis.plot([1, *ks], [base[result.metric_key], *values], style, label=f"{prefix}@k")
        axis.set_xscale("log", base=2)
        axis.set_title(result.name)
        axis.set_xlabel("k")
        axis.set_ylabel("accuracy (%)")
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def log_scalars(data: dict, wandb_name: str | None, wandb_project: str, wandb_group: str | None,
                swanlab_project: str | None) -> list[str]:  # fmt: skip
    """Every metric as `benchmark/mode/metric` to wandb and/or swanlab (modes from WANDB_MODE / SWANLAB_MODE)."""
    scalars = {f"{bench}/{mode}/{key}": value for bench, modes in data.items() for mode, values in modes.items()
               for key, value in values.items() if isinstance(value, (int, float))}  # fmt: skip
    done = []
    if wandb_name:
        import wandb

        # dir from the environment at call time: wandb caches its settings from the first init in a process
        run = wandb.init(project=wandb_project, name=wandb_name, group=wandb_group, job_type="eval",
                         dir=os.environ.get("WANDB_DIR"))  # fmt: skip
        run.summary.update(scalars)
        run.log(scalars)
        done.append(f"wandb run {run.dir}")
        run.finish()
    if swanlab_project:
        import swanlab

        swanlab.init(project=swanlab_project, experiment_name=wandb_name or "eval")
        swanlab.log(scalars)
        swanlab.finish()
        done.append(f"swanlab project {swanlab_project}")
    return done


def summarize(
    results_dir: str | Path, max_k: int | None = None, make_plot: bool = True
) -> tuple[list[BenchmarkResults], Path]:
    """Compute everything and write metrics.json (+ the plot) into results_dir; returns the results."""
    directory = Path(results_dir)
    results = [summarize_benchmark(d, max_k) for d in benchmark_dirs(directory)]
    written = write_json_artifact(directory / EVAL_METRICS_FILE, EVALUATION, metrics_json(results))
    if make_plot:
        plot(results, directory / PASS_AT_K_PLOT)
    return results, written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results_dir")
    parser.add_argument("--max_k", type=int, default=None)
    parser.add_argument("--no_plot", action="store_true")
    parser.add_argument("--wandb_name", default=None)
    parser.add_argument("--wandb_project", default="skills-cli")
    parser.add_argument("--wandb_group", default=None)
    parser.add_argument("--swanlab_project", default=None)
    args = parser.parse_args(argv)
    try:
        results, written = summarize(args.results_dir, args.max_k, not args.no_plot)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for result in results:
        print(format_table(result.name, result.metrics, metric_key=result.metric_key, extra_keys=result.extra_keys))
    print(f"wrote {written}")
    for line in log_scalars(metrics_json(results), args.wandb_name, args.wandb_project, args.wandb_group,
                            args.swanlab_project):  # fmt: skip
        print(f"logged to {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
