"""`ns setup`: write a cluster config, from flags or by asking (with `--interactive`).

The written file is validated by the same loader `--cluster` uses before it is put in place, so a config
that `ns setup` wrote always loads.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from skills_cli.common.errors import UserError
from skills_cli.pipeline.cluster import parse_cluster_config
from skills_cli.pipeline.options import CommandSpec, Option, WrappedArguments

SETUP_OPTIONS = (
    Option("name", str | None, None, "Config name: the file is NAME.yaml and --cluster NAME selects it."),
    Option("executor", str | None, None, "none (bare local processes), local (Docker) or slurm.",
           choices=("none", "local", "slurm")),
    Option("config_dir", str, "cluster_configs", "Directory to write the config into."),
    Option("main_container", str | None, None, "Image of the `main` container role (the project image)."),
    Option("mounts", list[str], [], "Mount /src:/dst[:ro] (repeatable; ${VAR} is expanded when loading)."),
    Option("env_vars", list[str], [], "Environment variable NAME or NAME=value passed to jobs (repeatable)."),
    Option("ssh_host", str | None, None, "Slurm login node to reach over SSH (omit when running on it)."),
    Option("ssh_port", int, 22, "SSH port."),
    Option("ssh_user", str | None, None, "SSH user (default: $USER)."),
    Option("ssh_identity", str | None, None, "SSH private key file."),
    Option("job_dir", str | None, None, "Absolute directory on the cluster for job scripts, logs and code."),
    Option("account", str | None, None, "Slurm account."),
    Option("partition", str | None, None, "Slurm partition for GPU jobs."),
    Option("cpu_partition", str | None, None, "Slurm partition for CPU-only jobs."),
    Option("default_timeout", str | None, None, "Default job time limit, e.g. 4:00:00."),
    Option("container_runtime", str | None, None, "How Slurm jobs start containers (default: none).",
           choices=("pyxis", "apptainer", "docker", "podman", "none")),
    Option("interactive", bool, False, "Ask for every value that was not given as a flag."),
    Option("force", bool, False, "Overwrite an existing config of that name."),
)  # fmt: skip

_QUESTIONS = {
    "none": ["name"],
    "local": ["name", "main_container", "mounts"],
    "slurm": ["name", "ssh_host", "ssh_user", "ssh_identity", "job_dir", "account", "partition",
              "container_runtime", "main_container", "mounts"],
}  # fmt: skip


def ask(values: dict) -> dict:
    """Fill missing values by asking on the terminal."""
    from rich.prompt import Prompt

    values = dict(values)
    if not values["executor"]:
        values["executor"] = Prompt.ask("Executor", choices=["none", "local", "slurm"], default="none")
    for key in _QUESTIONS[values["executor"]]:
        if values.get(key):
            continue
        if key == "mounts":
            answer = Prompt.ask("Mounts, comma separated /src:/dst (empty for none)", default="")
            values[key] = [m.strip() for m in answer.split(",") if m.strip()]
        elif key == "container_runtime":
            values[key] = Prompt.ask("Container runtime on Slurm", default="none",
                                     choices=["pyxis", "apptainer", "docker", "podman", "none"])  # fmt: skip
        else:
            values[key] = Prompt.ask(key.replace("_", " ").capitalize(), default=None) or None
    return values


def config_from_values(values: dict) -> dict:
    """The YAML mapping for these answers (only keys that have a value)."""
    config: dict = {"executor": values["executor"]}
    if values["main_container"]:
        config["containers"] = {"main": values["main_container"]}
    for key in ("mounts", "env_vars", "account", "partition", "cpu_partition", "default_timeout"):
        if values.get(key):
            config[key] = values[key]
    if values["executor"] == "slurm":
        if values["container_runtime"] not in (None, "none"):
            config["container_runtime"] = values["container_runtime"]
        if values["ssh_host"]:
            tunnel = {"host": values["ssh_host"], "port": values["ssh_port"],
                      "user": values["ssh_user"] or os.environ.get("USER", "root"), "job_dir": values["job_dir"]}  # fmt: skip
            if values["ssh_identity"]:
                tunnel["identity"] = values["ssh_identity"]
            config["ssh_tunnel"] = tunnel
        elif values["job_dir"]:
            config["job_dir"] = values["job_dir"]
    return config


def setup_impl(extra: WrappedArguments, **values) -> Path:
    if values["interactive"]:
        values = ask(values)
    for key in ("name", "executor"):
        if not values[key]:
            raise UserError(f"setup: --{key} is required (or use --interactive)")
    if values["executor"] == "slurm" and not values["job_dir"]:
        raise UserError("setup: a slurm config needs --job_dir (absolute path on the cluster)")
    import yaml

    config = config_from_values(values)
    target = Path(values["config_dir"]) / f"{values['name']}.yaml"
    parse_cluster_config(config, name=values["name"], source=str(target))  # same validation as --cluster
    if target.exists() and not values["force"]:
        raise UserError(f"{target} exists; pass --force to overwrite it")
    target.parent.mkdir(parents=True, exist_ok=True)
    text = f"# written by `ns setup`; load with --cluster {values['name']}\n" + yaml.safe_dump(config, sort_keys=False)
    with tempfile.NamedTemporaryFile("w", dir=target.parent, delete=False, suffix=".tmp") as handle:
        handle.write(text)
    os.replace(handle.name, target)
    return target


SETUP = CommandSpec("setup", "Write a cluster config (non-interactive with flags, or --interactive).",
                    SETUP_OPTIONS, setup_impl)  # fmt: skip
