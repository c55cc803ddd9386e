"""Experiment reports (`ns report`): an experiment and every experiment it ran after, from the store, with the
metrics found in their output directories, as one self-contained HTML file or as Markdown.

What is read, per experiment (collect.py): its jobs (state, times, log, exit code; local jobs are refreshed
first, jobs of remote executors are shown as the store last saw them, without contacting the cluster), its
`--run_after` names (recorded per submission, so upstreams that had already finished count too), and the
output directories its commands declared (`--output_dir`). In each readable output directory these files are
recognised:

- `metrics.json` from `ns summarize_results` (evaluation tables): one table per benchmark;
- `metrics.jsonl` (one row per training step, as both trainers write): loss/reward/accuracy curves and the
  final value of every metric;
- a trainer's `metrics.json` (per-step series) when no `metrics.jsonl` sits next to it, and training
  summaries (`summary.json`, or a flat `metrics.json`);
- `pass_at_k.png`: embedded (HTML) or linked (Markdown).

JSON files are read through `skills_cli.common.artifacts`, which knows each file's kind. Curves are drawn as
inline SVG, plots embedded as base64: the HTML file needs no network and no other file. Output directories of
jobs that ran on a cluster reached over SSH are not fetched; the report names the host and path where they are.
"""

from __future__ import annotations

from pathlib import Path

from skills_cli.common.errors import UserError
from skills_cli.pipeline.reporting.collect import collect
from skills_cli.pipeline.reporting.html_page import render_html
from skills_cli.pipeline.reporting.markdown import render_markdown

__all__ = ["collect", "render_html", "render_markdown", "write_report"]


def write_report(expname: str, output: str | None, form: str | None) -> Path:
    if form is None:
        form = "md" if output and Path(output).suffix.lower() in (".md", ".markdown") else "html"
    from skills_cli.pipeline.plan import safe_name

    path = Path(output) if output else Path(f"{safe_name(expname)}-report.{form}")
    report = collect(expname)
    text = render_html(report) if form == "html" else render_markdown(report)
    if path.parent and not path.parent.is_dir():
        raise UserError(f"--output {path}: no directory {path.parent}")
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path.resolve()
