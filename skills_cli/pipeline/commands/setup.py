"""`ns setup`: write a cluster config, from flags or by asking (with `--interactive`).

The written file is validated by the same loader `--cluster` uses before it is put in place, so a config
that `ns setup` wrote always loads.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from skills_cli.common.errors import UserError
from skills_cli.pipeline.cluster import parse_cluster_config
from skills_cli.pipeline.executors import EXECUTORS, ExecutorEntry
from skills_cli.pipeline.options import CommandSpec, WrappedArguments, option

RUNTIMES = ("pyxis", "apptainer", "docker", "podman", "none")


@dataclass(frozen=True, kw_only=True)
class SetupSpec:
    name: str | None = option(None, "Config name: the file is NAME.yaml and --cluster NAME selects it.")
    executor: str | None = option(
        None, "none (bare local processes), local (Docker) or slurm.", choices=EXECUTORS.names
    )
    config_dir: str = option("cluster_configs", "Directory to write the config into.")
    main_container: str | None = option(None, "Image of the `main` container role (the project image).")
    mounts: list[str] = option([], "Mount /src:/dst[:ro] (repeatable; ${VAR} is expanded when loading).")
    env_vars: list[str] = option([], "Environment variable NAME or NAME=value passed to jobs (repeatable).")
    ssh_host: str | None = option(None, "Slurm login node to reach over SSH (omit when running on it).")
    ssh_port: int = option(22, "SSH port.")
    ssh_user: str | None = option(None, "SSH user (default: $USER).")
    ssh_identity: str | None = option(None, "SSH private key file.")
    job_dir: str | None = option(None, "Absolute directory on the cluster for job scripts, logs and code.")
    account: str | None = option(None, "Slurm account.")
    partition: str | None = option(None, "Slurm partition for GPU jobs.")
    cpu_partition: str | None = option(None, "Slurm partition for CPU-only jobs.")
    default_timeout: str | None = option(None, "Default job time limit, e.g. 4:00:00.")
    container_runtime: str | None = option(None, "How Slurm jobs start containers (default: none).",
                                           choices=RUNTIMES)  # fmt: skip
    interactive: bool = option(False, "Ask for every value that was not given as a flag.")
    force: bool = option(False, "Overwrite an existing config of that name.")


# what to ask, by what the executor kind does: a remote scheduler needs the way there and its queue
_REMOTE_QUESTIONS = ["ssh_host", "ssh_user", "ssh_identity", "job_dir", "account", "partition", "container_runtime",
                     "main_container", "mounts"]  # fmt: skip
_CONTAINER_QUESTIONS = ["main_container", "mounts"]


def questions(entry: ExecutorEntry) -> list[str]:
    if entry.runs_remotely:
        return ["name", *_REMOTE_QUESTIONS]
    return ["name", *(_CONTAINER_QUESTIONS if entry.uses_containers else [])]


def answer(key: str) -> object:
    """One value, asked on the terminal."""
    from rich.prompt import Prompt

    if key == "mounts":
        text = Prompt.ask("Mounts, comma separated /src:/dst (empty for none)", default="")
        return [m.strip() for m in text.split(",") if m.strip()]
    if key == "container_runtime":
        return Prompt.ask("Container runtime on Slurm", default="none", choices=list(RUNTIMES))
    return Prompt.ask(key.replace("_", " ").capitalize(), default=None) or None


def ask(spec: SetupSpec) -> SetupSpec:
    """Fill missing values by asking on the terminal (the questions depend on the executor)."""
    from rich.prompt import Prompt

    executor = spec.executor or Prompt.ask("Executor", choices=list(EXECUTORS.names()), default="none")
    answers = {key: answer(key) for key in questions(EXECUTORS.get(executor)) if not getattr(spec, key)}
    return dataclasses.replace(spec, executor=executor, **answers)


def ssh_tunnel(spec: SetupSpec) -> dict:
    tunnel = {"host": spec.ssh_host, "port": spec.ssh_port, "user": spec.ssh_user or os.environ.get("USER", "root"),
              "job_dir": spec.job_dir}  # fmt: skip
    if spec.ssh_identity:
        tunnel["identity"] = spec.ssh_identity
    return tunnel


def config_from_spec(spec: SetupSpec) -> dict:
    """The YAML mapping for these answers (only keys that have a value)."""
    config: dict = {"executor": spec.executor}
    if spec.main_container:
        config["containers"] = {"main": spec.main_container}
    for key in ("mounts", "env_vars", "account", "partition", "cpu_partition", "default_timeout"):
        if getattr(spec, key):
            config[key] = getattr(spec, key)
    if EXECUTORS.get(spec.executor).runs_remotely:
        if spec.container_runtime not in (None, "none"):
            config["container_runtime"] = spec.container_runtime
        if spec.ssh_host:
            config["ssh_tunnel"] = ssh_tunnel(spec)
        elif spec.job_dir:
            config["job_dir"] = spec.job_dir
    return config


def setup_impl(extra: WrappedArguments, spec: SetupSpec) -> Path:
    if spec.interactive:
        spec = ask(spec)
    for key in ("name", "executor"):
        if not getattr(spec, key):
            raise UserError(f"setup: --{key} is required (or use --interactive)")
    if EXECUTORS.get(spec.executor).runs_remotely and not spec.job_dir:
        raise UserError(f"setup: a {spec.executor} config needs --job_dir (absolute path on the cluster)")
    import yaml

    config = config_from_spec(spec)
    target = Path(spec.config_dir) / f"{spec.name}.yaml"
    parse_cluster_config(config, name=spec.name, source=str(target))  # same validation as --cluster
    if target.exists() and not spec.force:
        raise UserError(f"{target} exists; pass --force to overwrite it")
    target.parent.mkdir(parents=True, exist_ok=True)
    text = f"# written by `ns setup`; load with --cluster {spec.name}\n" + yaml.safe_dump(config, sort_keys=False)
    with tempfile.NamedTemporaryFile("w", dir=target.parent, delete=False, suffix=".tmp") as handle:
        handle.write(text)
    os.replace(handle.name, target)
    return target


SETUP = CommandSpec("setup", "Write a cluster config (non-interactive with flags, or --interactive).",
                    spec_type=SetupSpec, impl=setup_impl)  # fmt: skip
