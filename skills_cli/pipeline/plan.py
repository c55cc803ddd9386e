"""A submission plan: the validated jobs of one invocation with ids, log places and resolved dependencies.

Building the plan is pure (no I/O beyond reading the store for `--run_after`), so `--dry_run` and a real
submission render from the very same object.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

from skills_cli.pipeline.cluster import ClusterConfig, DependencyType
from skills_cli.pipeline.jobs import Job, JobGraph
from skills_cli.pipeline.packaging import CodeSnapshot
from skills_cli.pipeline.store import JobRecord

SAFE_NAME_MAX = 80


def safe_name(name: str) -> str:
    """A file- and scheduler-safe rendering of a free-text name (the real name stays in the store).

    Injective, so two experiments never share a log folder: a name that is already safe (and short) is kept
    as is; any other gets a short stable hash of the original appended (`ëxp-日本語-🚀` -> `xp-_-_<8 hex>`,
    not the bare `xp-_-` that `üxp-日本語-🚀` would map to as well).
    """
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "job"
    if cleaned == name and len(name) <= SAFE_NAME_MAX:
        return name
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{cleaned[: SAFE_NAME_MAX - len(digest) - 1]}_{digest}"


@dataclass(frozen=True)
class ExternalDependency:
    """A `--run_after` job that has not finished yet: the new jobs must wait for it."""

    record: JobRecord
    dependency_type: DependencyType


@dataclass(frozen=True)
class PlannedJob:
    job: Job
    uid: str
    log_dir: str
    run_dir: str  # per-job scratch directory on the machine that runs it (server log, exit status)
    internal: tuple[tuple[str, DependencyType], ...] = ()  # (upstream job name, edge type)
    external: tuple[ExternalDependency, ...] = ()

    @property
    def file_stem(self) -> str:
        return safe_name(self.job.name)


@dataclass(frozen=True)
class Plan:
    expname: str
    cluster: ClusterConfig
    jobs: tuple[PlannedJob, ...]
    code: CodeSnapshot
    env: dict[str, str] = field(default_factory=dict)

    def by_name(self, name: str) -> PlannedJob:
        return next(planned for planned in self.jobs if planned.job.name == name)


def internal_edges(job: Job, dependency_type: DependencyType) -> tuple[tuple[str, DependencyType], ...]:
    edges = [(name, dependency_type) for name in job.after]
    edges += [(name, DependencyType.AFTERANY) for name in job.after_any if name not in job.after]
    return tuple(edges)


def roots(graph: JobGraph) -> set[str]:
    return {job.name for job in graph if not job.dependencies}
