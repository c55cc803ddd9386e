"""`ns status`, `ns logs`, `ns cancel`: follow experiments recorded in the local store."""

from __future__ import annotations

from dataclasses import dataclass

from skills_cli.common.errors import UserError
from skills_cli.pipeline import experiment
from skills_cli.pipeline.options import CommandSpec, WrappedArguments, option
from skills_cli.pipeline.progress import Progress
from skills_cli.pipeline.store import JobRecord, Store


@dataclass(frozen=True, kw_only=True)
class StatusSpec:
    expname: str | None = option(None, "Experiment name (default: list experiments).", positional=True)
    watch: bool = option(False, "Keep refreshing, with a live table of jobs, states and elapsed times, until every "
                         "job of the experiment and of the experiments it ran after has ended.")  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class LogsSpec:
    expname: str = option(..., "Experiment name.", positional=True)
    job: str | None = option(None, "Job name (default: every job).", positional=True)
    tail: int | None = option(None, "Only the last N lines of each log.")


@dataclass(frozen=True, kw_only=True)
class CancelSpec:
    expname: str = option(..., "Experiment name.", positional=True)


def status_impl(extra: WrappedArguments, spec: StatusSpec) -> dict[str, list[JobRecord]]:
    """States of one experiment's jobs (refreshed from their executors), or of every experiment."""
    if spec.watch:
        if spec.expname is None:
            raise UserError("--watch needs an experiment name")
        return experiment.watch(spec.expname, Progress.on())
    if spec.expname is not None:
        return {spec.expname: experiment.status(spec.expname)}
    store = Store()
    return {name: store.latest_jobs(name) for name in store.experiment_names()}


def logs_impl(extra: WrappedArguments, spec: LogsSpec) -> list[tuple[JobRecord, str]]:
    return experiment.logs(spec.expname, spec.job, spec.tail)


def cancel_impl(extra: WrappedArguments, spec: CancelSpec) -> list[JobRecord]:
    return experiment.cancel(spec.expname)


STATUS = CommandSpec("status", "Show the jobs of an experiment (or list experiments) with states and reasons.",
                     spec_type=StatusSpec, impl=status_impl)  # fmt: skip
LOGS = CommandSpec("logs", "Print the logs of an experiment's jobs (fetched from the cluster when remote).",
                   spec_type=LogsSpec, impl=logs_impl)  # fmt: skip
CANCEL = CommandSpec("cancel", "Cancel every unfinished job of an experiment.", spec_type=CancelSpec, impl=cancel_impl)
