"""The report as Markdown: tables, curves as Unicode sparklines, plots linked by file URI."""

from __future__ import annotations

from typing import Any

from skills_cli.pipeline.reporting.model import Artifact, OutputDir, Report, relative_path
from skills_cli.pipeline.reporting.text import (
    counts,
    curve_keys,
    duration,
    eval_rows,
    fmt,
    headline,
    log_location,
    sparkline,
    when,
)


def _md_cell(value: Any) -> str:
    return fmt(value).replace("|", "\\|").replace("\n", " ")


def _md_table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(_md_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return lines + [""]


def render_markdown(report: Report) -> str:
    now = report.generated_at
    lines = [
        f"# Experiment report: {report.expname}",
        "",
        f"Generated {when(now)} by `ns report`. {counts(report)}.",
        "",
    ]
    if len(report.sections) > 1:
        lines += ["Run-after chain: " + " → ".join(s.expname for s in report.sections), ""]
    for section in report.sections:
        lines += [f"## {section.expname}", ""]
        lines += [f"- cluster: {section.cluster}" + (f" (executor {section.executor})" if section.executor else ""),
                  f"- ran after: {', '.join(section.run_after) or 'nothing'}",
                  "- output directories: " + (", ".join(f"`{o.location}`" for o in section.outputs) or "none declared")]  # fmt: skip
        if section.remote_host:
            lines.append(f"- remote files: logs and outputs are on {section.remote_host}; states are as last stored "
                         f"(`ns status {section.expname}` refreshes them)")  # fmt: skip
        lines += ["", "### Jobs", ""]
        lines += _md_table(["job", "state", "reason", "exit", "id", "submitted", "started", "ended", "duration", "log"],
                           [[r.name, r.state.value, r.reason, r.exit_code, r.external_id, when(r.submitted_at),
                             when(r.started_at), when(r.ended_at), duration(r, now), log_location(r, section)]
                            for r in section.records])  # fmt: skip
        for record in section.records:
            if record.uid in section.log_tails:
                lines += [f"Last lines of the log of {record.name} ({record.state.value}):", "", "```",
                          section.log_tails[record.uid], "```", ""]  # fmt: skip
        for output in section.outputs:
            lines += [f"### Outputs in `{output.location}`", ""]
            if output.note:
                lines += [f"_{output.note}_", ""]
            for artifact in output.artifacts:
                lines += _md_artifact(artifact, output)
    return "\n".join(lines).rstrip() + "\n"


def _md_artifact(artifact: Artifact, output: OutputDir) -> list[str]:
    name = f"`{relative_path(artifact, output)}`"
    if artifact.kind == "eval":
        lines = [f"Evaluation metrics ({name})", ""]
        for benchmark, modes in artifact.data.items():
            header, rows = eval_rows(benchmark, modes)
            lines += [f"#### {benchmark}", "", *_md_table(header, rows)]
        return lines
    if artifact.kind == "curves":
        series = artifact.data
        final = headline(series)
        lines = [f"Training metrics ({name})" + ("; final " + ", ".join(f"{k} = **{fmt(v)}**" for k, v in final.items())
                                                 if final else ""), ""]  # fmt: skip
        rows = []
        for key in curve_keys(series):
            points = series[key]
            values = [v for _, v in points]
            rows.append([key, f"{points[0][0]}–{points[-1][0]}", fmt(values[0]), fmt(values[-1]), fmt(min(values)),
                         fmt(max(values)), sparkline(points)])  # fmt: skip
        if rows:
            lines += _md_table(["metric", "steps", "first", "last", "min", "max", "curve"], rows)
        return lines
    if artifact.kind == "summary":
        return [f"Summary ({name})", "", *_md_table(["key", "value"], [[k, v] for k, v in artifact.data.items()])]
    if artifact.kind == "plot":
        return [f"![{artifact.path.name}]({artifact.path.as_uri()})", ""]
    return [f"_{name}: {fmt(artifact.data)}_", ""]
