"""The protocol every executor implements, and the registry of executor kinds (`executor:` in cluster configs).

The pipeline talks to executors only through `Executor`, and asks what an executor can do only through its
`ExecutorEntry` capabilities (never by comparing kind names), so a plugin can add a kind without touching
the pipeline: `EXECUTORS.register(ExecutorEntry("toy", ToyExecutor, ...))` in a module named in
`$SKILLS_CLI_PLUGINS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from skills_cli.common.registry import Registry

if TYPE_CHECKING:  # the modules below import cluster.py, which looks executor kinds up here
    from skills_cli.pipeline.cluster import ClusterConfig
    from skills_cli.pipeline.plan import Plan
    from skills_cli.pipeline.store import JobRecord, Store


class Executor(Protocol):
    def preflight(self, plan: Plan) -> None:
        """Check what can be checked before submitting (mount sources, images, GPUs); raise UserError."""

    def dry_run(self, plan: Plan) -> str:
        """Exactly what `submit` would run, as text."""

    def submit(self, plan: Plan, store: Store) -> list[JobRecord]:
        """Start or queue every job of the plan in dependency order; record them in the store."""

    def refresh(self, records: list[JobRecord], store: Store) -> list[JobRecord]:
        """Bring the stored states of these jobs up to date."""

    def cancel(self, records: list[JobRecord], store: Store) -> None:
        """Stop these jobs (running or waiting)."""

    def logs(self, record: JobRecord, tail: int | None) -> str:
        """The job's log text (all of its commands)."""


@dataclass(frozen=True)
class ExecutorEntry:
    """One executor kind: how to build it for a cluster config, and what the rest of the pipeline may rely on."""

    name: str  # the `executor:` value of cluster configs
    factory: Callable[[ClusterConfig], Executor]
    description: str
    # jobs run as bare processes on this machine, so the paths they use are this machine's paths
    jobs_see_local_paths: bool = False
    # jobs run on other hosts through a scheduler: submission returns once queued, servers bind all interfaces,
    # job files live under the cluster's job_dir, results are fetched back over SSH
    runs_remotely: bool = False
    # every job runs in one of the cluster's container images (the config needs containers.main)
    uses_containers: bool = False
    # what `preflight` verifies before anything is queued, in words (`ns` never guesses it from the name)
    preflight_checks: tuple[str, ...] = ()


EXECUTORS: Registry[ExecutorEntry] = Registry("executor", package="skills_cli.pipeline.executors")
