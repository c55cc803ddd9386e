"""A submission plan: the validated jobs of one invocation with ids, log places and resolved dependencies.

Building the plan is pure (no I/O beyond reading the store for `--run_after`), so `--dry_run` and a real
submission render from the very same object.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from skills_cli.pipeline.cluster import ClusterConfig, DependencyType
from skills_cli.pipeline.jobs import Job, JobGraph
from skills_cli.pipeline.packaging import CodeSnapshot
from skills_cli.pipeline.store import JobRecord


def safe_name(name: str) -> str:
    """A file- and scheduler-safe rendering of a free-text name (the real name stays in the store)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "job"
    return cleaned[:80]


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
