"""Cluster configs: YAML files validated once into frozen, typed objects.

Lookup of `--cluster NAME`: `--config_dir`, then `$SKILLS_CLI_CONFIG_DIR`, then `./cluster_configs`, then
the examples shipped with the package. `$SKILLS_CLI_CONFIG` may name one file directly.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

from skills_cli.common.errors import UserError
from skills_cli.common.typed_config import ConfigError, bounded, from_dict
from skills_cli.pipeline.jobs import Mount, Resources, parse_time_limit
from skills_cli.pipeline.shell import check_env_name

if TYPE_CHECKING:
    from skills_cli.common.registry import Registry
    from skills_cli.pipeline.executors.base import ExecutorEntry

PACKAGED_CONFIG_DIR = Path(__file__).resolve().parent.parent / "cluster_configs"
# the checkout that `scripts/server_env.sh KIND` builds `.venv-KIND` environments in (a source checkout only)
CHECKOUT_DIR = Path(__file__).resolve().parents[2]
DEFAULT_CLUSTER = "local"
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_SLURM_WORD = re.compile(r"^[\w.\-]+$")


class ContainerRuntime(str, Enum):
    """How a Slurm job starts a command's container."""

    PYXIS = "pyxis"  # srun --container-image (NVIDIA's enroot/pyxis plugin)
    APPTAINER = "apptainer"
    DOCKER = "docker"
    PODMAN = "podman"
    NONE = "none"


class DependencyType(str, Enum):
    AFTEROK = "afterok"  # downstream runs only if the upstream succeeded
    AFTERANY = "afterany"  # downstream runs once the upstream ended, however


@dataclass(frozen=True)
class SSHTunnelConfig:
    host: str
    user: str
    job_dir: str
    port: int = bounded(22, ge=1, le=65535)
    identity: str | None = None
    connect_timeout: float = bounded(15.0, gt=0)
    pre_command: str | None = None

    def __post_init__(self) -> None:
        if not self.job_dir.startswith("/"):
            raise UserError(f"ssh_tunnel.job_dir must be an absolute path on the cluster, got {self.job_dir!r}")
        if self.connect_timeout <= 0:
            raise UserError("ssh_tunnel.connect_timeout must be > 0")


@dataclass(frozen=True)
class ClusterConfig:
    """One cluster config file, validated. Paths in `mounts` and `ssh_tunnel.identity` are expanded."""

    executor: str  # a kind registered in executors.EXECUTORS (none, local, slurm, or a plugin's)
    name: str = "unnamed"
    containers: dict[str, str] = field(default_factory=dict)
    mounts: list[str] = field(default_factory=list)
    env_vars: list[str] = field(default_factory=list)
    required_env_vars: list[str] = field(default_factory=list)
    ssh_tunnel: SSHTunnelConfig | None = None
    job_dir: str | None = None
    account: str | None = None
    partition: str | None = None
    cpu_partition: str | None = None
    # Slurm: the clients (and sandboxes) of self-hosted servers run on a node of this partition, as the second
    # component of a heterogeneous job (the server keeps its own nodes); `--client_partition` overrides it
    client_partition: str | None = None
    timeouts: dict[str, str] = field(default_factory=dict)
    default_timeout: str | None = None
    container_runtime: ContainerRuntime = ContainerRuntime.NONE
    dependency_type: DependencyType = DependencyType.AFTEROK
    gpus: list[int] | None = bounded(None, ge=0)
    max_parallel_jobs: int | None = None  # local executors: jobs running at once (default: CPU count)
    sbatch_args: dict[str, str] = field(default_factory=dict)
    job_name_prefix: str = ""
    python: str | None = None
    # jobs without containers: the interpreter of each container role other than `main` (e.g. vllm: a venv
    # with vLLM), as `containers` gives each role its image; see `python_for`
    interpreters: dict[str, str] = field(default_factory=dict)
    source: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "_entry", self._registered_entry())  # looked up once: capabilities read it often
        self._check_remote_keys()
        if self.max_parallel_jobs is not None and self.max_parallel_jobs < 1:
            raise UserError(f"cluster {self.name!r}: max_parallel_jobs must be >= 1")
        self._check_values()
        if self.uses_containers and "main" not in self.containers:
            raise UserError(f"cluster {self.name!r}: containers.main (the project image) is required")

    def _registered_entry(self) -> ExecutorEntry:
        registry = _executors()
        try:
            return registry.get(self.executor)
        except UserError:
            known = ", ".join(registry.names())
            raise UserError(f"cluster {self.name!r}: unknown executor {self.executor!r}; known: {known}") from None

    def _check_remote_keys(self) -> None:
        """ssh_tunnel, job_dir and container_runtime describe where a scheduler runs jobs: remote kinds only."""
        if self.runs_remotely:
            if self.ssh_tunnel is None and self.job_dir is None:
                raise UserError(
                    f"cluster {self.name!r}: a {self.executor} config needs ssh_tunnel.job_dir (remote submission) "
                    "or job_dir (when running on the login node)"
                )
            if self.job_dir is not None and not self.job_dir.startswith("/"):
                raise UserError(f"cluster {self.name!r}: job_dir must be an absolute path, got {self.job_dir!r}")
        elif self.ssh_tunnel is not None:
            raise UserError(f"cluster {self.name!r}: ssh_tunnel is only used with executor: {_remote_kinds()}")
        if not self.runs_remotely and self.container_runtime is not ContainerRuntime.NONE:
            raise UserError(f"cluster {self.name!r}: container_runtime only applies to executor: {_remote_kinds()}")
        if not self.runs_remotely and self.client_partition is not None:
            raise UserError(f"cluster {self.name!r}: client_partition only applies to executor: {_remote_kinds()}")

    def _check_values(self) -> None:
        for key in ("account", "partition", "cpu_partition", "client_partition"):
            value = getattr(self, key)
            if value is not None and not _SLURM_WORD.match(value):
                raise UserError(f"cluster {self.name!r}: invalid {key} {value!r}")
        for partition, limit in {**self.timeouts, "default_timeout": self.default_timeout or "1"}.items():
            try:
                parse_time_limit(limit)
            except UserError as error:
                raise UserError(f"cluster {self.name!r}: timeouts[{partition}]: {error}") from None
        for option in self.sbatch_args:
            if not re.match(r"^[a-z][a-z\-_]*$", option):
                raise UserError(f"cluster {self.name!r}: invalid sbatch option name {option!r}")
        for text in self.mounts:
            Mount.parse(text)
        for entry in [*self.env_vars, *self.required_env_vars]:
            try:
                check_env_name(entry.partition("=")[0])
            except UserError as error:
                raise UserError(f"cluster {self.name!r}: env_vars: {error}") from None

    @property
    def executor_entry(self) -> ExecutorEntry:
        """The registered kind of `executor` (found when the config was built)."""
        return self._entry  # type: ignore[attr-defined]

    @property
    def jobs_see_local_paths(self) -> bool:
        """Jobs run as bare processes on this machine, so the paths they use are this machine's paths."""
        return self.executor_entry.jobs_see_local_paths

    @property
    def runs_remotely(self) -> bool:
        """Jobs run on other hosts through a scheduler: submission returns once queued, servers bind all
        interfaces, results are fetched back over SSH."""
        return self.executor_entry.runs_remotely

    @property
    def python_executable(self) -> str:
        """The interpreter for in-job programs: the config's, else this one (bare local), else `python3`."""
        if self.python:
            return self.python
        return sys.executable if self.jobs_see_local_paths else "python3"

    def python_for(self, role: str = "main") -> str:
        """The interpreter of in-job programs of a container role (`main`: our own programs).

        In containers every role's image has its own `python3`. Without containers a role other than `main`
        runs with `interpreters.<role>`, else (jobs on this machine) the `.venv-<role>` that
        `scripts/server_env.sh <role>` builds in the checkout, else the main interpreter.
        """
        if role == "main":
            return self.python_executable
        if self.uses_containers:
            return "python3"
        if role in self.interpreters:
            return self.interpreters[role]
        built = CHECKOUT_DIR / f".venv-{role}" / "bin" / "python"
        return str(built) if self.jobs_see_local_paths and built.is_file() else self.python_executable

    @property
    def remote_job_dir(self) -> str:
        """Where jobs, logs and shipped code live on the cluster."""
        return self.ssh_tunnel.job_dir if self.ssh_tunnel else (self.job_dir or "")

    @property
    def uses_containers(self) -> bool:
        return self.executor_entry.uses_containers or self.container_runtime is not ContainerRuntime.NONE

    def container_image(self, role: str) -> str:
        try:
            return self.containers[role]
        except KeyError:
            known = ", ".join(sorted(self.containers)) or "none"
            raise UserError(
                f"cluster {self.name!r} has no container for role {role!r}; defined roles: {known}"
            ) from None

    def mount_list(self) -> list[Mount]:
        return [Mount.parse(text) for text in self.mounts]

    def time_limit_for(self, partition: str | None) -> str | None:
        """Per-partition timeout, else default_timeout, else none (the partition's own limit)."""
        if partition and partition in self.timeouts:
            return self.timeouts[partition]
        return self.default_timeout

    def check_heterogeneous_jobs(self, why: str) -> None:
        """Heterogeneous jobs (components with their own nodes) are Slurm's: elsewhere `why` is an error now."""
        if not self.runs_remotely:
            raise UserError(f"{why} runs a heterogeneous job, which needs executor: {_remote_kinds()} (cluster "
                            f"{self.name!r} has executor: {self.executor})")  # fmt: skip

    def partition_for(self, resources: Resources) -> str | None:
        if resources.partition:
            return resources.partition
        if resources.gpus_per_node == 0 and self.cpu_partition:
            return self.cpu_partition
        return self.partition

    def job_env(self, environ: dict[str, str] | None = None, strict: bool = True) -> dict[str, str]:
        """Environment for jobs: `NAME=value` literals and `NAME` copied from the submitting shell.

        Every value is a secret for printing: it is remembered so that error messages hide it (secrets.py).
        `strict=False` (for masking `ns logs` output) skips required variables that are not set.
        """
        from skills_cli.pipeline import secrets  # here: this function is the one place values enter

        environ = dict(os.environ if environ is None else environ)
        missing = [name for name in self.required_env_vars if name not in environ]
        if missing and strict:
            raise UserError(
                f"cluster {self.name!r} requires environment variables that are not set: {', '.join(missing)}"
            )
        env = {}
        for entry in [*self.env_vars, *self.required_env_vars]:
            name, sep, value = entry.partition("=")
            if sep:
                env[name] = value
            elif name in environ:
                env[name] = environ[name]
        secrets.remember(env)
        return env


def _executors() -> Registry[ExecutorEntry]:
    from skills_cli.pipeline.executors.base import EXECUTORS  # here: executor modules import this one

    return EXECUTORS


def _remote_kinds() -> str:
    return " or ".join(entry.name for entry in _executors() if entry.runs_remotely)


def expand_vars(text: str, where: str, environ: dict[str, str] | None = None) -> str:
    """Expand `${VAR}` (and a leading `~`); an unset variable is an error, not an empty string."""
    environ = os.environ if environ is None else environ

    def replace(match: re.Match) -> str:
        name = match.group(1)
        if name not in environ:
            raise UserError(f"{where}: environment variable ${{{name}}} in {text!r} is not set")
        return environ[name]

    expanded = _VAR.sub(replace, text)
    return os.path.expanduser(expanded) if expanded.startswith("~") else expanded


def parse_cluster_config(data: object, name: str, source: str = "") -> ClusterConfig:
    """Validate a loaded YAML mapping into a ClusterConfig (variables expanded)."""
    where = f"cluster config {source or name!r}"
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping at the top level, got {type(data).__name__}")
    data = dict(data)
    for internal in ("name", "source"):  # set from the file itself, never from its content
        if internal in data:
            raise ConfigError(f"{where}: unknown key {internal!r} (the config's name is its file name)")
    if "mounts" in data and isinstance(data["mounts"], list):
        data["mounts"] = [expand_vars(str(m), f"{where}: mounts") for m in data["mounts"]]
    tunnel = data.get("ssh_tunnel")
    if isinstance(tunnel, dict) and isinstance(tunnel.get("identity"), str):
        tunnel = dict(tunnel)
        tunnel["identity"] = expand_vars(tunnel["identity"], f"{where}: ssh_tunnel.identity")
        data["ssh_tunnel"] = tunnel
    if isinstance(data.get("interpreters"), dict):
        data["interpreters"] = {role: expand_vars(str(path), f"{where}: interpreters.{role}")
                                for role, path in data["interpreters"].items()}  # fmt: skip
    if isinstance(data.get("job_dir"), str):
        data["job_dir"] = expand_vars(data["job_dir"], f"{where}: job_dir")
    data.setdefault("name", name)
    data["source"] = source
    return from_dict(ClusterConfig, data, where)


def load_yaml_file(path: Path) -> object:
    """Read YAML with errors that name the file and line (duplicate keys, binary files: one line each)."""
    from skills_cli.common.yaml_files import read_yaml_file

    return read_yaml_file(path, "cluster config")


def search_dirs(config_dir: str | None = None) -> list[Path]:
    dirs = []
    if config_dir:
        dirs.append(Path(config_dir))
    if os.environ.get("SKILLS_CLI_CONFIG_DIR"):
        dirs.append(Path(os.environ["SKILLS_CLI_CONFIG_DIR"]))
    dirs += [Path.cwd() / "cluster_configs", PACKAGED_CONFIG_DIR]
    return dirs


def known_clusters(config_dir: str | None = None) -> list[str]:
    names = set()
    for directory in search_dirs(config_dir):
        if directory.is_dir():
            names.update(p.stem for p in directory.glob("*.yaml") if p.is_file())  # a folder x.yaml is no config
    return sorted(names)


def find_cluster_file(name: str, config_dir: str | None = None) -> Path:
    if config_dir and not Path(config_dir).is_dir():
        raise UserError(f"--config_dir {config_dir!r} is not a directory")
    for directory in search_dirs(config_dir):
        candidate = directory / f"{name}.yaml"
        if candidate.is_file():
            return candidate
    known = ", ".join(known_clusters(config_dir)) or "none"
    where = ", ".join(str(d) for d in search_dirs(config_dir))
    raise UserError(f"unknown cluster {name!r}; known clusters: {known} (searched {where})")


def load_cluster_file(path: Path) -> ClusterConfig:
    return parse_cluster_config(load_yaml_file(path), name=path.stem, source=str(path))


def load_cluster_config(name: str | None = None, config_dir: str | None = None) -> ClusterConfig:
    """Resolve `--cluster NAME` (or $SKILLS_CLI_CONFIG, or the `local` default) to a validated config."""
    if name is None and os.environ.get("SKILLS_CLI_CONFIG"):
        path = Path(os.environ["SKILLS_CLI_CONFIG"])
    else:
        path = find_cluster_file(name or DEFAULT_CLUSTER, config_dir)
    return load_cluster_file(path)
