"""`ns run_cmd`: run a shell command as a job, in a chosen container, with experiment dependencies."""

from __future__ import annotations

import dataclasses
import logging

from skills_cli.common.errors import UserError
from skills_cli.pipeline.cluster import ClusterConfig, load_cluster_config
from skills_cli.pipeline.experiment import Submission, ensure_log_dir_is_absolute, submit_jobs, submit_options
from skills_cli.pipeline.jobs import Command, Job, Mount, Resources
from skills_cli.pipeline.options import RESOURCE_OPTIONS, SUBMIT_OPTIONS, CommandSpec, Option, WrappedArguments
from skills_cli.pipeline.shell import bash_c, quote_argv
from skills_cli.pipeline.store import JobRecord

log = logging.getLogger("skills_cli")

COMMAND = Option("command", str | None, None, "The shell command (instead of giving it as the trailing arguments).")
JOB_NAME = Option("job_name", str | None, None, "Job name (default: the experiment name).")
OUTPUT_DIR = Option("output_dir", str | None, None, "Absolute directory the command writes its results to; recorded "
                    "so that `ns report` shows the metrics and plots found there (the command is not changed).")  # fmt: skip


def command_text(extra: WrappedArguments, command: str | None) -> str:
    """The shell snippet: `--command`, the string given to wrap_arguments, one trailing argument as typed,
    or several trailing arguments taken as words (quoted back into one line)."""
    if command and extra.args:
        raise UserError("run_cmd: give the command either with --command or as trailing arguments, not both")
    args = extra.args
    text = command or extra.text or (args[0] if len(args) == 1 else quote_argv(args))
    if not text.strip():
        raise UserError("run_cmd: no command given (e.g. ns run_cmd --expname x 'python train.py')")
    return text


def resolve_container(cluster: ClusterConfig, container: str) -> tuple[ClusterConfig, str]:
    """A container role from the config, or an image name used directly (it contains ':' or '/')."""
    if container in cluster.containers or not cluster.uses_containers:
        return cluster, container
    if ":" in container or "/" in container:
        return dataclasses.replace(cluster, containers={**cluster.containers, container: container}), container
    cluster.container_image(container)  # raises with the list of known roles
    return cluster, container


def log_change(record: JobRecord) -> None:
    reason = f" ({record.reason})" if record.reason else ""
    log.info("%s/%s: %s%s", record.expname, record.name, record.state.value, reason)


def build_job(text: str, values: dict) -> Job:
    resources = Resources(
        nodes=values["num_nodes"], gpus_per_node=values["num_gpus"], tasks_per_node=values["num_tasks"],
        time_limit=values["time"], partition=values["partition"],
    )  # fmt: skip
    return Job(
        name=values["job_name"] or values["expname"] or "run_cmd",
        commands=(Command(argv=tuple(bash_c(text)), container=values["container"], gpus=values["num_gpus"]),),
        resources=resources,
        mounts=tuple(Mount.parse(m) for m in values["mounts"]),
    )


def run_cmd_impl(extra: WrappedArguments, **values) -> Submission:
    text = command_text(extra, values["command"])
    ensure_log_dir_is_absolute(values["log_dir"])
    if values["output_dir"] is not None and not values["output_dir"].startswith("/"):
        raise UserError(f"--output_dir must be an absolute path, got {values['output_dir']!r}")
    if values["job_name"] is not None and not values["job_name"].strip():  # not silently the experiment's name
        raise UserError(f"--job_name {values['job_name']!r} is empty: give a name, or leave --job_name out")
    cluster = load_cluster_config(values["cluster"], values["config_dir"])
    cluster, values["container"] = resolve_container(cluster, values["container"])
    options = submit_options(values, default_expname="run_cmd")
    return submit_jobs([build_job(text, values)], cluster, options, on_change=log_change)


RUN_CMD = CommandSpec(
    name="run_cmd",
    help="Run a shell command as a job (in the chosen container, after --run_after experiments).",
    options=(COMMAND, JOB_NAME, OUTPUT_DIR, *SUBMIT_OPTIONS, *RESOURCE_OPTIONS),
    impl=run_cmd_impl,
    extra_args="the command to run",
)
