"""`ns run_cmd`: run a shell command as a job, in a chosen container, with experiment dependencies."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from skills_cli.common.errors import UserError
from skills_cli.pipeline.cluster import ClusterConfig, load_cluster_config
from skills_cli.pipeline.experiment import Submission, ensure_log_dir_is_absolute, submit_jobs, submit_options
from skills_cli.pipeline.jobs import Command, Job, Mount, Resources
from skills_cli.pipeline.options import CommandSpec, ResourcedSpec, WrappedArguments, option
from skills_cli.pipeline.shell import bash_c, quote_argv


@dataclass(frozen=True, kw_only=True)
class RunCmdSpec(ResourcedSpec):
    command: str | None = option(None, "The shell command (instead of giving it as the trailing arguments).")
    job_name: str | None = option(None, "Job name (default: the experiment name).")
    output_dir: str | None = option(None, "Absolute directory the command writes its results to; recorded so that "
                                    "`ns report` shows the metrics and plots found there (the command is not changed).")  # fmt: skip


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


def build_job(text: str, spec: RunCmdSpec, container: str) -> Job:
    resources = Resources(
        nodes=spec.num_nodes, gpus_per_node=spec.num_gpus, tasks_per_node=spec.num_tasks,
        time_limit=spec.time, partition=spec.partition,
    )  # fmt: skip
    return Job(
        name=spec.job_name or spec.expname or "run_cmd",
        commands=(Command(argv=tuple(bash_c(text)), container=container, gpus=spec.num_gpus),),
        resources=resources,
        mounts=tuple(Mount.parse(m) for m in spec.mounts),
    )


def run_cmd_impl(extra: WrappedArguments, spec: RunCmdSpec) -> Submission:
    text = command_text(extra, spec.command)
    ensure_log_dir_is_absolute(spec.log_dir)
    if spec.output_dir is not None and not spec.output_dir.startswith("/"):
        raise UserError(f"--output_dir must be an absolute path, got {spec.output_dir!r}")
    if spec.job_name is not None and not spec.job_name.strip():  # not silently the experiment's name
        raise UserError(f"--job_name {spec.job_name!r} is empty: give a name, or leave --job_name out")
    cluster = load_cluster_config(spec.cluster, spec.config_dir)
    cluster, container = resolve_container(cluster, spec.container)
    options = submit_options(spec, default_expname="run_cmd")
    return submit_jobs([build_job(text, spec, container)], cluster, options)


RUN_CMD = CommandSpec(
    name="run_cmd",
    help="Run a shell command as a job (in the chosen container, after --run_after experiments).",
    spec_type=RunCmdSpec,
    impl=run_cmd_impl,
    extra_args="the command to run",
)
