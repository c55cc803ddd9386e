"""Experiment reports (`ns report`): an experiment and every experiment it ran after, from the store, with the
metrics found in their output directories, as one self-contained HTML file or as Markdown.

What is read, per experiment: its jobs (state, times, log, exit code; local jobs are refreshed first, Slurm
jobs are shown as the store last saw them, without contacting the cluster), its `--run_after` names (recorded
per submission, so upstreams that had already finished count too), and the output directories its commands
declared (`--output_dir`). In each readable output directory these files are recognised:

- `metrics.json` from `ns summarize_results` ({benchmark: {mode: metrics}}): one table per benchmark;
- `metrics.jsonl` (one row per training step, as both trainers write): loss/reward/accuracy curves and the
  final value of every metric;
- `metrics.json` as per-step series ({metric: {step: value}}, the GRPO trainer's) when no `metrics.jsonl`
  sits next to it, and flat summaries (`metrics.json` of SFT, `summary.json` of GRPO);
- `pass_at_k.png`: embedded (HTML) or linked (Markdown).

Curves are drawn as inline SVG, plots embedded as base64: the HTML file needs no network and no other file.
Output directories of jobs that ran on a Slurm cluster reached over SSH are not fetched; the report names
the host and path where they are.
"""

from __future__ import annotations

import base64
import datetime
import html
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skills_cli.common.errors import UserError
from skills_cli.pipeline.cluster import ClusterConfig, ExecutorKind
from skills_cli.pipeline.store import JobRecord, Store

RECOGNISED = ("metrics.json", "metrics.jsonl", "summary.json", "pass_at_k.png")
SKIPPED_DIRS = {"checkpoints", "final_hf", "tensorboard", "wandb", "swanlog", "__pycache__"}
MAX_DEPTH = 4  # below an output directory
MAX_ENTRIES = 20_000  # directory entries looked at per output directory
MAX_IMAGE_BYTES = 8 * 2**20
CURVE_WORDS = ("loss", "reward", "accuracy")
MAX_CURVES = 6
LOG_TAIL_LINES = 20


# -- what a report holds ----------------------------------------------------------------------------------
@dataclass
class Artifact:
    """One recognised file. kind: eval | curves | summary | plot | other."""

    kind: str
    path: Path
    data: Any = None


@dataclass
class OutputDir:
    declared: str  # as the command recorded it (a path where the jobs ran)
    location: str  # where that is, for a reader: a local path or host:path
    local: Path | None  # the path this machine reads, None when remote
    artifacts: list[Artifact] = field(default_factory=list)
    note: str = ""


@dataclass
class ExperimentSection:
    expname: str
    cluster: str
    executor: str
    run_after: list[str]
    records: list[JobRecord]
    outputs: list[OutputDir]
    remote_host: str | None = None  # jobs' logs and outputs live there (Slurm over SSH)
    log_tails: dict[str, str] = field(default_factory=dict)  # uid -> last lines of a failed local job's log


@dataclass
class Report:
    expname: str
    sections: list[ExperimentSection]  # upstream experiments first, the reported one last
    generated_at: float


# -- collecting -------------------------------------------------------------------------------------------
def upstream_chain(expname: str, store: Store) -> list[str]:
    """The experiment and everything it ran after, transitively, upstream first."""
    order: list[str] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen or not store.has_experiment(name):
            return
        seen.add(name)
        for upstream in direct_upstreams(name, store):
            visit(upstream)
        order.append(name)

    visit(expname)
    return order


def direct_upstreams(expname: str, store: Store) -> list[str]:
    names: list[str] = []
    for submission in store.submissions(expname):
        names += submission.run_after
    for record in store.jobs(expname):  # experiments stored before submissions were recorded
        for uid in record.depends_on:
            try:
                names.append(store.job(uid).expname)
            except KeyError:
                continue
    return [n for n in dict.fromkeys(names) if n != expname]


def load_cluster(name: str, store: Store) -> ClusterConfig | None:
    from skills_cli.pipeline.experiment import cluster_of

    try:
        return cluster_of(name, store)
    except UserError:
        return None


def fresh_records(records: list[JobRecord], store: Store) -> list[JobRecord]:
    """Local jobs refreshed (cheap, no network); Slurm jobs as stored."""
    from skills_cli.pipeline.experiment import refresh

    local = [r for r in records if r.executor != ExecutorKind.SLURM.value]
    try:
        updated = {r.uid: r for r in refresh(local, store, {})}
    except UserError:
        updated = {}
    return [updated.get(r.uid, r) for r in records]


def host_path(path: str, cluster: ClusterConfig | None) -> str:
    """A path inside a local Docker job, as this machine sees it (through the cluster's mounts)."""
    if cluster is None or cluster.executor is not ExecutorKind.LOCAL:
        return path
    for mount in sorted(cluster.mount_list(), key=lambda m: len(m.target), reverse=True):
        if path == mount.target or path.startswith(mount.target.rstrip("/") + "/"):
            return mount.source.rstrip("/") + path[len(mount.target.rstrip("/")) :]
    return path


def collect(expname: str, store: Store | None = None) -> Report:
    store = store or Store()
    if not store.has_experiment(expname):
        known = ", ".join(store.experiment_names()[-20:]) or "none yet"
        raise UserError(f"no experiment named {expname!r} (known: {known})")
    sections = [collect_section(name, store) for name in upstream_chain(expname, store)]
    return Report(expname=expname, sections=sections, generated_at=time.time())


def collect_section(expname: str, store: Store) -> ExperimentSection:
    records = fresh_records(store.jobs(expname), store)
    submissions = store.submissions(expname)
    cluster_name = submissions[-1].cluster if submissions else (records[-1].cluster if records else "")
    executor = records[-1].executor if records else ""
    cluster = load_cluster(cluster_name, store) if cluster_name else None
    remote_host = None
    if executor == ExecutorKind.SLURM.value:
        remote_host = cluster.ssh_tunnel.host if cluster and cluster.ssh_tunnel else None
        if cluster is None:
            remote_host = f"cluster {cluster_name}"  # its config is gone: the name is all we know
    run_after = list(dict.fromkeys(name for s in submissions for name in s.run_after))
    declared = list(dict.fromkeys(path for s in submissions for path in s.outputs))
    outputs = [output_dir(path, cluster, remote_host) for path in declared]
    tails = {}
    if remote_host is None:
        from skills_cli.pipeline.executors.local import read_log_files
        from skills_cli.pipeline.secrets import Masker

        mask = Masker.for_env(cluster.job_env(strict=False) if cluster else {})  # a job may print its secrets
        for record in records:
            if record.state.failed and record.log_path:
                tails[record.uid] = mask(read_log_files(record.log_path, LOG_TAIL_LINES))
    return ExperimentSection(expname=expname, cluster=cluster_name, executor=executor,
                             run_after=run_after or direct_upstreams(expname, store), records=records,
                             outputs=outputs, remote_host=remote_host, log_tails=tails)  # fmt: skip


def output_dir(declared: str, cluster: ClusterConfig | None, remote_host: str | None) -> OutputDir:
    if remote_host is not None:
        return OutputDir(declared, f"{remote_host}:{declared}", None,
                         note=f"on the cluster ({remote_host}), not fetched; for evaluation results "
                              f"`ns summarize_results --cluster {cluster.name if cluster else 'NAME'} {declared}` "
                              "fetches and summarizes them")  # fmt: skip
    local = Path(host_path(declared, cluster))
    out = OutputDir(declared, str(local), local)
    if not local.exists():
        out.note = "does not exist (yet)"
        return out
    out.artifacts = scan(local)
    if not out.artifacts:
        out.note = "no metrics files or plots found"
    return out


def find_files(root: Path) -> list[Path]:
    """Recognised files under root (bounded depth and effort; checkpoints and tracker folders skipped)."""
    if root.is_file():
        return [root] if root.name in RECOGNISED else []
    found: list[Path] = []
    entries = 0
    for directory, subdirs, files in os.walk(root):
        depth = len(Path(directory).relative_to(root).parts)
        subdirs[:] = sorted(d for d in subdirs if d not in SKIPPED_DIRS and not d.startswith(".")
                            and depth < MAX_DEPTH)  # fmt: skip
        entries += len(files) + len(subdirs)
        found += [Path(directory) / name for name in sorted(files) if name in RECOGNISED]
        if entries > MAX_ENTRIES:
            break
    return found


def scan(root: Path) -> list[Artifact]:
    artifacts = []
    files = find_files(root)
    for path in files:
        try:
            artifact = read_artifact(path, has_rows=(path.parent / "metrics.jsonl") in files)
        except (OSError, UnicodeDecodeError) as error:
            artifact = Artifact("other", path, f"unreadable: {error}")
        if artifact is not None:
            artifacts.append(artifact)
    order = ("eval", "curves", "summary", "plot", "other")
    return sorted(artifacts, key=lambda a: order.index(a.kind))  # stable: files stay in path order per kind


def read_artifact(path: Path, has_rows: bool) -> Artifact | None:
    if path.suffix == ".png":
        size = path.stat().st_size
        data = path.read_bytes() if size <= MAX_IMAGE_BYTES else None
        return Artifact("plot", path, data)
    if path.suffix == ".jsonl":
        return Artifact("curves", path, series_from_rows(path))
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        return Artifact("other", path, f"not valid JSON: {error}")
    if is_eval_metrics(data):
        return Artifact("eval", path, data)
    if is_series(data):
        if has_rows:
            return None  # the same numbers as the metrics.jsonl next to it
        return Artifact("curves", path, {k: sorted((int(s), v) for s, v in series.items() if _number(v))
                                         for k, series in data.items()})  # fmt: skip
    if isinstance(data, dict) and all(not isinstance(v, (dict, list)) for v in data.values()):
        return Artifact("summary", path, data)
    return Artifact("other", path, "unrecognised layout")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_eval_metrics(data: Any) -> bool:
    """{benchmark: {mode: {"symbolic_correct": ...}}}, as `ns summarize_results` writes."""
    return (isinstance(data, dict) and bool(data)
            and all(isinstance(modes, dict) and modes and all(isinstance(m, dict) and "num_entries" in m
                                                                for m in modes.values()) for modes in data.values()))  # fmt: skip


def is_series(data: Any) -> bool:
    """{metric: {step: value}}: NeMo-RL's functional-test layout."""
    return (isinstance(data, dict) and bool(data)
            and all(isinstance(s, dict) and s and all(str(k).lstrip("-").isdigit() for k in s) for s in data.values()))  # fmt: skip


def series_from_rows(path: Path) -> dict[str, list[tuple[int, float]]]:
    """{metric: [(step, value)]} from one JSON row per step (lines that are not JSON objects are skipped)."""
    series: dict[str, list[tuple[int, float]]] = {}
    with open(path, encoding="utf-8", errors="replace") as handle:
        for index, line in enumerate(handle):
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not isinstance(row, dict):
                continue
            step = row.get("step", index + 1)
            step = int(step) if _number(step) else index + 1
            for key, value in row.items():
                if key != "step" and _number(value):
                    series.setdefault(key, []).append((step, float(value)))
    return series


def curve_keys(series: dict[str, list]) -> list[str]:
    """Metrics worth a curve: losses, rewards, accuracies with at least two points; losses first."""
    keys = [k for k, points in series.items() if len(points) >= 2 and any(w in k.lower() for w in CURVE_WORDS)]
    rank = lambda key: (next(i for i, w in enumerate(CURVE_WORDS) if w in key.lower()), "val" in key.lower(), key)  # noqa: E731
    return sorted(keys, key=rank)[:MAX_CURVES]


def headline(series: dict[str, list]) -> dict[str, float]:
    """Final loss / reward / accuracy values, by the names the trainers use."""
    out = {}
    for key in ("loss", "train/loss", "val_loss", "validation/loss", "train/reward", "reward", "train/accuracy",
                "validation/accuracy"):  # fmt: skip
        if series.get(key):
            out[key] = series[key][-1][1]
    return out


# -- formatting helpers -----------------------------------------------------------------------------------
def when(timestamp: float | None) -> str:
    return datetime.datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S") if timestamp else ""


def duration(record: JobRecord, now: float) -> str:
    if not record.started_at:
        return ""
    seconds = (record.ended_at or now) - record.started_at
    text = format_seconds(seconds)
    return text if record.ended_at else f"{text} so far"


def format_seconds(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"


def fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.4e}"
    return "" if value is None else str(value)


def log_location(record: JobRecord, section: ExperimentSection) -> str:
    if not record.log_path:
        return ""
    return f"{section.remote_host}:{record.log_path}" if section.remote_host else record.log_path


def eval_rows(modes: dict) -> tuple[list[str], list[list[str]]]:
    """Seed 003's layout: evaluation_mode | num_entries | avg_tokens | symbolic_correct [| judge_correct] | no_answer."""
    judged = all("judge_correct" in m for m in modes.values())
    header = ["evaluation_mode", "num_entries", "avg_tokens", "symbolic_correct", *(["judge_correct"] if judged else []),
              "no_answer"]  # fmt: skip
    rows = []
    for mode, m in modes.items():
        correct = _percent(m.get("symbolic_correct"))
        if "symbolic_correct_std" in m:
            correct += f" ± {m['symbolic_correct_std']:.2f}"
        rows.append([mode, fmt(_int(m.get("num_entries"))), fmt(_int(m.get("avg_tokens"))), correct,
                     *([_percent(m.get("judge_correct"))] if judged else []), _percent(m.get("no_answer"))])  # fmt: skip
    return header, rows


def _percent(value: Any) -> str:
    return f"{value:.2f}%" if _number(value) else ""


def _int(value: Any) -> Any:
    return round(value) if _number(value) else value


def counts(report: Report) -> str:
    records = [r for s in report.sections for r in s.records]
    by_state: dict[str, int] = {}
    for record in records:
        by_state[record.state.value] = by_state.get(record.state.value, 0) + 1
    states = ", ".join(f"{n} {state.lower()}" for state, n in sorted(by_state.items()))
    return f"{len(report.sections)} experiment(s), {len(records)} job(s)" + (f": {states}" if states else "")


# -- SVG curves -------------------------------------------------------------------------------------------
def svg_curve(title: str, points: list[tuple[int, float]], width: int = 380, height: int = 170) -> str:
    """A small line chart of (step, value) as inline SVG (no fonts or scripts fetched)."""
    left, right, top, bottom = 58, 12, 24, 28
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if x1 == x0:
        x1 = x0 + 1
    if y1 == y0:
        y0, y1 = y0 - (abs(y0) * 0.05 or 1), y1 + (abs(y1) * 0.05 or 1)
    plot_w, plot_h = width - left - right, height - top - bottom

    def xy(step: float, value: float) -> tuple[float, float]:
        return left + (step - x0) / (x1 - x0) * plot_w, top + (1 - (value - y0) / (y1 - y0)) * plot_h

    line = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(s, v) for s, v in points))
    dots = "".join(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.2"/>' for x, y in (xy(s, v) for s, v in points)) \
        if len(points) <= 40 else ""  # fmt: skip
    text = lambda x, y, s, anchor="start": f'<text x="{x}" y="{y}" text-anchor="{anchor}">{html.escape(s)}</text>'  # noqa: E731
    return (
        f'<svg class="curve" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{html.escape(title, quote=True)}">'
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" class="frame"/>'
        + text(left, 15, f"{title}  (last {fmt(ys[-1])})")
        + text(left - 4, top + 9, fmt(y1), "end") + text(left - 4, top + plot_h, fmt(y0), "end")
        + text(left, height - 10, f"step {x0}") + text(left + plot_w, height - 10, f"step {max(xs)}", "end")
        + f'<polyline points="{line}"/><g class="dots">{dots}</g></svg>'
    )  # fmt: skip


def sparkline(points: list[tuple[int, float]], width: int = 40) -> str:
    """The curve in Unicode blocks (Markdown): resampled to at most `width` characters."""
    values = [v for _, v in points]
    if len(values) > width:
        values = [values[int(i * len(values) / width)] for i in range(width - 1)] + [values[-1]]
    low, high = min(values), max(values)
    blocks = "▁▂▃▄▅▆▇█"
    return "".join(blocks[int((v - low) / (high - low) * 7) if high > low else 3] for v in values)


# -- HTML -------------------------------------------------------------------------------------------------
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


def _relative(artifact: Artifact, output: OutputDir) -> str:
    try:
        return str(artifact.path.relative_to(output.local)) if output.local else str(artifact.path)
    except ValueError:
        return str(artifact.path)


def _html_artifact(artifact: Artifact, output: OutputDir) -> str:
    name = f"<code>{_e(_relative(artifact, output))}</code>"
    if artifact.kind == "eval":
        parts = [f"<p>Evaluation metrics ({name})</p>"]
        for benchmark, modes in artifact.data.items():
            header, rows = eval_rows(modes)
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


# -- Markdown ---------------------------------------------------------------------------------------------
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
    name = f"`{_relative(artifact, output)}`"
    if artifact.kind == "eval":
        lines = [f"Evaluation metrics ({name})", ""]
        for benchmark, modes in artifact.data.items():
            header, rows = eval_rows(modes)
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


# -- entry point ------------------------------------------------------------------------------------------
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
