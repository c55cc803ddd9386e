"""How command results are printed: dry-run text verbatim, job tables with rich, logs as they are."""

from __future__ import annotations

import datetime
import sys
from pathlib import Path
from typing import Any

from skills_cli.pipeline.commands.start_server import ServerHandle
from skills_cli.pipeline.experiment import Submission
from skills_cli.pipeline.progress import styled_state
from skills_cli.pipeline.store import JobRecord


def _when(timestamp: float | None) -> str:
    return datetime.datetime.fromtimestamp(timestamp).strftime("%H:%M:%S") if timestamp else ""


def jobs_table(title: str, records: list[JobRecord]):
    from rich.markup import escape
    from rich.table import Table

    # names and reasons are user text: `[x]` in them must not be read as rich markup
    table = Table(title=escape(title), title_justify="left")
    for column in ("job", "id", "state", "reason", "exit", "started", "ended", "log"):
        table.add_column(column, overflow="fold")
    for record in records:
        table.add_row(escape(record.name), record.external_id or "", styled_state(record.state),
                      escape(record.reason), "" if record.exit_code is None else str(record.exit_code),
                      _when(record.started_at), _when(record.ended_at), record.log_path or "")  # fmt: skip
    return table


def summary_table(name: str, metrics: dict, metric_key: str, extra_keys: tuple[str, ...] = ()):
    """evaluation_mode | num_entries | avg_tokens | <the grader's key> [| judge_correct] | no_answer [| extra keys:
    the grader's other verdicts and summary figures, empty where a mode lacks one]."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(name), title_justify="left")
    judged = all("judge_correct" in values for values in metrics.values())
    columns = [
        "evaluation_mode",
        "num_entries",
        "avg_tokens",
        metric_key,
        *(["judge_correct"] if judged else []),
        "no_answer",
        *extra_keys,
    ]
    for column in columns:
        table.add_column(column, justify="left" if column == "evaluation_mode" else "right")
    for mode, values in metrics.items():
        correct = f"{values[metric_key]:.2f}%"
        if f"{metric_key}_std" in values:
            correct += f" ± {values[f'{metric_key}_std']:.2f}"
        judge = [f"{values['judge_correct']:.2f}%"] if judged else []
        extra = [f"{values[key]:.2f}%" if key in values else "" for key in extra_keys]
        table.add_row(escape(mode), str(int(values["num_entries"])), str(round(values["avg_tokens"])), correct, *judge,
                      f"{values['no_answer']:.2f}%", *extra)  # fmt: skip
    return table


def show_summary(console, result: dict) -> None:
    for benchmark in result["results"]:
        console.print(summary_table(benchmark.name, benchmark.metrics, benchmark.metric_key, benchmark.extra_keys))
    console.print(f"wrote {result['metrics_file']}" + (f" and {result['plot']}" if result["plot"] else ""))
    for line in result["logged"]:
        console.print(f"logged to {line}")


def show(name: str, result: Any) -> int:
    if isinstance(result, Submission) and result.dry_run_text is not None:
        sys.stdout.write(result.dry_run_text)  # verbatim: no markup, no wrapping (and no rich import)
        return 0
    from rich.console import Console

    # piped output (logs, CI, tests) gets a wide console: rich's 80-column default would fold table cells
    console = Console() if sys.stdout.isatty() else Console(width=200)
    if isinstance(result, Submission):
        console.print(jobs_table(f"experiment {result.expname} on {result.cluster}", result.records))
        return 0 if all(not r.state.failed for r in result.records) else 1
    if isinstance(result, ServerHandle):
        if result.submission.dry_run_text is not None:
            sys.stdout.write(result.submission.dry_run_text)
        else:
            print(result.address)
        return 0
    if isinstance(result, Path):
        console.print(f"wrote {result}")
        return 0
    if name == "prepare_data":
        for line in result:
            print(line)
        return 0
    if name == "summarize_results":
        show_summary(console, result)
        return 0
    if name == "status":
        if not result:
            console.print("no experiments yet")
        for expname, records in result.items():
            console.print(jobs_table(f"experiment {expname}", records))
        return 0
    if name == "logs":
        for record, text in result:
            sys.stdout.write(f"### {record.expname}/{record.name} ({record.state.value})\n{text}\n")
        return 0
    if name == "cancel":
        console.print(jobs_table("after cancel", result))
        return 0
    console.print(result)
    return 0
