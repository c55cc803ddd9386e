"""`ns status`, `ns logs`, `ns cancel`: follow experiments recorded in the local store."""

from __future__ import annotations

from skills_cli.common.errors import UserError
from skills_cli.pipeline import experiment
from skills_cli.pipeline.options import CommandSpec, Option, WrappedArguments
from skills_cli.pipeline.progress import Progress
from skills_cli.pipeline.store import JobRecord, Store

EXPNAME_ARG = Option("expname", str, ..., "Experiment name.", positional=True)
OPTIONAL_EXPNAME_ARG = Option("expname", str | None, None, "Experiment name (default: list experiments).",
                              positional=True)  # fmt: skip
JOB_ARG = Option("job", str | None, None, "Job name (default: every job).", positional=True)
TAIL = Option("tail", int | None, None, "Only the last N lines of each log.")


WATCH = Option("watch", bool, False, "Keep refreshing, with a live table of jobs, states and elapsed times, until "
               "every job of the experiment and of the experiments it ran after has ended.")  # fmt: skip


def status_impl(extra: WrappedArguments, expname: str | None, watch: bool = False) -> dict[str, list[JobRecord]]:
    """States of one experiment's jobs (refreshed from their executors), or of every experiment."""
    if watch:
        if expname is None:
            raise UserError("--watch needs an experiment name")
        return experiment.watch(expname, Progress.on())
    if expname is not None:
        return {expname: experiment.status(expname)}
    store = Store()
    return {name: store.latest_jobs(name) for name in store.experiment_names()}


def logs_impl(extra: WrappedArguments, expname: str, job: str | None, tail: int | None) -> list[tuple[JobRecord, str]]:
    return experiment.logs(expname, job, tail)


def cancel_impl(extra: WrappedArguments, expname: str) -> list[JobRecord]:
    return experiment.cancel(expname)


STATUS = CommandSpec("status", "Show the jobs of an experiment (or list experiments) with states and reasons.",
                     (OPTIONAL_EXPNAME_ARG, WATCH), status_impl)  # fmt: skip
LOGS = CommandSpec("logs", "Print the logs of an experiment's jobs (fetched from the cluster when remote).",
                   (EXPNAME_ARG, JOB_ARG, TAIL), logs_impl)  # fmt: skip
CANCEL = CommandSpec("cancel", "Cancel every unfinished job of an experiment.", (EXPNAME_ARG,), cancel_impl)
