"""What a report holds: experiments (sections) with their jobs and the recognised files of their outputs."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skills_cli.pipeline.store import JobRecord


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


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def relative_path(artifact: Artifact, output: OutputDir) -> str:
    try:
        return str(artifact.path.relative_to(output.local)) if output.local else str(artifact.path)
    except ValueError:
        return str(artifact.path)
