"""`ns report EXPNAME`: one file describing an experiment and everything it ran after (jobs, states, times,
logs, metrics, curves, plots); see skills_cli/pipeline/reporting/ for what is read."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from skills_cli.pipeline.options import CommandSpec, WrappedArguments, option


@dataclass(frozen=True, kw_only=True)
class ReportSpec:
    expname: str = option(..., "Experiment name.", positional=True)
    output: str | None = option(
        None, "File to write (default: EXPNAME-report.html, or .md with --format md, in the current directory)."
    )
    format: str | None = option(
        None,
        "html (one self-contained file: styles, curves and plots inline) or md "
        "(Markdown; plots are linked). Default: md if --output ends in .md, else html.",
        choices=("html", "md"),
    )


def report_impl(extra: WrappedArguments, spec: ReportSpec) -> Path:
    from skills_cli.pipeline.reporting import write_report

    return write_report(spec.expname, spec.output, spec.format)


REPORT = CommandSpec(
    "report",
    "Write a report of an experiment and every experiment it ran after: jobs with states, times and logs, and "
    "the metrics, training curves and pass@k plots found in their output directories.",
    spec_type=ReportSpec,
    impl=report_impl,
)
