"""Every JSON output file's name and schema, in one place: writers and readers go through here.

Each JSON artifact carries `kind` and `version` keys next to its payload, so a reader (summarize, report,
check_metrics) knows what it holds without guessing from its shape:

- `metrics.json` of `ns summarize_results` (kind `evaluation`): `{benchmark or benchmark[subset]: {mode: metrics}}`;
- `logs/metrics.json` of a trainer (kind `training_series`): NeMo-RL's per-step layout
  `{metric: {step: value}}` that `tools/check_metrics.py` reads;
- `logs/summary.json` of a trainer (kind `training_summary`): a flat dict (status, steps, final paths, ...).

`logs/metrics.jsonl` (one row per step) is the trainers' append-only log; it has no header, its rows carry `step`.
Files written before kinds existed have none: `read_json_artifact` recognises them by their shape.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skills_cli.common.errors import UserError
from skills_cli.common.jsonl import touch_atomic

KIND_KEY, VERSION_KEY = "kind", "version"
RESERVED_KEYS = (KIND_KEY, VERSION_KEY)

EVAL_METRICS_FILE = "metrics.json"  # in an evaluation's results directory
TRAINING_SERIES_FILE = "metrics.json"  # in a trainer's log dir
TRAINING_SUMMARY_FILE = "summary.json"  # in a trainer's log dir
TRAINING_ROWS_FILE = "metrics.jsonl"  # in a trainer's log dir: one JSON row per step
PASS_AT_K_PLOT = "pass_at_k.png"  # next to an evaluation's metrics.json


@dataclass(frozen=True)
class ArtifactKind:
    name: str
    version: int
    file_name: str
    description: str


EVALUATION = ArtifactKind("evaluation", 1, EVAL_METRICS_FILE, "{benchmark or benchmark[subset]: {mode: metrics}}")
TRAINING_SERIES = ArtifactKind("training_series", 1, TRAINING_SERIES_FILE, "{metric: {step: value}}")
TRAINING_SUMMARY = ArtifactKind("training_summary", 1, TRAINING_SUMMARY_FILE, "{field: value}")
KINDS = {kind.name: kind for kind in (EVALUATION, TRAINING_SERIES, TRAINING_SUMMARY)}


def write_json_artifact(path: str | Path, kind: ArtifactKind, payload: dict[str, Any], indent: int = 2) -> Path:
    """Write `payload` with its kind and version, atomically; payload keys may not be `kind` or `version`."""
    clash = [key for key in RESERVED_KEYS if key in payload]
    if clash:
        raise ValueError(f"{kind.name} payload may not use the reserved key {clash[0]!r}")
    text = json.dumps({KIND_KEY: kind.name, VERSION_KEY: kind.version, **payload}, indent=indent, default=str)
    touch_atomic(path, text + "\n")
    return Path(path)


def _guess_kind(payload: dict[str, Any]) -> ArtifactKind:
    """Files from before kinds: eval tables hold dicts of dicts, series hold {step: number}, summaries are flat."""
    values = [value for value in payload.values() if isinstance(value, dict)]
    if values and len(values) == len(payload):
        inner = [v for value in values for v in value.values()]
        if inner and all(isinstance(v, dict) for v in inner):
            return EVALUATION
        return TRAINING_SERIES
    return TRAINING_SUMMARY


def read_json_artifact(path: str | Path, expect: ArtifactKind | None = None) -> tuple[ArtifactKind, dict[str, Any]]:
    """(kind, payload without kind/version) of a JSON artifact; one-line UserError when unreadable or unexpected."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"{path}: not a readable JSON file ({error})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object, got {type(data).__name__}")
    name = data.get(KIND_KEY)
    if name is None:
        kind = _guess_kind(data)
    elif name not in KINDS:
        raise UserError(f"{path}: unknown kind {name!r}; known: {', '.join(KINDS)}")
    else:
        kind = KINDS[name]
        if data.get(VERSION_KEY, 1) > kind.version:
            raise UserError(f"{path}: {name} version {data[VERSION_KEY]} is newer than this skills_cli reads "
                            f"({kind.version}); update skills_cli")  # fmt: skip
    if expect is not None and kind is not expect:
        raise UserError(f"{path}: holds {kind.name}, expected {expect.name}")
    return kind, {key: value for key, value in data.items() if key not in RESERVED_KEYS}
