"""The report as one self-contained HTML page: styles, SVG curves and base64 plots inline, nothing fetched."""

from __future__ import annotations

import base64
import html
from typing import Any

from skills_cli.pipeline.reporting.model import Artifact, ExperimentSection, OutputDir, Report, relative_path
from skills_cli.pipeline.reporting.text import (
    counts,
    curve_keys,
    duration,
    eval_rows,
    fmt,
    headline,
    log_location,
    svg_curve,
    when,
)

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;color:#222}
h1{font-size:1.5em}h2{font-size:1.25em;border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
h3{font-size:1.05em}table{border-collapse:collapse;margin:.5em 0 1em}
th,td{border:1px solid #ddd;padding:.25em .5em;text-align:left;vertical-align:top;font-size:.9em}
th{background:#f3f3f3}td.num{text-align:right}code,pre{font-family:ui-monospace,Menlo,monospace;font-size:.85em}
pre{background:#f7f7f7;padding:.5em;overflow-x:auto}.SUCCEEDED{color:#137333;font-weight:600}
.FAILED,.TIMEOUT{color:#b3261e;font-weight:600}.CANCELLED{color:#a56600;font-weight:600}
.RUNNING{color:#0b57d0;font-weight:600}.note{color:#666}.chain{font-size:1.05em}
svg.curve{margin:0 1em 1em 0;font:11px sans-serif}svg.curve .frame{fill:none;stroke:#ccc}
svg.curve polyline{fill:none;stroke:#0b57d0;stroke-width:1.6}svg.curve .dots{fill:#0b57d0}
img.plot{max-width:100%;border:1px solid #eee}
"""


def _table(header: list[str] | None, rows: list[list[str]], numeric_from: int = 99) -> str:
    head = "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>" if header else ""
    body = "".join(
        "<tr>" + "".join(f'<td{" class=num" if i >= numeric_from else ""}>{cell}</td>' for i, cell in enumerate(row))
        + "</tr>" for row in rows
    )  # fmt: skip
    return f"<table>{head}{body}</table>"


def _e(value: Any) -> str:
    return html.escape(fmt(value))


def render_html(report: Report) -> str:
    now = report.generated_at
    parts = [f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{html.escape(report.expname)} report</title>"
             f"<style>{_CSS}</style></head><body>",
             f"<h1>Experiment report: {html.escape(report.expname)}</h1>",
             f"<p class=note>Generated {when(now)} by <code>ns report</code>. {html.escape(counts(report))}.</p>"]  # fmt: skip
    if len(report.sections) > 1:
        chain = " &rarr; ".join(
            f'<a href="#exp-{i}">{html.escape(s.expname)}</a>' for i, s in enumerate(report.sections)
        )
        parts.append(f"<p class=chain>Run-after chain: {chain}</p>")
    for index, section in enumerate(report.sections):
        parts.append(_html_section(index, section, now))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _html_section(index: int, section: ExperimentSection, now: float) -> str:
    out = [f'<h2 id="exp-{index}">{html.escape(section.expname)}</h2>']
    meta = [["cluster", _e(section.cluster) + (f" (executor {_e(section.executor)})" if section.executor else "")],
            ["ran after", _e(", ".join(section.run_after)) or "nothing"],
            ["output directories", "<br>".join(f"<code>{_e(o.location)}</code>" for o in section.outputs) or "none declared"]]  # fmt: skip
    if section.remote_host:
        meta.append(["remote files", f"logs and outputs are on {_e(section.remote_host)}; states are as last stored "
                                     f"(<code>ns status {_e(section.expname)}</code> refreshes them)"])  # fmt: skip
    out.append(_table(None, meta))
    rows = [[_e(r.name), f'<span class="{r.state.value}">{r.state.value}</span>', _e(r.reason),
             _e(r.exit_code), _e(r.external_id), _e(when(r.submitted_at)), _e(when(r.started_at)),
             _e(when(r.ended_at)), _e(duration(r, now)), f"<code>{_e(log_location(r, section))}</code>"]
            for r in section.records]  # fmt: skip
    out.append("<h3>Jobs</h3>")
    out.append(_table(["job", "state", "reason", "exit", "id", "submitted", "started", "ended", "duration", "log"], rows)
               if rows else "<p class=note>no jobs recorded</p>")  # fmt: skip
    for record in section.records:
        if record.uid in section.log_tails:
            out.append(f"<details><summary>last lines of the log of {_e(record.name)} ({record.state.value})"
                       f"</summary><pre>{html.escape(section.log_tails[record.uid])}</pre></details>")  # fmt: skip
    for output in section.outputs:
        out.append(f"<h3>Outputs in <code>{_e(output.location)}</code></h3>")
        if output.note:
            out.append(f"<p class=note>{_e(output.note)}</p>")
        for artifact in output.artifacts:
            out.append(_html_artifact(artifact, output))
    return "\n".join(out)


def _html_artifact(artifact: Artifact, output: OutputDir) -> str:
    name = f"<code>{_e(relative_path(artifact, output))}</code>"
    if artifact.kind == "eval":
        parts = [f"<p>Evaluation metrics ({name})</p>"]
        for benchmark, modes in artifact.data.items():
            header, rows = eval_rows(benchmark, modes)
            parts.append(f"<h4>{_e(benchmark)}</h4>" + _table(header, [[_e(c) for c in row] for row in rows], 1))
        return "\n".join(parts)
    if artifact.kind == "curves":
        series = artifact.data
        keys = curve_keys(series)
        final = headline(series)
        parts = [f"<p>Training metrics ({name}): {len(next(iter(series.values()), []))} step(s)"
                 + ("; final " + ", ".join(f"{_e(k)} = <b>{_e(v)}</b>" for k, v in final.items()) if final else "")
                 + "</p>"]  # fmt: skip
        parts.append("<div>" + "".join(svg_curve(k, series[k]) for k in keys) + "</div>")
        last = [[_e(k), _e(points[-1][0]), _e(points[-1][1])] for k, points in sorted(series.items()) if points]
        parts.append(f"<details><summary>last value of every metric ({len(last)})</summary>"
                     + _table(["metric", "step", "value"], last, 1) + "</details>")  # fmt: skip
        return "\n".join(parts)
    if artifact.kind == "summary":
        rows = [[_e(k), _e(v)] for k, v in artifact.data.items()]
        return f"<p>Summary ({name})</p>" + _table(["key", "value"], rows, 1)
    if artifact.kind == "plot":
        if artifact.data is None:
            return f"<p>Plot {name}: too large to embed, at <code>{_e(artifact.path)}</code></p>"
        encoded = base64.b64encode(artifact.data).decode()
        return f'<p>Plot ({name})</p><img class="plot" alt="{_e(artifact.path.name)}" src="data:image/png;base64,{encoded}">'
    return f"<p class=note>{name}: {_e(artifact.data)}</p>"
