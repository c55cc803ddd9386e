"""Formatting shared by the HTML and Markdown reports: times, numbers, evaluation tables, curves (SVG, sparklines)."""

from __future__ import annotations

import datetime
import html
from typing import Any

from skills_cli.evaluation.benchmarks import grader_for_results
from skills_cli.pipeline.reporting.model import ExperimentSection, Report, is_number
from skills_cli.pipeline.store import JobRecord

CURVE_WORDS = ("loss", "reward", "accuracy")
MAX_CURVES = 6


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


SHARED_COLUMNS = {"num_entries", "avg_tokens", "gen_seconds", "no_answer", "judge_correct"}


def extra_columns(key: str, modes: dict) -> list[str]:
    """The columns after no_answer, as `ns summarize_results` shows them: the grader's other verdicts and its
    summary figures (IFEval's instruction-level accuracy), in the order metrics.json holds them."""
    names: list[str] = []
    for values in modes.values():
        names += [name for name in values if name not in SHARED_COLUMNS and name != key
                  and not name.endswith("_std") and name not in names]  # fmt: skip
    return names


def eval_rows(benchmark: str, modes: dict) -> tuple[list[str], list[list[str]]]:
    """evaluation_mode | num_entries | avg_tokens | <grader key> [| judge_correct] | no_answer [| more], as
    `ns summarize_results` prints; the key is what the benchmark's grader reports (`math500[level=1]`: math500's)."""
    key = grader_for_results(benchmark.split("[")[0]).headline_key
    judged = all("judge_correct" in m for m in modes.values())
    extra = extra_columns(key, modes)
    header = ["evaluation_mode", "num_entries", "avg_tokens", key, *(["judge_correct"] if judged else []), "no_answer",
              *extra]  # fmt: skip
    rows = []
    for mode, m in modes.items():
        correct = _percent(m.get(key))
        if f"{key}_std" in m:
            correct += f" ± {m[f'{key}_std']:.2f}"
        rows.append([mode, fmt(_int(m.get("num_entries"))), fmt(_int(m.get("avg_tokens"))), correct,
                     *([_percent(m.get("judge_correct"))] if judged else []), _percent(m.get("no_answer")),
                     *(_percent(m.get(name)) for name in extra)])  # fmt: skip
    return header, rows


def _percent(value: Any) -> str:
    return f"{value:.2f}%" if is_number(value) else ""


def _int(value: Any) -> Any:
    return round(value) if is_number(value) else value


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
