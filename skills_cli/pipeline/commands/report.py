"""`ns report EXPNAME`: one file describing an experiment and everything it ran after (jobs, states, times,
logs, metrics, curves, plots); see skills_cli/pipeline/reporting/ for what is read."""

from __future__ import annotations

from pathlib import Path

from skills_cli.pipeline.options import CommandSpec, Option, WrappedArguments


def report_impl(extra: WrappedArguments, expname: str, output: str | None, format: str | None) -> Path:  # noqa: A002
    from skills_cli.pipeline.reporting import write_report

    return write_report(expname, output, format)


REPORT = CommandSpec(
    "report",
    "Write a report of an experiment and every experiment it ran after: jobs with states, times and logs, and "
    "the metrics, training curves and pass@k plots found in their output directories.",
    (
        Option("expname", str, ..., "Experiment name.", positional=True),
        Option(
            "output",
            str | None,
            None,
            "File to write (default: EXPNAME-report.html, or .md with --format md, in the current directory).",
        ),  # fmt: skip
        Option(
            "format",
            str | None,
            None,
            "html (one self-contained file: styles, curves and plots inline) or md "
            "(Markdown; plots are linked). Default: md if --output ends in .md, else html.",
            choices=("html", "md"),
        ),  # fmt: skip
    ),
    report_impl,
)
